// Fuzz target: verified_envelope on arbitrary bytes, then read every field of
// whatever body is present. A verified buffer must never crash a reader
// (ASan/UBSan catch out-of-bounds and misaligned reads).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cove/bus/envelope.hpp"

namespace {

namespace v1 = cove::v1;
volatile size_t sink = 0;

void touch(const flatbuffers::String* s) {
  if (s == nullptr) return;
  size_t h = s->size();
  for (char c : s->string_view()) h = h * 31 + static_cast<unsigned char>(c);
  sink = sink + h;
}
void touch(const flatbuffers::Vector<uint8_t>* v) {
  if (v == nullptr) return;
  size_t h = v->size();
  for (uint8_t b : *v) h = h * 31 + b;
  sink = sink + h;
}
void touch(const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* v) {
  if (v == nullptr) return;
  for (const auto* s : *v) touch(s);
}
template <class T>
void touch_num(T x) {
  sink = sink + static_cast<size_t>(x);
}

void touch(const v1::CvmInfo* x) {
  if (x == nullptr) return;
  touch(x->id());
  touch_num(x->backend());
  touch_num(x->tee());
  touch_num(x->state());
  touch_num(x->pid());
  touch_num(x->created_at_ns());
  touch_num(x->ttl_seconds());
  touch(x->detail());
}
void touch(const v1::Manifest* m) {
  if (m == nullptr) return;
  touch(m->id());
  touch(m->name());
  touch(m->description());
  if (m->datasets() != nullptr)
    for (const auto* d : *m->datasets()) {
      touch(d->filename());
      touch(d->hash());
      touch(d->user_key());
    }
  if (const auto* a = m->algorithm()) {
    touch(a->hash());
    touch(a->user_key());
    touch_num(a->algo_type());
    touch(a->algo_args());
  }
  if (m->result_consumers() != nullptr)
    for (const auto* c : *m->result_consumers()) touch(c->user_key());
  touch_num(m->timeout_seconds());
}

void walk(const v1::Envelope* env) {
  touch_num(env->schema_version());
  touch(env->correlation_id());
  touch(env->sender());
  touch_num(env->sent_at_ns());
  switch (env->body_type()) {
    case v1::Body::NONE:
      break;
    case v1::Body::Error:
      if (const auto* x = env->body_as_Error()) {
        touch_num(cove::errc_from_wire(static_cast<uint8_t>(x->code())));
        touch(x->message());
      }
      break;
    case v1::Body::Ok:
      touch_num(env->body_as_Ok() != nullptr);
      break;
    case v1::Body::CvmCreate:
      if (const auto* x = env->body_as_CvmCreate()) {
        touch_num(x->backend());
        touch_num(x->tee());
        touch_num(x->ttl_seconds());
      }
      break;
    case v1::Body::CvmInfo:
      touch(env->body_as_CvmInfo());
      break;
    case v1::Body::CvmRef:
      if (const auto* x = env->body_as_CvmRef()) touch(x->id());
      break;
    case v1::Body::CvmListRequest:
      touch_num(env->body_as_CvmListRequest() != nullptr);
      break;
    case v1::Body::CvmList:
      if (const auto* x = env->body_as_CvmList(); x != nullptr && x->cvms() != nullptr)
        for (const auto* i : *x->cvms()) touch(i);
      break;
    case v1::Body::Manifest:
      touch(env->body_as_Manifest());
      break;
    case v1::Body::ComputationStart:
      if (const auto* x = env->body_as_ComputationStart()) {
        touch(x->cvm_id());
        touch(x->manifest());
      }
      break;
    case v1::Body::ComputationStop:
      if (const auto* x = env->body_as_ComputationStop()) {
        touch(x->cvm_id());
        touch(x->computation_id());
      }
      break;
    case v1::Body::StatusRequest:
      if (const auto* x = env->body_as_StatusRequest()) touch(x->cvm_id());
      break;
    case v1::Body::ComputationStatus:
      if (const auto* x = env->body_as_ComputationStatus()) {
        touch(x->cvm_id());
        touch(x->computation_id());
        touch_num(x->state());
        touch(x->message());
        touch(x->pending());
        touch(x->manifest_sha3());
      }
      break;
    case v1::Body::UploadBegin:
      if (const auto* x = env->body_as_UploadBegin()) {
        touch(x->computation_id());
        touch_num(x->role());
        touch(x->filename());
        touch_num(x->size());
        touch(x->sender_pk());
        touch(x->stream_header());
        touch(x->signer_key());
      }
      break;
    case v1::Body::UploadReady:
      if (const auto* x = env->body_as_UploadReady()) {
        touch(x->stream_id());
        touch_num(x->window());
        touch_num(x->chunk_size());
      }
      break;
    case v1::Body::Chunk:
      if (const auto* x = env->body_as_Chunk()) {
        touch(x->stream_id());
        touch_num(x->seq());
        touch(x->data());
        touch_num(x->last());
        touch(x->sha3_256());
        touch(x->signature());
      }
      break;
    case v1::Body::ChunkAck:
      if (const auto* x = env->body_as_ChunkAck()) {
        touch(x->stream_id());
        touch_num(x->seq());
        touch_num(x->done());
      }
      break;
    case v1::Body::ResultRequest:
      if (const auto* x = env->body_as_ResultRequest()) {
        touch(x->computation_id());
        touch(x->consumer_key());
        touch(x->signature());
      }
      break;
    case v1::Body::ResultReady:
      if (const auto* x = env->body_as_ResultReady()) {
        touch(x->stream_id());
        touch_num(x->size());
        touch_num(x->chunks());
        touch(x->wrapped_key());
        touch(x->stream_header());
        touch_num(x->window());
      }
      break;
    case v1::Body::ResultChunkRequest:
      if (const auto* x = env->body_as_ResultChunkRequest()) {
        touch(x->stream_id());
        touch_num(x->seq());
      }
      break;
    case v1::Body::AttestationRequest:
      if (const auto* x = env->body_as_AttestationRequest()) touch(x->nonce());
      break;
    case v1::Body::Evidence:
      if (const auto* x = env->body_as_Evidence()) {
        touch_num(x->kind());
        touch(x->report());
        touch(x->cert_chain());
        touch(x->kx_public_key());
        touch(x->sign_public_key());
      }
      break;
    case v1::Body::Event:
      if (const auto* x = env->body_as_Event()) {
        touch(x->kind());
        touch(x->cvm_id());
        touch(x->computation_id());
        touch(x->state());
        touch(x->message());
        touch_num(x->at_ns());
      }
      break;
    default:
      break;  // a newer peer's body: verification passes, we do not read it
  }
  (void)cove::bus::body_name(env->body_type());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Copy to a heap buffer as the bus does (natsMsg data may be unaligned).
  std::vector<uint8_t> buf(data, data + size);
  if (const auto* env = cove::bus::verified_envelope(buf)) walk(env);
  // The typed path must agree with verification and never crash either.
  (void)cove::bus::body_as<cove::v1::CvmInfo>(buf);
  (void)cove::bus::body_as<cove::v1::Error>(buf);
  return 0;
}

#include "cove/cli/client.hpp"

#include <unistd.h>

#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>

#include <fmt/format.h>

#include "cove/attest/evidence.hpp"
#include "cove/attest/snp_report.hpp"
#include "cove/attest/verify.hpp"
#include "cove/bus/envelope.hpp"
#include "cove/bus/nkeys.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/hash.hpp"
#include "cove/crypto/seal.hpp"
#include "cove/crypto/statements.hpp"
#include "cove/paths.hpp"
#include "cove/schemas/envelope_generated.h"

namespace cove::cli {

namespace fs = std::filesystem;
using bytes = std::vector<uint8_t>;

namespace {

constexpr std::string_view sender = "cli";

}  // namespace

expected<bus::connect_options> bus_options(const std::string& url, std::string nkey_seed, std::string ca,
                                           const fs::path& state_dir) {
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v != nullptr ? v : "";
  };
  if (nkey_seed.empty()) nkey_seed = env("COVE_NKEY_SEED");
  if (ca.empty()) ca = env("COVE_NATS_CA");
  bus::connect_options o;
  o.url = url;
  o.name = "cove-cli";
  if (url.starts_with("tls://")) {
    // This host's embedded coved: its CA, and its admin seed if we may read it.
    std::error_code ec;
    auto dir = state_dir / "bus";
    if (ca.empty() && fs::exists(dir / "ca.pem", ec)) ca = (dir / "ca.pem").string();
    if (nkey_seed.empty() && ::access((dir / "admin.seed").c_str(), R_OK) == 0)
      nkey_seed = (dir / "admin.seed").string();
  }
  if (!ca.empty()) {
    std::error_code ec;
    if (!fs::is_regular_file(ca, ec))
      return make_error(errc::not_found, fmt::format("CA file '{}' not found (--ca / COVE_NATS_CA)", ca));
    o.ca_file = ca;
  }
  if (!nkey_seed.empty()) {
    auto key = bus::nkeys::user_key::load_file(nkey_seed);
    if (!key) return key.error();
    o.nkey = std::make_shared<const bus::nkeys::user_key>(std::move(*key));
  }
  return o;
}

namespace {

expected<std::string> subject_for(const std::string& cvm_id, std::string_view leaf) {
  auto s = bus::cvm_subject(cvm_id, leaf);
  if (!s) return make_error(errc::invalid_request, fmt::format("'{}' is not a valid CVM id", cvm_id));
  return *s;
}

template <class T>
std::span<const uint8_t> span_of(const flatbuffers::Vector<T>* v) {
  if (v == nullptr) return {};
  return {reinterpret_cast<const uint8_t*>(v->data()), v->size()};
}

/// Keeps at most `window` asynchronous requests in flight and records the first failure.
class window_gate {
 public:
  explicit window_gate(uint32_t window) : window_(window) {}

  /// Blocks until a slot is free (or a failure happened). Returns false on failure.
  bool acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return failure_ || in_flight_ < window_; });
    if (failure_) return false;
    ++in_flight_;
    return true;
  }
  void release(std::optional<error> failure = std::nullopt) {
    {
      std::lock_guard lock(mu_);
      --in_flight_;
      if (failure && !failure_) failure_ = std::move(failure);
    }
    cv_.notify_all();
  }
  /// Waits for every request to finish; returns the first failure, if any.
  std::optional<error> drain() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ == 0; });
    return failure_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint32_t window_;
  uint32_t in_flight_ = 0;
  std::optional<error> failure_;
};

/// The computation a participant signs for: its id and manifest digest. With an
/// agreed manifest, the agent must hold exactly that one.
struct computation_ref {
  std::string id;
  sha3_digest digest{};
};

expected<computation_ref> resolve_computation(bus::connection& bus, const std::string& cvm_id,
                                              const manifest* agreed, const client_options& opt) {
  auto st = computation_status(bus, cvm_id, opt);
  if (!st) return st.error();
  if (st->computation_id.empty() || st->manifest_digest.size() != 32)
    return make_error(errc::wrong_state,
                      fmt::format("CVM '{}' has no computation; run 'cove computation start' first", cvm_id));
  computation_ref ref{st->computation_id, {}};
  std::copy(st->manifest_digest.begin(), st->manifest_digest.end(), ref.digest.begin());
  if (agreed != nullptr) {
    auto want = manifest_digest(*agreed);
    if (want != ref.digest || agreed->id != ref.id)
      return make_error(
          errc::attestation_failed,
          fmt::format("CVM '{}' holds computation '{}' (manifest digest {}), not the agreed "
                      "manifest '{}' ({}); nothing was sent",
                      cvm_id, ref.id, crypto::to_hex(ref.digest), agreed->id, crypto::to_hex(want)));
  }
  return ref;
}

}  // namespace

fs::path default_policy_path() {
  return default_state_dir() / "sim" / "policy.json";
}

expected<attest::snp_policy> load_policy(const fs::path& file) {
  std::error_code ec;
  if (!fs::exists(file, ec))
    return make_error(errc::not_found,
                      fmt::format("policy file {} not found (pass --policy FILE)", file.string()));
  return attest::load_policy_file(file);
}

expected<status> computation_status(bus::connection& bus, const std::string& cvm_id,
                                    const client_options& opt) {
  auto subject = subject_for(cvm_id, "status");
  if (!subject) return subject.error();
  flatbuffers::FlatBufferBuilder b(128);
  auto req = v1::CreateStatusRequest(b, b.CreateString(cvm_id));
  auto payload = bus::finish(b, req, {}, sender);
  auto r = bus::request_typed<v1::ComputationStatus>(bus, *subject, payload, opt.request_timeout);
  if (!r && r.error().code == errc::unavailable) {
    // No agent: the computation service knows why when the CVM crashed or stopped (it
    // answers its computation Failed with the reason, or wrong_state); otherwise the
    // agent's silence stands.
    auto known = bus::request_typed<v1::ComputationStatus>(bus, bus::subjects::computation_status, payload,
                                                           opt.request_timeout);
    if (known || known.error().code == errc::wrong_state) r = std::move(known);
  }
  if (!r) {
    auto e = r.error();
    if (e.code == errc::unavailable) e.message = fmt::format("no agent answers for CVM '{}'", cvm_id);
    return e;
  }
  status s;
  const auto* body = r->body;
  if (body->computation_id()) s.computation_id = body->computation_id()->str();
  s.state = v1::EnumNameAgentState(body->state());
  if (body->message()) s.message = body->message()->str();
  if (body->pending())
    for (const auto* p : *body->pending()) s.pending.push_back(p->str());
  if (body->manifest_sha3())
    s.manifest_digest.assign(body->manifest_sha3()->begin(), body->manifest_sha3()->end());
  return s;
}

expected<saved_evidence> fetch_evidence(bus::connection& bus, const std::string& cvm_id,
                                        std::span<const uint8_t> nonce, const client_options& opt) {
  if (nonce.size() < 32 || nonce.size() > 64)
    return make_error(errc::invalid_request, fmt::format("nonce: {} bytes, expected 32 to 64", nonce.size()));
  auto subject = subject_for(cvm_id, "attest");
  if (!subject) return subject.error();
  flatbuffers::FlatBufferBuilder b(128);
  auto req = v1::CreateAttestationRequest(b, b.CreateVector(nonce.data(), nonce.size()));
  auto r =
      bus::request_typed<v1::Evidence>(bus, *subject, bus::finish(b, req, {}, sender), opt.request_timeout);
  if (!r) return r.error();
  const v1::Evidence& ev = *r->body;
  auto fail = [](const std::string& why) { return make_error(errc::attestation_failed, why); };
  if (ev.kind() != v1::EvidenceKind::sim_snp && ev.kind() != v1::EvidenceKind::sev_snp)
    return fail(fmt::format("evidence kind '{}' is not supported by this verifier",
                            v1::EnumNameEvidenceKind(ev.kind())));
  auto kx = span_of(ev.kx_public_key());
  auto sign = span_of(ev.sign_public_key());
  if (kx.size() != 32 || sign.size() != 32) return fail("evidence: agent public keys must be 32 bytes each");
  saved_evidence out;
  out.kind = v1::EnumNameEvidenceKind(ev.kind());
  out.cvm_id = cvm_id;
  out.nonce.assign(nonce.begin(), nonce.end());
  auto report = span_of(ev.report());
  out.report.assign(report.begin(), report.end());
  auto chain = span_of(ev.cert_chain());
  out.cert_chain.assign(chain.begin(), chain.end());
  out.kx_public_key.assign(kx.begin(), kx.end());
  out.sign_public_key.assign(sign.begin(), sign.end());
  if (const auto* vt = ev.vtpm(); vt != nullptr) {
    auto copy = [](const flatbuffers::Vector<uint8_t>* v) {
      return v ? std::vector<uint8_t>(v->begin(), v->end()) : std::vector<uint8_t>{};
    };
    saved_vtpm s{copy(vt->ak_public()), copy(vt->ak_spki()), copy(vt->quote()), copy(vt->signature()), {},
                 copy(vt->event_log()), copy(vt->ima_list())};
    if (vt->pcrs() != nullptr)
      for (const auto* p : *vt->pcrs()) {
        if (p == nullptr || p->index() >= attest::tpm_pcr_count || p->value() == nullptr ||
            p->value()->size() != 32 || s.pcrs.contains(p->index()))
          return fail("vtpm.pcrs: each entry needs a distinct index 0..23 and 32 bytes");
        s.pcrs[p->index()] = copy(p->value());
      }
    out.vtpm = std::move(s);
  }
  if (const auto* d = ev.dice(); d != nullptr) {
    auto chain = span_of(d->chain());
    auto sig = span_of(d->binding_signature());
    out.dice =
        saved_dice{std::string(chain.begin(), chain.end()), std::vector<uint8_t>(sig.begin(), sig.end())};
  }
  return out;
}

expected<attested_agent> verify_saved_evidence(const saved_evidence& ev, const attest::snp_policy& policy) {
  attest::evidence_binding binding{attest::evidence_binding::mode::nonce, ev.nonce, {}};
  auto checked = attest::verify_agent_evidence(agent_evidence_of(ev), policy, binding);
  if (!checked) return checked.error();
  const auto& verified = checked->report;
  attested_agent a;
  a.report = ev.report;
  a.kx_public_key = ev.kx_public_key;
  a.sign_public_key = ev.sign_public_key;
  a.summary =
      fmt::format("SEV-SNP report v{} ({}), measurement {}, chip {}…, TCB {}", verified.version,
                  ev.kind == "sim_snp" ? "simulated TEE" : "hardware", crypto::to_hex(verified.measurement),
                  crypto::to_hex(std::span(verified.chip_id).first(8)),
                  attest::to_string(verified.reported(), verified.product));
  if (checked->vtpm) {
    std::vector<std::string> pcrs;
    for (const auto& [i, v] : checked->vtpm->pcrs) pcrs.push_back(std::to_string(i));
    a.summary +=
        fmt::format("; vTPM quote by a bound {} AK over PCRs {}", checked->ak_type, fmt::join(pcrs, ","));
  }
  if (checked->dice) {
    std::vector<std::string> names;
    for (const auto& l : *checked->dice) names.push_back(l.name);
    a.summary += fmt::format("; DICE chain {} bound to the report", fmt::join(names, " -> "));
  }
  a.verified = std::move(*checked);
  return a;
}

expected<attested_agent> attest(bus::connection& bus, const std::string& cvm_id,
                                const attest::snp_policy& policy, const client_options& opt) {
  std::array<uint8_t, 32> nonce{};
  crypto::random_bytes(nonce);
  auto ev = fetch_evidence(bus, cvm_id, nonce, opt);
  if (!ev) return ev.error();
  return verify_saved_evidence(*ev, policy);
}

expected<upload_stats> upload(bus::connection& bus, const std::string& cvm_id, file_role role,
                              const fs::path& file, const crypto::private_key& key,
                              const attest::snp_policy& policy, const manifest* agreed,
                              const client_options& opt) {
  auto start = std::chrono::steady_clock::now();
  std::error_code ec;
  if (!fs::is_regular_file(file, ec))
    return make_error(errc::not_found, fmt::format("{}: no such file", file.string()));
  uint64_t size = fs::file_size(file, ec);
  std::ifstream in(file, std::ios::binary);
  if (!in) return make_error(errc::not_found, "cannot read " + file.string());
  auto agent = attest(bus, cvm_id, policy, opt);
  if (!agent) return agent.error();
  auto comp = resolve_computation(bus, cvm_id, agreed, opt);
  if (!comp) return comp.error();

  std::string filename = role == file_role::dataset ? file.filename().string() : "algo";
  std::string_view role_name = role == file_role::algorithm ? "algorithm" : "dataset";
  auto eph = crypto::kx_keypair::generate();
  auto session = crypto::client_session_key(eph, agent->kx_public_key);
  if (!session) return session.error();
  crypto::seal_header header{};
  auto sealer = crypto::seal_stream::create(*session, header);
  if (!sealer) return sealer.error();

  auto upload_subject = subject_for(cvm_id, "upload");
  auto chunk_subject = subject_for(cvm_id, "chunk");
  if (!upload_subject || !chunk_subject) return make_error(errc::invalid_request, "invalid CVM id");
  const auto signer = key.public_key();
  flatbuffers::FlatBufferBuilder b(1024);
  auto begin =
      v1::CreateUploadBegin(b, b.CreateString(comp->id),
                            role == file_role::algorithm ? v1::FileRole::algorithm : v1::FileRole::dataset,
                            b.CreateString(role == file_role::dataset ? filename : ""), size,
                            b.CreateVector(eph.public_key.data(), eph.public_key.size()),
                            b.CreateVector(header.data(), header.size()), b.CreateVector(signer.der()));
  auto ready = bus::request_typed<v1::UploadReady>(bus, *upload_subject, bus::finish(b, begin, {}, sender),
                                                   opt.request_timeout);
  if (!ready) return ready.error();
  std::string stream_id = ready->body->stream_id() ? ready->body->stream_id()->str() : "";
  uint32_t chunk_size = ready->body->chunk_size();
  uint32_t window = std::clamp<uint32_t>(ready->body->window(), 1, 256);
  if (chunk_size == 0 || chunk_size > 768 * 1024)
    return make_error(errc::invalid_request, "agent offered a bad chunk size");
  // The client does not hash the file: it signs the manifest's hash for it, which the
  // agent names in UploadReady, and the agent checks the decrypted bytes against it. The
  // sealed stream is keyed to `eph`, which the signature covers (docs/security.md §5).
  auto declared_span = span_of(ready->body->sha3_256());
  if (declared_span.size() != 32)
    return make_error(errc::invalid_request, "the agent's UploadReady does not name the manifest's SHA3-256");
  sha3_digest declared{};
  std::copy(declared_span.begin(), declared_span.end(), declared.begin());
  if (agreed != nullptr) {
    const sha3_digest* want = role == file_role::algorithm ? &agreed->algorithm.hash : nullptr;
    for (const auto& d : agreed->datasets)
      if (role == file_role::dataset && d.filename == filename) want = &d.hash;
    if (want == nullptr || *want != declared)
      return make_error(errc::attestation_failed,
                        fmt::format("{} '{}': the agent expects SHA3-256 {}, not the agreed manifest's",
                                    role_name, filename, crypto::to_hex(declared)));
  }

  // One pass: reading, sealing and sending overlap with the agent's work, at most
  // `window` chunks unacknowledged. The last chunk carries hash and signature.
  uint64_t chunks = size == 0 ? 1 : (size + chunk_size - 1) / chunk_size;
  window_gate gate(window);
  std::atomic<bool> done{false};
  bytes plain(chunk_size), cipher;
  flatbuffers::FlatBufferBuilder cb(chunk_size + 1024);
  auto abort_with = [&](error e) -> expected<upload_stats> {
    gate.drain();
    return e;
  };
  for (uint64_t seq = 0; seq < chunks; ++seq) {
    in.read(reinterpret_cast<char*>(plain.data()), chunk_size);
    auto n = static_cast<size_t>(in.gcount());
    bool last = seq + 1 == chunks;
    if (n != std::min<uint64_t>(chunk_size, size - seq * chunk_size))
      return abort_with(
          make_error(errc::invalid_request, file.string() + " changed while it was being uploaded"));
    auto piece = std::span(plain).first(n);
    if (auto r = sealer->push(piece, last, cipher); !r) return abort_with(r.error());
    cb.Clear();
    auto data = cb.CreateVector(cipher);
    flatbuffers::Offset<flatbuffers::Vector<uint8_t>> digest_off, sig_off;
    if (last) {
      auto signature = key.sign(crypto::upload_statement(comp->id, comp->digest, role_name, filename,
                                                         declared, agent->kx_public_key, eph.public_key));
      if (!signature) return abort_with(signature.error());
      digest_off = cb.CreateVector(declared.data(), declared.size());
      sig_off = cb.CreateVector(*signature);
    }
    auto chunk = v1::CreateChunk(cb, cb.CreateString(stream_id), seq, data, last, digest_off, sig_off);
    auto payload = bus::finish(cb, chunk, {}, sender);
    if (!gate.acquire()) break;
    auto sent = bus.request_async(*chunk_subject, payload, opt.chunk_timeout,
                                  [&gate, &done](expected<bus::message> m) {
                                    if (!m) return gate.release(m.error());
                                    auto ack = bus::body_as<v1::ChunkAck>(m->data);
                                    if (!ack) return gate.release(ack.error());
                                    if ((*ack)->done()) done = true;
                                    gate.release();
                                  });
    if (!sent) {
      gate.release(sent.error());
      break;
    }
  }
  if (auto failure = gate.drain()) return *failure;
  if (!done) return make_error(errc::internal, "the agent did not confirm the upload");
  return upload_stats{size, chunks, std::chrono::steady_clock::now() - start};
}

expected<upload_stats> fetch_result(bus::connection& bus, const std::string& cvm_id,
                                    const crypto::private_key& key, const attest::snp_policy& policy,
                                    const fs::path& out, const manifest* agreed, const client_options& opt) {
  auto start = std::chrono::steady_clock::now();
  auto agent = attest(bus, cvm_id, policy, opt);
  if (!agent) return agent.error();
  auto comp = resolve_computation(bus, cvm_id, agreed, opt);
  if (!comp) return comp.error();
  auto consumer = key.public_key();
  auto signature =
      key.sign(crypto::result_statement(comp->id, comp->digest, consumer.der(), agent->kx_public_key));
  if (!signature) return signature.error();
  auto result_subject = subject_for(cvm_id, "result");
  auto chunk_subject = subject_for(cvm_id, "result.chunk");
  if (!result_subject || !chunk_subject) return make_error(errc::invalid_request, "invalid CVM id");
  flatbuffers::FlatBufferBuilder b(1024);
  auto req = v1::CreateResultRequest(b, b.CreateString(comp->id), b.CreateVector(consumer.der()),
                                     b.CreateVector(*signature));
  auto ready = bus::request_typed<v1::ResultReady>(bus, *result_subject, bus::finish(b, req, {}, sender),
                                                   opt.request_timeout);
  if (!ready) return ready.error();
  const auto& rr = *ready->body;
  auto file_key = crypto::unwrap_key(key, span_of(rr.wrapped_key()));
  if (!file_key) return file_key.error();
  auto opener = crypto::open_stream::create(*file_key, span_of(rr.stream_header()));
  if (!opener) return opener.error();
  std::string stream_id = rr.stream_id() ? rr.stream_id()->str() : "";
  uint64_t chunks = rr.chunks();
  uint64_t size = rr.size();
  uint32_t window = std::clamp<uint32_t>(rr.window(), 1, 256);
  if (chunks == 0) return make_error(errc::invalid_request, "agent announced an empty result stream");

  auto tmp = out;
  tmp += ".part";
  std::ofstream file(tmp, std::ios::binary | std::ios::trunc);
  if (!file) return make_error(errc::internal, "cannot write " + tmp.string());

  // Pull model: at most `window` chunk requests outstanding; replies are consumed in
  // order. Callbacks share `pull` so a late reply after a failure touches live memory.
  struct pull_state {
    std::mutex mu;
    std::condition_variable cv;
    std::map<uint64_t, expected<bus::message>> arrived;
  };
  auto pull = std::make_shared<pull_state>();
  auto request_chunk = [&](uint64_t seq) -> expected<void> {
    flatbuffers::FlatBufferBuilder cb(128);
    auto creq = v1::CreateResultChunkRequest(cb, cb.CreateString(stream_id), seq);
    return bus.request_async(*chunk_subject, bus::finish(cb, creq, {}, sender), opt.chunk_timeout,
                             [pull, seq](expected<bus::message> m) {
                               {
                                 std::lock_guard lock(pull->mu);
                                 pull->arrived.emplace(seq, std::move(m));
                               }
                               pull->cv.notify_all();
                             });
  };
  uint64_t requested = 0;
  std::optional<error> failure;
  for (; requested < std::min<uint64_t>(window, chunks); ++requested)
    if (auto r = request_chunk(requested); !r) return r.error();
  bytes plain;
  uint64_t written = 0;
  for (uint64_t seq = 0; seq < chunks && !failure; ++seq) {
    std::unique_lock lock(pull->mu);
    pull->cv.wait(lock, [&] { return pull->arrived.count(seq) != 0; });
    auto m = std::move(pull->arrived.at(seq));
    pull->arrived.erase(seq);
    lock.unlock();
    if (!m) {
      failure = m.error();
      break;
    }
    auto chunk = bus::body_as<v1::Chunk>(m->data);
    if (!chunk) {
      failure = chunk.error();
      break;
    }
    if ((*chunk)->seq() != seq) {
      failure = make_error(errc::invalid_request, "result chunks out of order");
      break;
    }
    bool final = false;
    if (auto r = opener->pull(span_of((*chunk)->data()), plain, final); !r) {
      failure = r.error();
      break;
    }
    if (final != (seq + 1 == chunks)) {
      failure = make_error(errc::crypto_failed, "result stream ended early or late");
      break;
    }
    file.write(reinterpret_cast<const char*>(plain.data()), static_cast<std::streamsize>(plain.size()));
    written += plain.size();
    if (requested < chunks) {
      if (auto r = request_chunk(requested++); !r) failure = r.error();
    }
  }
  file.close();
  std::error_code ec;
  if (failure) {
    fs::remove(tmp, ec);
    return *failure;
  }
  if (written != size) {
    fs::remove(tmp, ec);
    return make_error(errc::crypto_failed, fmt::format("result is {} bytes, announced {}", written, size));
  }
  fs::rename(tmp, out, ec);
  if (ec) return make_error(errc::internal, "cannot write " + out.string());
  return upload_stats{size, chunks, std::chrono::steady_clock::now() - start};
}

}  // namespace cove::cli

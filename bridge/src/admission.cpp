#include "cove/bridge/admission.hpp"

#include <fmt/format.h>

#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/schemas/bridge_generated.h"

namespace cove::bridge {

namespace {

constexpr std::string_view sender = "coved.bridge";

template <class T>
std::vector<uint8_t> copy_vec(const flatbuffers::Vector<T>* v) {
  return v ? std::vector<uint8_t>(v->begin(), v->end()) : std::vector<uint8_t>{};
}

/// The hello's vTPM section, copied field by field (the report binds it: dropping it would
/// only get the agent refused).
flatbuffers::Offset<v1::VtpmEvidence> copy_vtpm(flatbuffers::FlatBufferBuilder& b,
                                                const v1::VtpmEvidence* vt) {
  if (vt == nullptr) return 0;
  std::vector<flatbuffers::Offset<v1::PcrValue>> pcrs;
  if (vt->pcrs() != nullptr)
    for (const auto* p : *vt->pcrs())
      if (p != nullptr)
        pcrs.push_back(v1::CreatePcrValue(b, p->index(), b.CreateVector(copy_vec(p->value()))));
  return v1::CreateVtpmEvidence(
      b, b.CreateVector(copy_vec(vt->ak_public())), b.CreateVector(copy_vec(vt->ak_spki())),
      b.CreateVector(copy_vec(vt->quote())), b.CreateVector(copy_vec(vt->signature())), b.CreateVector(pcrs),
      b.CreateVector(copy_vec(vt->event_log())), b.CreateVector(copy_vec(vt->ima_list())));
}

std::vector<uint8_t> verify_request(const hello_info& info, const std::string& policy_json) {
  const auto* hello = v1::GetBridgeHello(info.hello.data());
  const auto* ev = hello->evidence();
  flatbuffers::FlatBufferBuilder b(8192);
  auto vtpm = copy_vtpm(b, ev->vtpm());
  flatbuffers::Offset<v1::DiceEvidence> dice = 0;
  if (const auto* d = ev->dice(); d != nullptr)
    dice = v1::CreateDiceEvidence(b, b.CreateVector(copy_vec(d->chain())),
                                  b.CreateVector(copy_vec(d->binding_signature())));
  auto evidence = v1::CreateEvidence(b, ev->kind(), b.CreateVector(copy_vec(ev->report())),
                                     b.CreateVector(copy_vec(ev->cert_chain())),
                                     b.CreateVector(copy_vec(ev->kx_public_key())),
                                     b.CreateVector(copy_vec(ev->sign_public_key())), vtpm, dice);
  auto req = v1::CreateVerifyRequest(b, evidence, b.CreateString(policy_json),
                                     b.CreateVector(info.exporter.data(), info.exporter.size()),
                                     v1::EvidenceBinding::bridge_session, b.CreateString(info.cvm_id));
  return bus::finish(b, req, {}, sender);
}

}  // namespace

admit_fn make_admission(const admission_config& cfg) {
  return [cfg](const hello_info& info, const std::function<void(admission)>& decide) {
    auto refuse = [decide](std::string why) {
      decide(admission{.admitted = false, .reason = std::move(why)});
    };
    // No responders (errc::unavailable): the service is not subscribed (yet); the bridge asks again.
    auto unanswered = [decide](std::string why) {
      decide(admission{.admitted = false, .reason = std::move(why), .retryable = true});
    };
    flatbuffers::FlatBufferBuilder b(128);
    auto ref = v1::CreateCvmRef(b, b.CreateString(info.cvm_id));
    auto on_info = [cfg, info, decide, refuse, unanswered](expected<bus::message> m) {
      if (!m) {
        auto why = fmt::format("no policy for CVM '{}': manager: {}", info.cvm_id, m.error().to_string());
        return m.error().code == errc::unavailable ? unanswered(why) : refuse(why);
      }
      auto cvm = bus::body_as<v1::CvmInfo>(m->data);
      if (!cvm) return refuse(fmt::format("no CVM '{}': {}", info.cvm_id, cvm.error().message));
      auto state = (*cvm)->state();
      if (state != v1::CvmState::starting && state != v1::CvmState::running)
        return refuse(fmt::format("CVM '{}' is {}", info.cvm_id, v1::EnumNameCvmState(state)));
      std::string policy = (*cvm)->policy_json() ? (*cvm)->policy_json()->str() : "";
      if (policy.empty()) return refuse(fmt::format("CVM '{}' has no attestation policy", info.cvm_id));
      auto on_verdict = [cfg, decide, refuse, unanswered](expected<bus::message> r) {
        if (!r) {
          auto why = "attestation service: " + r.error().to_string();
          return r.error().code == errc::unavailable ? unanswered(why) : refuse(why);
        }
        auto v = bus::body_as<v1::VerifyResult>(r->data);
        if (!v) return refuse("attestation service: " + v.error().to_string());
        if (!(*v)->valid())
          return refuse("attestation: " + ((*v)->reason() ? (*v)->reason()->str() : std::string("invalid")));
        auto measurement = (*v)->measurement()
                               ? crypto::to_hex(std::span<const uint8_t>((*v)->measurement()->data(),
                                                                         (*v)->measurement()->size()))
                               : std::string();
        decide(admission{
            .admitted = true,
            .reason = fmt::format("{} evidence{}{} verified; measurement {}…",
                                  (*v)->product() ? (*v)->product()->str() : "",
                                  (*v)->vtpm() ? " with vTPM quote" : "",
                                  (*v)->dice() ? " with DICE chain" : "", measurement.substr(0, 16)),
            .valid_for = cfg.valid_for});
      };
      auto req = verify_request(info, policy);
      if (auto s =
              cfg.bus->request_async(bus::subjects::attestation_verify, req, cfg.request_timeout, on_verdict);
          !s)
        refuse("attestation service: " + s.error().to_string());
    };
    if (auto s = cfg.bus->request_async(bus::subjects::manager_info, bus::finish(b, ref, {}, sender),
                                        cfg.request_timeout, on_info);
        !s)
      refuse("manager: " + s.error().to_string());
  };
}

}  // namespace cove::bridge

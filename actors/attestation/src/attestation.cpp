#include "cove/attestation/attestation.hpp"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "cove/attest/evidence.hpp"
#include "cove/attest/policy.hpp"
#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/crypto/statements.hpp"
#include "cove/schemas/envelope_generated.h"

namespace cove::attestation {

namespace {

using self_ptr = attestation_actor::stateful_pointer<attestation_state>;
using bytes = std::vector<uint8_t>;
constexpr std::string_view sender = "coved.attestation";

template <class T>
std::span<const uint8_t> span_of(const flatbuffers::Vector<T>* v) {
  if (v == nullptr) return {};
  return {reinterpret_cast<const uint8_t*>(v->data()), v->size()};
}

std::string_view policy_text(const v1::VerifyRequest& req) {
  return req.policy_json() ? req.policy_json()->string_view() : std::string_view{};
}

/// The policy of a request. Trusted roots must be inline PEMs: a request never makes the
/// service read a file.
expected<attest::snp_policy> request_policy(const v1::VerifyRequest& req) {
  auto p = attest::load_inline_policy_json(policy_text(req));
  if (!p) return make_error(errc::invalid_request, "policy_json: " + p.error().message);
  return p;
}

/// The vTPM section of received evidence; PCR entries must be distinct indexes 0..23 with
/// 32-byte values (field "vtpm.pcrs").
expected<attest::agent_vtpm_evidence> vtpm_section(const v1::VtpmEvidence& vt) {
  attest::agent_vtpm_evidence out;
  out.ak_public = span_of(vt.ak_public());
  out.ak_spki = span_of(vt.ak_spki());
  out.quote = span_of(vt.quote());
  out.signature = span_of(vt.signature());
  out.event_log = span_of(vt.event_log());
  out.ima_list = span_of(vt.ima_list());
  if (vt.pcrs() != nullptr) {
    if (vt.pcrs()->size() > attest::tpm_pcr_count)
      return make_error(errc::attestation_failed, "vtpm.pcrs: more than 24 PCR values");
    for (const auto* p : *vt.pcrs()) {
      if (p == nullptr || p->index() >= attest::tpm_pcr_count || p->value() == nullptr ||
          p->value()->size() != 32)
        return make_error(errc::attestation_failed,
                          "vtpm.pcrs: each entry needs an index 0..23 and 32 bytes");
      auto value = span_of(p->value());
      if (!out.pcrs.emplace(p->index(), std::vector<uint8_t>(value.begin(), value.end())).second)
        return make_error(errc::attestation_failed,
                          fmt::format("vtpm.pcrs: pcr[{}] appears more than once", p->index()));
    }
  }
  return out;
}

expected<const v1::VerifyRequest*> parse(std::span<const uint8_t> envelope) {
  auto req = bus::request_as<v1::VerifyRequest>(envelope);
  if (!req) return req.error();
  if ((*req)->evidence() == nullptr) return make_error(errc::invalid_request, "evidence: missing");
  return req;
}

bytes encode(const verdict& v, bool cached) {
  flatbuffers::FlatBufferBuilder b(256 + v.reason.size());
  auto reason = b.CreateString(v.reason);
  auto meas = b.CreateVector(v.measurement);
  auto product = b.CreateString(v.product);
  auto body =
      v1::CreateVerifyResult(b, v.valid, reason, meas, v.report_version, product, cached, v.vtpm, v.dice);
  return bus::finish(b, body, {}, sender);
}

void send(self_ptr self, const std::string& subject, const bytes& payload) {
  if (subject.empty()) return;
  if (auto r = self->state.cfg.bus->publish(subject, payload); !r)
    spdlog::warn("attestation: publish {}: {}", subject, r.error().to_string());
}

void send_error(self_ptr self, const std::string& subject, const error& e) {
  spdlog::info("attestation: {} -> {}", subject, e.to_string());
  send(self, subject, bus::make_error(e.code, e.message, {}, sender));
}

/// Answers everyone waiting for `key` and forgets them.
void answer_waiting(self_ptr self, const std::string& key, const bytes& payload) {
  auto it = self->state.waiting.find(key);
  if (it == self->state.waiting.end()) return;
  for (const auto& reply : it->second) send(self, reply, payload);
  self->state.waiting.erase(it);
}

void on_verify(self_ptr self, const bus::bus_msg& m) {
  auto& st = self->state;
  if (auto c = check_request(m.data); !c) return send_error(self, m.reply, c.error());
  auto digest = cache_key(m.data);
  if (!digest) return send_error(self, m.reply, make_error(errc::invalid_request, "malformed VerifyRequest"));
  if (auto hit = st.cache->get(*digest)) return send(self, m.reply, encode(*hit, true));
  std::string key(digest->begin(), digest->end());
  if (auto it = st.waiting.find(key); it != st.waiting.end()) {
    it->second.push_back(m.reply);  // the same evidence is being verified right now
    return;
  }
  if (st.waiting.size() >= st.cfg.max_in_flight)
    return send_error(self, m.reply,
                      make_error(errc::unavailable, "attestation: too many verifications in flight"));
  st.waiting[key].push_back(m.reply);
  auto worker = st.workers[st.next_worker++ % st.workers.size()];
  self->request(worker, caf::infinite, atom::verify::value, m.data)
      .then(
          [self, key, d = *digest](bool valid, std::string& reason, bytes& measurement, uint32_t version,
                                   std::string& product, bool vtpm, bool dice) {
            verdict v{valid, std::move(reason), std::move(measurement), version, std::move(product), vtpm,
                      dice};
            auto payload = encode(v, false);
            self->state.cache->put(d, std::move(v));
            answer_waiting(self, key, payload);
          },
          [self, key](caf::error& err) {
            auto e =
                make_error(errc::internal, "attestation: verifier failed: " + self->system().render(err));
            spdlog::warn("{}", e.message);
            answer_waiting(self, key, bus::make_error(e.code, e.message, {}, sender));
          });
}

}  // namespace

expected<void> check_request(std::span<const uint8_t> envelope) {
  auto req = parse(envelope);
  if (!req) return req.error();
  if (auto p = request_policy(**req); !p) return p.error();
  return ok();
}

expected<verdict> verify_request(std::span<const uint8_t> envelope) {
  auto req = parse(envelope);
  if (!req) return req.error();
  auto policy = request_policy(**req);
  if (!policy) return policy.error();
  const v1::Evidence& ev = *(*req)->evidence();
  verdict v;
  auto reject = [&](std::string why) {
    v.valid = false;
    v.reason = std::move(why);
    return v;
  };
  // The same checks and messages as `cove attest` (cli/src/client.cpp).
  if (ev.kind() != v1::EvidenceKind::sim_snp && ev.kind() != v1::EvidenceKind::sev_snp)
    return reject(fmt::format("evidence kind '{}' is not supported by this verifier",
                              v1::EnumNameEvidenceKind(ev.kind())));
  auto kx = span_of(ev.kx_public_key());
  auto sign = span_of(ev.sign_public_key());
  if (kx.size() != 32 || sign.size() != 32)
    return reject("evidence: agent public keys must be 32 bytes each");
  auto nonce = span_of((*req)->nonce());
  attest::evidence_binding binding;
  if ((*req)->binding() == v1::EvidenceBinding::bridge_session) {
    // The bridge always binds: a missing exporter or CVM id is a malformed request.
    auto cvm_id = (*req)->cvm_id() ? (*req)->cvm_id()->string_view() : std::string_view{};
    if (nonce.size() != 32 || cvm_id.empty())
      return reject("bridge_session binding: a 32-byte TLS exporter and the CVM id are required");
    binding = {attest::evidence_binding::mode::bridge_session, nonce, cvm_id};
  } else if (!nonce.empty()) {
    binding = {attest::evidence_binding::mode::nonce, nonce, {}};
  }
  auto chain = span_of(ev.cert_chain());
  attest::agent_evidence agent{span_of(ev.report()),
                               std::string_view(reinterpret_cast<const char*>(chain.data()), chain.size()),
                               kx,
                               sign,
                               std::nullopt,
                               std::nullopt};
  if (ev.vtpm() != nullptr) {
    auto section = vtpm_section(*ev.vtpm());
    if (!section) return reject(section.error().message);
    agent.vtpm = std::move(*section);
  }
  if (const auto* d = ev.dice(); d != nullptr) {
    auto chain = span_of(d->chain());
    agent.dice = attest::agent_dice_evidence{
        std::string_view(reinterpret_cast<const char*>(chain.data()), chain.size()),
        span_of(d->binding_signature())};
  }
  auto verified = attest::verify_agent_evidence(agent, *policy, binding);
  if (!verified) return reject(verified.error().message);
  v.valid = true;
  v.measurement.assign(verified->report.measurement.begin(), verified->report.measurement.end());
  v.report_version = verified->report.version;
  v.product = std::string(attest::to_string(verified->report.product));
  v.vtpm = verified->vtpm.has_value();
  v.dice = verified->dice.has_value();
  return v;
}

std::optional<crypto::sha3_digest> cache_key(std::span<const uint8_t> envelope) {
  auto req = parse(envelope);
  if (!req) return std::nullopt;
  const v1::Evidence& ev = *(*req)->evidence();
  crypto::sha3_256 h;
  auto lp = [&h](std::span<const uint8_t> part) {
    std::array<uint8_t, 8> len{};
    uint64_t n = part.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    h.update(len);
    h.update(part);
  };
  auto kind = static_cast<uint8_t>(ev.kind());
  lp(std::span<const uint8_t>(&kind, 1));
  lp(span_of(ev.report()));
  lp(span_of(ev.cert_chain()));
  lp(span_of(ev.kx_public_key()));
  lp(span_of(ev.sign_public_key()));
  lp(crypto::sha3_256_of(policy_text(**req)));
  lp(span_of((*req)->nonce()));
  auto binding = static_cast<uint8_t>((*req)->binding());
  lp(std::span<const uint8_t>(&binding, 1));
  auto cvm_id = (*req)->cvm_id() ? (*req)->cvm_id()->string_view() : std::string_view{};
  lp(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(cvm_id.data()), cvm_id.size()));
  if (const auto* vt = ev.vtpm(); vt != nullptr) {
    constexpr std::string_view tag = "vtpm";
    lp(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(tag.data()), tag.size()));
    lp(span_of(vt->ak_public()));
    lp(span_of(vt->ak_spki()));
    lp(span_of(vt->quote()));
    lp(span_of(vt->signature()));
    lp(span_of(vt->event_log()));
    lp(span_of(vt->ima_list()));  // before the PCR entries, whose number varies
    if (vt->pcrs() != nullptr)
      for (const auto* p : *vt->pcrs()) {
        if (p == nullptr) continue;
        std::array<uint8_t, 4> idx{};
        for (int i = 0; i < 4; ++i) idx[i] = static_cast<uint8_t>(p->index() >> (8 * i));
        lp(idx);
        lp(span_of(p->value()));
      }
  }
  if (const auto* d = ev.dice(); d != nullptr) {
    constexpr std::string_view tag = "dice";
    lp(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(tag.data()), tag.size()));
    lp(span_of(d->chain()));
    lp(span_of(d->binding_signature()));
  }
  return h.finish();
}

std::optional<verdict> verdict_cache::get(const crypto::sha3_digest& key, clock::time_point now) {
  auto it = index_.find(std::string(key.begin(), key.end()));
  if (it == index_.end()) return std::nullopt;
  if (now - it->second->stored >= ttl_) {
    lru_.erase(it->second);
    index_.erase(it);
    return std::nullopt;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->value;
}

void verdict_cache::put(const crypto::sha3_digest& key, verdict v, clock::time_point now) {
  if (capacity_ == 0) return;
  std::string k(key.begin(), key.end());
  if (auto it = index_.find(k); it != index_.end()) {
    lru_.erase(it->second);
    index_.erase(it);
  }
  while (index_.size() >= capacity_) {
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  lru_.push_front(entry{k, std::move(v), now});
  index_[k] = lru_.begin();
}

attestation_verifier_actor::behavior_type verifier(attestation_verifier_actor::pointer, std::size_t index) {
  spdlog::debug("attestation: verifier {} started", index);
  return {
      [](atom::verify,
         const bytes& request) -> caf::result<bool, std::string, bytes, uint32_t, std::string, bool, bool> {
        auto v = verify_request(request);
        if (!v) return caf::make_error(caf::sec::invalid_argument, v.error().to_string());
        return {v->valid,
                std::move(v->reason),
                std::move(v->measurement),
                v->report_version,
                std::move(v->product),
                v->vtpm,
                v->dice};
      },
  };
}

attestation_actor::behavior_type attestation(attestation_actor::stateful_pointer<attestation_state> self,
                                             attestation_config cfg) {
  if (!cfg.bus) {
    spdlog::error("attestation: no bus connection");
    self->quit(caf::sec::invalid_argument);
    return attestation_actor::behavior_type::make_empty_behavior();
  }
  if (cfg.workers == 0) cfg.workers = 1;
  self->state.cfg = std::move(cfg);
  self->state.cache =
      std::make_unique<verdict_cache>(self->state.cfg.cache_capacity, self->state.cfg.cache_ttl);
  // Linked: the workers end with the service.
  for (std::size_t i = 0; i < self->state.cfg.workers; ++i)
    self->state.workers.push_back(self->template spawn<caf::detached + caf::linked>(verifier, i));
  return {
      [self](bus::bus_msg& m) {
        if (m.subject == bus::subjects::attestation_verify) return on_verify(self, m);
        send_error(self, m.reply, make_error(errc::invalid_request, "unknown subject"));
      },
  };
}

}  // namespace cove::attestation

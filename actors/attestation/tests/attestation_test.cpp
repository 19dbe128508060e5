// The attestation service's pure parts: request checks, verification, cache key, LRU/TTL cache.
#include "cove/attestation/attestation.hpp"

#include <doctest/doctest.h>

#include "cove/attest/policy.hpp"
#include "cove/attest/sim.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/bus/envelope.hpp"
#include "cove/crypto/statements.hpp"
#include "cove/schemas/envelope_generated.h"

using namespace cove;
using namespace cove::attestation;
using bytes = std::vector<uint8_t>;

namespace {

struct sim_fixture {
  attest::sim_root root;
  std::array<uint8_t, 48> measurement{};
  bytes kx = bytes(32, 1), sign = bytes(32, 2), nonce = bytes(32, 3);
  bytes report;
  std::string chain;
};

const sim_fixture& sim() {
  static const sim_fixture f = [] {
    sim_fixture s;
    auto root = attest::generate_sim_root();
    REQUIRE(root);
    s.root = *root;
    auto chip = attest::issue_sim_vcek(s.root);
    REQUIRE(chip);
    s.measurement.fill(0x42);
    auto report =
        attest::make_sim_report(*chip, crypto::evidence_report_data(s.kx, s.sign, s.nonce), s.measurement);
    REQUIRE(report);
    s.report = *report;
    s.chain = chip->vcek_pem + s.root.bundle_pem();
    return s;
  }();
  return f;
}

bytes request(const std::string& policy, const bytes& nonce, bool with_evidence = true) {
  const auto& s = sim();
  flatbuffers::FlatBufferBuilder b(8192);
  flatbuffers::Offset<v1::Evidence> ev;
  if (with_evidence) {
    bytes chain(s.chain.begin(), s.chain.end());
    ev = v1::CreateEvidenceDirect(b, v1::EvidenceKind::sim_snp, &s.report, &chain, &s.kx, &s.sign);
  }
  auto req = v1::CreateVerifyRequestDirect(b, ev, policy.c_str(), nonce.empty() ? nullptr : &nonce);
  return bus::finish(b, req, {}, "test");
}

std::string good_policy() {
  return attest::sim_policy_json(sim().root, sim().measurement);
}

}  // namespace

TEST_CASE("verify_request: valid, wrong nonce, no nonce") {
  auto v = verify_request(request(good_policy(), sim().nonce));
  REQUIRE(v);
  CHECK_MESSAGE(v->valid, v->reason);
  CHECK(v->reason.empty());
  CHECK(v->measurement == bytes(48, 0x42));
  CHECK(v->report_version == 3);
  CHECK_FALSE(v->product.empty());

  auto wrong = verify_request(request(good_policy(), bytes(32, 9)));
  REQUIRE(wrong);
  CHECK_FALSE(wrong->valid);
  CHECK(wrong->reason.find("report_data") != std::string::npos);
  CHECK(wrong->measurement.empty());

  auto none = verify_request(request(good_policy(), {}));
  REQUIRE(none);
  CHECK(none->valid);
}

TEST_CASE("check_request: malformed requests are invalid_request") {
  CHECK(check_request(request(good_policy(), sim().nonce)));
  auto no_ev = check_request(request(good_policy(), sim().nonce, false));
  REQUIRE_FALSE(no_ev);
  CHECK(no_ev.error().code == errc::invalid_request);
  CHECK(no_ev.error().message.find("evidence") != std::string::npos);
  auto no_policy = check_request(request("", sim().nonce));
  REQUIRE_FALSE(no_policy);
  CHECK(no_policy.error().code == errc::invalid_request);
  auto bad_json = check_request(request("{not json", sim().nonce));
  REQUIRE_FALSE(bad_json);
  CHECK(bad_json.error().message.find("policy_json") != std::string::npos);
  // A request never makes the service read a file.
  auto file_root = check_request(request(R"({"trusted_roots": ["/etc/passwd"]})", sim().nonce));
  REQUIRE_FALSE(file_root);
  CHECK(file_root.error().message.find("inline PEM") != std::string::npos);
  bytes garbage{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  CHECK_FALSE(check_request(garbage));
  CHECK_FALSE(cache_key(garbage));
}

TEST_CASE("cache_key: covers evidence, policy and nonce") {
  auto a = cache_key(request(good_policy(), sim().nonce));
  REQUIRE(a);
  CHECK(*a == *cache_key(request(good_policy(), sim().nonce)));
  CHECK(*a != *cache_key(request(good_policy(), bytes(32, 4))));
  CHECK(*a != *cache_key(request(good_policy(), {})));
  CHECK(*a != *cache_key(request(good_policy() + " ", sim().nonce)));
}

TEST_CASE("verdict_cache: LRU bound and TTL") {
  using namespace std::chrono_literals;
  verdict_cache c(2, 10min);
  auto t0 = verdict_cache::clock::time_point{} + 1h;
  crypto::sha3_digest k1{}, k2{}, k3{};
  k1[0] = 1;
  k2[0] = 2;
  k3[0] = 3;
  c.put(k1, verdict{true, "", {}, 3, "Sim"}, t0);
  c.put(k2, verdict{false, "measurement: x", {}, 0, ""}, t0);
  REQUIRE(c.get(k1, t0));  // k1 is now the most recently used
  c.put(k3, verdict{}, t0);
  CHECK(c.size() == 2);
  CHECK_FALSE(c.get(k2, t0));  // evicted
  CHECK(c.get(k1, t0)->product == "Sim");
  CHECK(c.get(k3, t0 + 9min));
  CHECK_FALSE(c.get(k3, t0 + 10min));  // expired and dropped
  CHECK(c.size() == 1);
}

namespace {

/// A request whose evidence carries a vTPM section (contents arbitrary: checked by attest).
bytes vtpm_request(const std::string& policy, const std::vector<std::pair<uint32_t, bytes>>& pcrs,
                   const bytes& quote = bytes(10, 0xAB), const bytes& ima_list = {}) {
  const auto& s = sim();
  flatbuffers::FlatBufferBuilder b(8192);
  std::vector<flatbuffers::Offset<v1::PcrValue>> values;
  values.reserve(pcrs.size());
  for (const auto& [i, v] : pcrs) values.push_back(v1::CreatePcrValueDirect(b, i, &v));
  bytes ak(20, 0x11), sig(8, 0x22);
  auto vt = v1::CreateVtpmEvidenceDirect(b, &ak, nullptr, &quote, &sig, &values, nullptr,
                                         ima_list.empty() ? nullptr : &ima_list);
  bytes chain(s.chain.begin(), s.chain.end());
  auto ev = v1::CreateEvidenceDirect(b, v1::EvidenceKind::sim_snp, &s.report, &chain, &s.kx, &s.sign, vt);
  auto req = v1::CreateVerifyRequestDirect(b, ev, policy.c_str(), &s.nonce);
  return bus::finish(b, req, {}, "test");
}

std::string policy_requiring_vtpm() {
  auto p = attest::load_policy_json(good_policy());
  REQUIRE(p);
  p->vtpm.required = true;
  return attest::policy_to_json(*p, -1);
}

}  // namespace

TEST_CASE("verify_request: the policy's vtpm section and malformed vTPM sections") {
  auto missing = verify_request(request(policy_requiring_vtpm(), sim().nonce));
  REQUIRE(missing);
  CHECK_FALSE(missing->valid);
  CHECK_FALSE(missing->vtpm);
  CHECK(missing->reason.find("vtpm: the evidence has no vTPM section") != std::string::npos);

  auto dup = verify_request(vtpm_request(good_policy(), {{7, bytes(32, 0)}, {7, bytes(32, 1)}}));
  REQUIRE(dup);
  CHECK_FALSE(dup->valid);
  CHECK(dup->reason == "vtpm.pcrs: pcr[7] appears more than once");
  auto big = verify_request(vtpm_request(good_policy(), {{24, bytes(32, 0)}}));
  REQUIRE(big);
  CHECK(big->reason.find("vtpm.pcrs: each entry needs an index 0..23 and 32 bytes") != std::string::npos);
  auto garbage = verify_request(vtpm_request(good_policy(), {{7, bytes(32, 0)}}));
  REQUIRE(garbage);
  CHECK_FALSE(garbage->valid);
  CHECK(garbage->reason.find("vtpm.ak_public: ") == 0);
}

TEST_CASE("cache_key: covers the vTPM section") {
  auto a = cache_key(vtpm_request(good_policy(), {{7, bytes(32, 0)}}));
  auto b = cache_key(vtpm_request(good_policy(), {{7, bytes(32, 1)}}));
  auto c = cache_key(vtpm_request(good_policy(), {{7, bytes(32, 0)}}, bytes(10, 0xAC)));
  auto none = cache_key(request(good_policy(), sim().nonce));
  REQUIRE((a && b && c && none));
  CHECK(*a != *b);
  CHECK(*a != *c);
  CHECK(*a != *none);
  CHECK(*a == *cache_key(vtpm_request(good_policy(), {{7, bytes(32, 0)}})));
  // The IMA list too: a verdict on one list must not answer for another.
  auto ima1 = cache_key(vtpm_request(good_policy(), {{7, bytes(32, 0)}}, bytes(10, 0xAB), bytes(40, 1)));
  auto ima2 = cache_key(vtpm_request(good_policy(), {{7, bytes(32, 0)}}, bytes(10, 0xAB), bytes(40, 2)));
  REQUIRE((ima1 && ima2));
  CHECK(*ima1 != *a);
  CHECK(*ima1 != *ima2);
}

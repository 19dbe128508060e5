// The attestation service (cove.v1.attestation.verify) on real evidence from a real
// agent: verdicts, the verdict cache, rejections naming the failing field, and
// malformed requests.
#include <nlohmann/json.hpp>

#include "cove/crypto/encoding.hpp"
#include "fixture.hpp"

using namespace cove;
using namespace cove::itest;
using bytes = std::vector<uint8_t>;

namespace {

/// Asks the agent of `cvm` for evidence bound to `nonce`; returns the Evidence envelope.
bus::reply<v1::Evidence> fetch_evidence(cluster& c, const std::string& cvm, const bytes& nonce) {
  flatbuffers::FlatBufferBuilder b(128);
  auto req = v1::CreateAttestationRequest(b, b.CreateVector(nonce));
  auto subject = bus::cvm_subject(cvm, "attest");
  REQUIRE(subject);
  return must(bus::request_typed<v1::Evidence>(c.bus(), *subject, bus::finish(b, req, {}, "itest"), 20s),
              "evidence");
}

/// A VerifyRequest carrying a copy of `ev`.
bytes verify_request(const v1::Evidence& ev, const std::string& policy_json, const bytes& nonce) {
  auto vec = [](const flatbuffers::Vector<uint8_t>* v) { return v ? bytes(v->begin(), v->end()) : bytes{}; };
  flatbuffers::FlatBufferBuilder b(16384);
  auto report = vec(ev.report()), chain = vec(ev.cert_chain()), kx = vec(ev.kx_public_key()),
       sign = vec(ev.sign_public_key());
  auto copy = v1::CreateEvidenceDirect(b, ev.kind(), &report, &chain, &kx, &sign);
  auto req = v1::CreateVerifyRequestDirect(b, copy, policy_json.c_str(), nonce.empty() ? nullptr : &nonce);
  return bus::finish(b, req, {}, "itest");
}

bus::reply<v1::VerifyResult> verify(cluster& c, const bytes& request) {
  return must(bus::request_typed<v1::VerifyResult>(c.bus(), bus::subjects::attestation_verify, request, 20s),
              "verify");
}

std::string reason_of(const bus::reply<v1::VerifyResult>& r) {
  return r.body->reason() ? r.body->reason()->str() : "";
}

}  // namespace

TEST_CASE("the attestation service verifies agent evidence, caches verdicts and names failures") {
  cluster c({"--services", "manager,computation,attestation"});
  auto cvm = c.create_cvm();
  auto policy_json = read_file(c.state_dir() / "sim" / "policy.json");
  REQUIRE_FALSE(policy_json.empty());

  // Malformed payloads get Error invalid_request, and the service keeps serving. (The
  // first request also waits for the service's subscription: the fixture only waits
  // for the manager.)
  bytes garbage{'n', 'o', 't', ' ', 'a', 'n', ' ', 'e', 'n', 'v', 'e', 'l', 'o', 'p', 'e'};
  expected<bus::reply<v1::VerifyResult>> bad = make_error(errc::unavailable, "");
  test::wait_until(
      [&] {
        bad = bus::request_typed<v1::VerifyResult>(c.bus(), bus::subjects::attestation_verify, garbage, 5s);
        return bad || bad.error().code != errc::unavailable;
      },
      test::clock::now() + 20s);
  REQUIRE_FALSE(bad);
  CHECK_MESSAGE(bad.error().code == errc::invalid_request, bad.error().to_string());

  bytes nonce(32);
  crypto::random_bytes(nonce);
  auto ev = fetch_evidence(c, cvm, nonce);

  {  // valid, then cached
    auto request = verify_request(*ev.body, policy_json, nonce);
    auto first = verify(c, request);
    CHECK_MESSAGE(first.body->valid(), reason_of(first));
    CHECK(reason_of(first).empty());
    CHECK_FALSE(first.body->cached());
    REQUIRE(first.body->measurement() != nullptr);
    CHECK(first.body->measurement()->size() == 48);
    auto want = nlohmann::json::parse(policy_json).at("measurements").at(0).get<std::string>();
    CHECK(crypto::to_hex(std::span(first.body->measurement()->data(), 48)) == want);
    CHECK(first.body->report_version() >= 2);
    REQUIRE(first.body->product() != nullptr);
    CHECK_FALSE(first.body->product()->str().empty());

    auto second = verify(c, request);
    CHECK(second.body->valid());
    CHECK(second.body->cached());
    CHECK(second.body->report_version() == first.body->report_version());
  }

  {  // another nonce is rejected on report_data
    bytes other(32);
    crypto::random_bytes(other);
    auto r = verify(c, verify_request(*ev.body, policy_json, other));
    CHECK_FALSE(r.body->valid());
    CHECK_FALSE(r.body->cached());
    CHECK_MESSAGE(reason_of(r).find("report_data") != std::string::npos, reason_of(r));
  }

  {  // a policy of another measurement is rejected on measurement
    auto j = nlohmann::json::parse(policy_json);
    j["measurements"] = {std::string(96, 'a')};
    auto r = verify(c, verify_request(*ev.body, j.dump(), nonce));
    CHECK_FALSE(r.body->valid());
    CHECK_MESSAGE(reason_of(r).find("measurement") != std::string::npos, reason_of(r));
  }

  {  // malformed requests are invalid_request; the service keeps serving
    auto no_policy = bus::request_typed<v1::VerifyResult>(c.bus(), bus::subjects::attestation_verify,
                                                          verify_request(*ev.body, "", nonce), 20s);
    REQUIRE_FALSE(no_policy);
    CHECK(no_policy.error().code == errc::invalid_request);
    flatbuffers::FlatBufferBuilder b(64);
    auto no_evidence = bus::request_typed<v1::VerifyResult>(
        c.bus(), bus::subjects::attestation_verify,
        bus::finish(b, v1::CreateVerifyRequestDirect(b, 0, policy_json.c_str()), {}, "itest"), 20s);
    REQUIRE_FALSE(no_evidence);
    CHECK(no_evidence.error().code == errc::invalid_request);
    CHECK(verify(c, verify_request(*ev.body, policy_json, nonce)).body->valid());
  }
}

#include "cove/attest/policy.hpp"

#include <doctest/doctest.h>

#include "test_util.hpp"

using namespace cove::attest;
using cove::errc;
namespace t = cove::attest::test;

namespace {

const char* milan_measurement =
    "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01";

snp_report verified(const std::string& name, const std::string& bundle) {
  auto r = verify_snp_evidence(t::read_bytes(name + "-report.bin"), t::read_bytes(name + "-vcek.der"),
                               t::read_text(bundle), t::real_amd_options());
  REQUIRE(r);
  return *r;
}

std::vector<uint8_t> milan_report_data() {
  std::vector<uint8_t> d{1, 2, 3, 4, 5};
  return d;
}

snp_policy permissive() {
  snp_policy p;
  p.allow_debug = true;
  return p;
}

std::string fail_msg(const snp_report& r, const snp_policy& p, std::span<const uint8_t> rd) {
  auto res = check_policy(r, p, rd);
  if (res) return "<passed>";
  CHECK(res.error().code == errc::attestation_failed);
  return res.error().message;
}

}  // namespace

TEST_CASE("load_policy_json: full example") {
  const std::string json = R"({
    "measurements": [")" + std::string(milan_measurement) +
                           R"("],
    "host_data": "0000000000000000000000000000000000000000000000000000000000000001",
    "allow_debug": true, "allow_smt": false, "allow_migration_agent": true,
    "minimum_tcb": {"bl": 2, "tee": 0, "snp": 5, "microcode": 68, "fmc": 1},
    "chip_ids": ["3b42092f69c656d3"],
    "product": "Turin", "minimum_report_version": 3, "minimum_guest_svn": 4, "vmpl": 2,
    "trusted_roots": ["ask_ark_milan.pem"]
  })";
  auto p = load_policy_json(json, std::string(COVE_FIXTURES_DIR) + "/snp");
  if (!p) MESSAGE(p.error().message);
  REQUIRE(p);
  REQUIRE(p->measurements.size() == 1);
  CHECK(to_hex(p->measurements[0]) == milan_measurement);
  REQUIRE(p->host_data);
  CHECK(p->host_data->back() == 1);
  CHECK(p->allow_debug);
  CHECK_FALSE(p->allow_smt);
  CHECK(p->allow_migration_agent);
  CHECK(p->minimum_tcb.microcode == 68);
  CHECK(p->minimum_tcb.fmc == 1);
  REQUIRE(p->chip_ids.size() == 1);
  CHECK(p->chip_ids[0].size() == 64);  // 8-byte Turin id zero-padded
  CHECK(p->product == snp_product::turin);
  CHECK(p->minimum_report_version == 3);
  CHECK(p->minimum_guest_svn == 4);
  CHECK(p->vmpl == 2u);
  REQUIRE(p->trusted_roots.size() == 1);
  CHECK(p->trusted_roots[0] == t::read_text("ask_ark_milan.pem"));
}

TEST_CASE("load_policy_json: defaults and errors") {
  auto d = load_policy_json("{}");
  REQUIRE(d);
  CHECK_FALSE(d->allow_debug);
  CHECK(d->allow_smt);
  CHECK_FALSE(d->allow_migration_agent);
  CHECK(d->measurements.empty());
  CHECK_FALSE(d->product);
  CHECK(d->trusted_roots.empty());

  struct c {
    const char* json;
    const char* msg;
  };
  for (const auto& [json, msg] : {
           c{"{\"measurement\": []}", "policy: unknown key 'measurement'"},
           c{"{\"measurements\": [\"abcd\"]}", "policy: measurements[] must be 48 bytes, got 2"},
           c{"{\"measurements\": \"ab\"}", "policy: measurements must be an array of hex strings"},
           c{"{\"host_data\": \"zz\"}", "policy: host_data is not valid hex"},
           c{"{\"allow_debug\": 1}", "policy: allow_debug must be true or false"},
           c{"{\"minimum_tcb\": {\"bl\": 256}}", "policy: minimum_tcb.bl must be <= 255"},
           c{"{\"minimum_tcb\": {\"ucode\": 1}}", "policy: unknown key minimum_tcb.ucode"},
           c{"{\"product\": \"Rome\"}",
             "policy: product must be one of Milan, Genoa, Turin, any; got 'Rome'"},
           c{"{\"vmpl\": 4}", "policy: vmpl must be <= 3"},
           c{"{\"vmpl\": -1}", "policy: vmpl must be a non-negative integer"},
           c{"{\"trusted_roots\": [\"/nonexistent/ark.pem\"]}",
             "policy: trusted_roots: cannot read /nonexistent/ark.pem"},
           c{"{\"trusted_roots\": [\"-----BEGIN CERTIFICATE-----\\nAA==\\n-----END CERTIFICATE-----\\n\"]}",
             nullptr},
           c{"[1]", "policy: top level must be an object"},
           c{"{", "policy: not valid JSON"},
       }) {
    CAPTURE(json);
    auto p = load_policy_json(json);
    REQUIRE_FALSE(p);
    CHECK(p.error().code == errc::invalid_request);
    if (msg != nullptr) CHECK(p.error().message == msg);
  }
}

TEST_CASE("load_policy_file resolves trusted_roots against the file's directory") {
  auto p = load_policy_file(std::string(COVE_SOURCE_DIR) + "/attest/fuzz/corpus/policy_json/full.json");
  REQUIRE_FALSE(p);  // names a root file that is not next to it
  CHECK(p.error().message.find("trusted_roots: cannot read") != std::string::npos);
  auto missing = load_policy_file("/nonexistent/policy.json");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == errc::not_found);
}

TEST_CASE("check_policy: each field passes and fails") {
  const snp_report milan = verified("milan", "ask_ark_milan.pem");  // v2, debug+SMT, Milan
  const auto rd = milan_report_data();

  CHECK(fail_msg(milan, permissive(), rd) == "<passed>");
  CHECK(fail_msg(milan, permissive(), {}) == "<passed>");

  SUBCASE("report_data") {
    std::vector<uint8_t> other{1, 2, 3, 4, 6};
    auto m = fail_msg(milan, permissive(), other);
    CHECK(m.rfind("report_data: got 0102030405000000", 0) == 0);
    CHECK(m.find(", expected 0102030406") != std::string::npos);
    CHECK_FALSE(check_policy(milan, permissive(), std::vector<uint8_t>(65, 0)));
  }
  SUBCASE("measurements") {
    auto p = permissive();
    p.measurements = {*from_hex(std::string(96, 'a'))};
    CHECK(fail_msg(milan, p, rd) == "measurement: got " + std::string(milan_measurement) +
                                        ", expected one of [" + std::string(96, 'a') + "]");
    p.measurements.push_back(*from_hex(milan_measurement));
    CHECK(fail_msg(milan, p, rd) == "<passed>");
  }
  SUBCASE("host_data") {
    auto p = permissive();
    p.host_data = std::vector<uint8_t>(32, 0);
    CHECK(fail_msg(milan, p, rd) == "<passed>");
    p.host_data->back() = 1;
    CHECK(fail_msg(milan, p, rd).rfind("host_data: got 0000", 0) == 0);
  }
  SUBCASE("allow_debug") {
    snp_policy p;  // default forbids debug; milan-report.bin allows it
    CHECK(fail_msg(milan, p, rd) ==
          "allow_debug: guest policy 0xb0000 allows debugging (bit 19), expected not allowed");
  }
  SUBCASE("allow_smt") {
    auto p = permissive();
    p.allow_smt = false;
    CHECK(fail_msg(milan, p, rd) ==
          "allow_smt: guest policy 0xb0000 allows SMT (bit 16), expected not allowed");
  }
  SUBCASE("allow_migration_agent") {
    auto r = milan;
    r.policy |= snp_policy_migrate_ma;
    auto p = permissive();
    CHECK(fail_msg(r, p, rd) ==
          "allow_migration_agent: guest policy 0xf0000 allows a migration agent (bit 18), expected not "
          "allowed");
    p.allow_migration_agent = true;
    CHECK(fail_msg(r, p, rd) == "<passed>");
  }
  SUBCASE("minimum_tcb") {
    auto p = permissive();
    p.minimum_tcb = {2, 0, 5, 68, 0};
    CHECK(fail_msg(milan, p, rd) == "<passed>");
    p.minimum_tcb.microcode = 69;
    CHECK(fail_msg(milan, p, rd) ==
          "minimum_tcb.microcode: reported_tcb has microcode=68, expected at least 69");
    p.minimum_tcb = {3, 0, 0, 0, 0};
    CHECK(fail_msg(milan, p, rd) == "minimum_tcb.bl: reported_tcb has bl=2, expected at least 3");
    p.minimum_tcb = {0, 0, 0, 0, 9};  // fmc is ignored off Turin
    CHECK(fail_msg(milan, p, rd) == "<passed>");
  }
  SUBCASE("minimum_tcb.fmc on Turin") {
    const snp_report turin = verified("turin", "ask_ark_turin.pem");
    snp_policy p;
    p.minimum_tcb = {1, 0, 2, 0x47, 0};
    CHECK(fail_msg(turin, p, {}) == "<passed>");
    p.minimum_tcb.fmc = 1;
    CHECK(fail_msg(turin, p, {}) == "minimum_tcb.fmc: reported_tcb has fmc=0, expected at least 1");
  }
  SUBCASE("chip_ids") {
    auto p = permissive();
    p.chip_ids = {std::vector<uint8_t>(64, 0)};
    CHECK(fail_msg(milan, p, rd).rfind("chip_id: got 3ac3fe21", 0) == 0);
    p.chip_ids.emplace_back(milan.chip_id.begin(), milan.chip_id.end());
    CHECK(fail_msg(milan, p, rd) == "<passed>");
  }
  SUBCASE("chip_ids: 8-byte Turin id from JSON") {
    const snp_report turin = verified("turin", "ask_ark_turin.pem");
    auto p = load_policy_json(R"({"chip_ids": ["3b42092f69c656d3"], "product": "Turin"})");
    REQUIRE(p);
    CHECK(fail_msg(turin, *p, {}) == "<passed>");
  }
  SUBCASE("product") {
    auto p = permissive();
    p.product = snp_product::genoa;
    CHECK(fail_msg(milan, p, rd) == "product: got Milan, expected Genoa");
    p.product = snp_product::milan;
    CHECK(fail_msg(milan, p, rd) == "<passed>");
  }
  SUBCASE("minimum_report_version") {
    auto p = permissive();
    p.minimum_report_version = 3;
    CHECK(fail_msg(milan, p, rd) == "report_version: got 2, expected at least 3");
  }
  SUBCASE("vmpl") {
    auto p = permissive();
    p.vmpl = 2;
    CHECK(fail_msg(milan, p, rd) == "vmpl: got 0, expected 2");
    p.vmpl = 0;
    CHECK(fail_msg(milan, p, rd) == "<passed>");
  }
  SUBCASE("minimum_guest_svn") {
    auto p = permissive();
    p.minimum_guest_svn = 1;
    CHECK(fail_msg(milan, p, rd) == "guest_svn: got 0, expected at least 1");
  }
}

TEST_CASE("a policy built from JSON drives verification end to end") {
  const std::string dir = std::string(COVE_FIXTURES_DIR) + "/snp";
  auto p = load_policy_json(R"({
      "measurements": ["c57729018b0a6fb90dc17bb138b0aa35e4401004283ff4a2c24d3739ff3750f52384370e77b7032862a08c440a9bc4dc"],
      "product": "Genoa", "minimum_tcb": {"bl": 10, "snp": 25, "microcode": 84},
      "trusted_roots": ["ask_ark_genoa.pem"]})",
                            dir);
  REQUIRE(p);
  auto o = make_verify_options(*p);
  o.now = t::pinned_now();
  auto r = verify_snp_evidence(t::read_bytes("genoa-report.bin"), t::read_bytes("genoa-vcek.der"),
                               t::read_text("ask_ark_genoa.pem"), o);
  REQUIRE(r);
  auto rd = *from_hex("8100555af0ad8e7525be6dffeed0af83e30bbacbf03b76e175e6894d1ed057ce");
  CHECK(check_policy(*r, *p, rd));
  // The Milan chain is not named by this policy.
  auto m = verify_snp_evidence(t::read_bytes("milan-report.bin"), t::read_bytes("milan-vcek.der"),
                               t::read_text("ask_ark_milan.pem"), o);
  REQUIRE_FALSE(m);
  CHECK(m.error().message.find("is not one of the trusted roots") != std::string::npos);
}

TEST_CASE("policy_to_json: every key written, and it loads back to the same policy") {
  auto defaults = load_policy_json(policy_to_json(snp_policy{}));
  REQUIRE_MESSAGE(defaults, defaults.error().to_string());
  CHECK_FALSE(defaults->allow_debug);
  CHECK_FALSE(defaults->allow_migration_agent);
  CHECK(defaults->minimum_report_version == 2);
  CHECK_FALSE(defaults->product);
  CHECK_FALSE(defaults->vmpl);
  CHECK(policy_to_json(snp_policy{}).find("\"allow_debug\": false") != std::string::npos);

  snp_policy p;
  p.measurements = {std::vector<uint8_t>(48, 0xab), std::vector<uint8_t>(48, 0x01)};
  p.host_data = std::vector<uint8_t>(32, 7);
  p.allow_debug = true;
  p.allow_smt = false;
  p.allow_migration_agent = true;
  p.minimum_tcb = {1, 2, 3, 4, 5};
  p.chip_ids = {std::vector<uint8_t>(64, 9)};
  p.product = snp_product::turin;
  p.minimum_report_version = 5;
  p.minimum_guest_svn = 6;
  p.vmpl = 2;
  p.trusted_roots = {t::ark_pem_of("ask_ark_genoa.pem")};
  for (int indent : {2, -1}) {
    auto back = load_policy_json(policy_to_json(p, indent));
    REQUIRE_MESSAGE(back, back.error().to_string());
    CHECK(back->measurements == p.measurements);
    CHECK(back->host_data == p.host_data);
    CHECK(back->allow_debug);
    CHECK_FALSE(back->allow_smt);
    CHECK(back->allow_migration_agent);
    CHECK(back->minimum_tcb == p.minimum_tcb);
    CHECK(back->chip_ids == p.chip_ids);
    CHECK(back->product == snp_product::turin);
    CHECK(back->minimum_report_version == 5);
    CHECK(back->minimum_guest_svn == 6);
    CHECK(back->vmpl == 2u);
    CHECK(back->trusted_roots == p.trusted_roots);
  }
}

#include "cove/attest/verify.hpp"

#include <doctest/doctest.h>

#include "test_util.hpp"

using namespace cove::attest;
using cove::errc;
namespace t = cove::attest::test;

namespace {

struct pairing {
  const char* name;
  const char* bundle;
  snp_product product;
};
const pairing pairings[] = {{"milan", "ask_ark_milan.pem", snp_product::milan},
                            {"milan2", "ask_ark_milan.pem", snp_product::milan},
                            {"genoa", "ask_ark_genoa.pem", snp_product::genoa},
                            {"turin", "ask_ark_turin.pem", snp_product::turin}};

cove::expected<snp_report> verify(const std::string& report, const std::string& vcek,
                                  const std::string& bundle,
                                  const verify_options& o = t::real_amd_options()) {
  return verify_snp_evidence(t::read_bytes(report), t::read_bytes(vcek), t::read_text(bundle), o);
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

}  // namespace

TEST_CASE("every real fixture pairing verifies") {
  for (const auto& p : pairings) {
    CAPTURE(p.name);
    auto r = verify(std::string(p.name) + "-report.bin", std::string(p.name) + "-vcek.der", p.bundle);
    if (!r) MESSAGE(r.error().message);
    REQUIRE(r);
    CHECK(r->product == p.product);  // refined from the VCEK product name for v2 reports
  }
}

TEST_CASE("every cross pairing fails") {
  int checked = 0;
  for (const auto& rep : pairings) {
    for (const auto& cert : pairings) {
      for (const auto& chain : pairings) {
        if (&rep == &cert && cert.bundle == chain.bundle) continue;  // the genuine pairing
        CAPTURE(rep.name);
        CAPTURE(cert.name);
        CAPTURE(chain.bundle);
        auto r =
            verify(std::string(rep.name) + "-report.bin", std::string(cert.name) + "-vcek.der", chain.bundle);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == errc::attestation_failed);
        if (std::string(cert.bundle) != chain.bundle)
          CHECK(starts_with(r.error().message, "cert chain: VCEK "));
        else
          CHECK(starts_with(r.error().message, "signature: report signature does not verify"));
        ++checked;
      }
    }
  }
  CHECK(checked > 40);
}

TEST_CASE("bundle order does not matter") {
  auto bundle = t::read_text("ask_ark_genoa.pem");
  auto chain = identify_ask_ark(bundle);
  REQUIRE(chain);
  std::string reversed = t::der_to_pem(chain->ark_der) + t::der_to_pem(chain->ask_der);
  auto r = verify_snp_evidence(t::read_bytes("genoa-report.bin"), t::read_bytes("genoa-vcek.der"), reversed,
                               t::real_amd_options());
  CHECK(r);
  auto split = split_pem_bundle(bundle);
  REQUIRE(split);
  CHECK(split->size() == 2);
  CHECK((*split)[1] == chain->ark_der);  // fixture holds ASK then ARK
}

TEST_CASE("tampered evidence fails with a message naming the step") {
  auto report = t::read_bytes("genoa-report.bin");
  auto vcek = t::read_bytes("genoa-vcek.der");
  auto bundle = t::read_text("ask_ark_genoa.pem");
  auto opts = t::real_amd_options();
  auto run = [&](const std::vector<uint8_t>& rep) { return verify_snp_evidence(rep, vcek, bundle, opts); };
  REQUIRE(run(report));

  SUBCASE("flipped bit in the signed region") {
    for (std::size_t off : {0x008, 0x050, 0x090, 0x180, 0x1A0, 0x1F0, 0x207}) {
      auto b = report;
      b[off] ^= 0x10;
      auto r = run(b);
      REQUIRE_FALSE(r);
      CHECK(r.error().message == "signature: report signature does not verify with the VCEK public key");
    }
  }
  SUBCASE("flipped bit in a reserved part of the signed region") {
    auto b = report;
    b[0x29F] ^= 0x10;
    auto r = run(b);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "report: must-be-zero field is not zero: reserved 0x208");
  }
  SUBCASE("flipped bit in the signature") {
    for (std::size_t off : {0x2A0, 0x2CF, 0x2E8, 0x317}) {
      auto b = report;
      b[off] ^= 0x01;
      auto r = run(b);
      REQUIRE_FALSE(r);
      CHECK(r.error().message == "signature: report signature does not verify with the VCEK public key");
    }
  }
  SUBCASE("truncated and oversized") {
    auto r = run(std::vector<uint8_t>(report.begin(), report.end() - 1));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::attestation_failed);
    CHECK(r.error().message == "report: report is 1183 bytes, expected 1184");
    auto big = report;
    big.push_back(0);
    auto r2 = run(big);
    REQUIRE_FALSE(r2);
    CHECK(r2.error().message == "report: report is 1185 bytes, expected 1184");
  }
  SUBCASE("unknown version") {
    auto b = report;
    b[0] = 9;
    auto r = run(b);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "report: unsupported report version 9 (supported: 2 to 5)");
  }
  SUBCASE("VLEK-signed report is not accepted with a VCEK") {
    auto b = report;
    b[0x48] = 1 << 2;
    auto r = run(b);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "report: not signed by a VCEK (SIGNING_KEY=1)");
  }
  SUBCASE("tampered VCEK certificate signature") {
    auto v = vcek;
    v[v.size() - 5] ^= 0x01;
    auto r = verify_snp_evidence(report, v, bundle, opts);
    REQUIRE_FALSE(r);
    CHECK(starts_with(r.error().message, "cert chain: VCEK signature does not verify with the ASK key"));
  }
}

TEST_CASE("trusted roots") {
  auto report = t::read_bytes("milan-report.bin");
  auto vcek = t::read_bytes("milan-vcek.der");
  auto bundle = t::read_text("ask_ark_milan.pem");
  verify_options o;
  o.now = t::pinned_now();

  SUBCASE("none configured") {
    auto r = verify_snp_evidence(report, vcek, bundle, o);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "cert chain: no trusted ARK configured");
  }
  SUBCASE("wrong root") {
    o.trusted_ark_pems = {t::ark_pem_of("ask_ark_genoa.pem"), t::ark_pem_of("ask_ark_turin.pem")};
    auto r = verify_snp_evidence(report, vcek, bundle, o);
    REQUIRE_FALSE(r);
    CHECK(starts_with(r.error().message, "cert chain: ARK '"));
    CHECK(r.error().message.find("CN = ARK-Milan") != std::string::npos);
    CHECK(r.error().message.find("is not one of the trusted roots") != std::string::npos);
  }
  SUBCASE("the right root only") {
    o.trusted_ark_pems = {t::ark_pem_of("ask_ark_milan.pem")};
    CHECK(verify_snp_evidence(report, vcek, bundle, o));
  }
}

TEST_CASE("validity is checked at the pinned clock") {
  auto report = t::read_bytes("milan-report.bin");
  auto vcek = t::read_bytes("milan-vcek.der");
  auto bundle = t::read_text("ask_ark_milan.pem");
  auto o = t::real_amd_options();
  o.now = std::chrono::sys_days{std::chrono::year{2040} / 1 / 1};
  auto r = verify_snp_evidence(report, vcek, bundle, o);
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "cert chain: VCEK has expired (notAfter Sep 24 00:55:28 2029 GMT)");
  o.now = std::chrono::sys_days{std::chrono::year{2100} / 1 / 1};
  r = verify_snp_evidence(report, vcek, bundle, o);
  REQUIRE_FALSE(r);
  CHECK(starts_with(r.error().message, "cert chain: ARK has expired"));
  o.now = std::chrono::sys_days{std::chrono::year{2022} / 1 / 1};
  r = verify_snp_evidence(report, vcek, bundle, o);
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "cert chain: VCEK is not yet valid (notBefore Sep 24 00:55:28 2022 GMT)");
}

TEST_CASE("VCEK extensions") {
  auto milan = parse_vcek_extensions(t::read_bytes("milan-vcek.der"));
  REQUIRE(milan);
  CHECK(milan->product_name == "Milan-B0");
  CHECK(milan->bl == 2);
  CHECK(milan->tee == 0);
  CHECK(milan->snp == 5);
  CHECK(milan->microcode == 68);
  CHECK_FALSE(milan->fmc);
  REQUIRE(milan->hwid);
  CHECK(milan->hwid->size() == 64);
  CHECK(to_hex(std::span(*milan->hwid).first(4)) == "3ac3fe21");

  auto turin = parse_vcek_extensions(t::read_bytes("turin-vcek.der"));
  REQUIRE(turin);
  CHECK(turin->product_name == "Turin");
  CHECK(turin->fmc == 0);
  CHECK(turin->bl == 1);
  CHECK(turin->snp == 2);
  CHECK(turin->microcode == 0x47);
  REQUIRE(turin->hwid);
  CHECK(turin->hwid->size() == 8);
}

TEST_CASE("VCEK binding checks TCB and chip id") {
  auto info = parse_vcek_extensions(t::read_bytes("genoa-vcek.der"));
  REQUIRE(info);
  auto parsed = parse_snp_report(t::read_bytes("genoa-report.bin"));
  REQUIRE(parsed);
  {
    auto r = *parsed;
    CHECK(check_vcek_binding(r, *info));
  }
  {
    auto r = *parsed;
    r.reported_tcb = encode_tcb({10, 0, 24, 84, 0}, snp_product::genoa);
    auto res = check_vcek_binding(r, *info);
    REQUIRE_FALSE(res);
    CHECK(res.error().message == "tcb: REPORTED_TCB snp=24 but VCEK snp SPL=25");
  }
  {
    auto r = *parsed;
    r.chip_id[63] ^= 1;
    auto res = check_vcek_binding(r, *info);
    REQUIRE_FALSE(res);
    CHECK(starts_with(res.error().message, "chip_id: report CHIP_ID d2421d97"));
  }
  {
    auto r = *parsed;
    r.cpuid_fam_id = 0x1A;
    r.product = snp_product::turin;
    auto res = check_vcek_binding(r, *info);
    REQUIRE_FALSE(res);
    CHECK(res.error().message == "product: report CPUID says Turin, VCEK says Genoa");
  }
  {  // Turin: the 8-byte hwID must be followed by zeros in CHIP_ID.
    auto tinfo = parse_vcek_extensions(t::read_bytes("turin-vcek.der"));
    auto tr = parse_snp_report(t::read_bytes("turin-report.bin"));
    REQUIRE(tinfo);
    REQUIRE(tr);
    auto r = *tr;
    CHECK(check_vcek_binding(r, *tinfo));
    r.chip_id[20] = 1;
    CHECK_FALSE(check_vcek_binding(r, *tinfo));
  }
}

TEST_CASE("PEM bundle helpers reject bad input") {
  CHECK_FALSE(split_pem_bundle(""));
  CHECK_FALSE(split_pem_bundle("hello"));
  CHECK_FALSE(split_pem_bundle("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"));
  auto one = identify_ask_ark(t::ark_pem_of("ask_ark_milan.pem"));
  REQUIRE_FALSE(one);
  CHECK(one.error().message == "ASK/ARK bundle holds 1 certificates, expected 2");
  auto two_arks = identify_ask_ark(t::ark_pem_of("ask_ark_milan.pem") + t::ark_pem_of("ask_ark_genoa.pem"));
  REQUIRE_FALSE(two_arks);
  CHECK(two_arks.error().message.find("found 2") != std::string::npos);
  auto r = verify_snp_evidence(t::read_bytes("milan-report.bin"), t::read_bytes("milan-vcek.der"), "garbage",
                               t::real_amd_options());
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "cert chain: no certificate in PEM");
  auto bad_vcek = verify_snp_evidence(t::read_bytes("milan-report.bin"), std::vector<uint8_t>{0x30, 0x00},
                                      t::read_text("ask_ark_milan.pem"), t::real_amd_options());
  REQUIRE_FALSE(bad_vcek);
  CHECK(bad_vcek.error().message == "cert chain: VCEK is not a DER certificate");
}

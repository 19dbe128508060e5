#include "cove/attest/snp_report.hpp"

#include <doctest/doctest.h>

#include "test_util.hpp"

using namespace cove::attest;
using cove::errc;
namespace t = cove::attest::test;

TEST_CASE("parse milan-report.bin (v2)") {
  auto bytes = t::read_bytes("milan-report.bin");
  REQUIRE(bytes.size() == 1184);
  auto r = parse_snp_report(bytes);
  REQUIRE(r);
  CHECK(r->version == 2);
  CHECK(r->policy == 0xb0000);
  CHECK(r->debug_allowed());
  CHECK(r->smt_allowed());
  CHECK_FALSE(r->migration_agent_allowed());
  CHECK(r->vmpl == 0);
  CHECK(r->signature_algo == 1);
  CHECK(r->signing_key() == 0);
  CHECK(r->platform_info == 0x1);
  CHECK(to_hex(r->measurement) ==
        "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01");
  CHECK(to_hex(std::span(r->report_data).first(6)) == "010203040500");
  CHECK(to_hex(std::span(r->chip_id).first(16)) == "3ac3fe21e13fb0990eb28a802e3fb6a2");
  CHECK(r->reported_tcb == 0x4405000000000002ull);
  CHECK(r->product == snp_product::unknown);  // v2: no CPUID
  CHECK(r->reported() == tcb_version{2, 0, 5, 68, 0});
  CHECK(r->current_major == 1);
  CHECK(r->current_minor == 49);
  CHECK(r->current_build == 3);
  CHECK(std::equal(r->raw.begin(), r->raw.end(), bytes.begin()));
}

TEST_CASE("parse genoa-report.bin (v5)") {
  auto r = parse_snp_report(t::read_bytes("genoa-report.bin"));
  REQUIRE(r);
  CHECK(r->version == 5);
  CHECK(r->policy == 0x30000);
  CHECK_FALSE(r->debug_allowed());
  CHECK(r->cpuid_fam_id == 0x19);
  CHECK(r->cpuid_mod_id == 0x11);
  CHECK(r->cpuid_step == 0x01);
  CHECK(r->product == snp_product::genoa);
  CHECK(r->reported() == tcb_version{10, 0, 25, 84, 0});
  CHECK(r->platform_info == 0x25);
  CHECK(r->current_major == 1);
  CHECK(r->current_minor == 55);
  CHECK(r->current_build == 43);
  CHECK(r->launch_mit_vector == 1);
  CHECK(r->current_mit_vector == 1);
  CHECK(to_hex(std::span(r->measurement).first(8)) == "c57729018b0a6fb9");
}

TEST_CASE("parse turin-report.bin uses the Turin TCB layout") {
  auto r = parse_snp_report(t::read_bytes("turin-report.bin"));
  REQUIRE(r);
  CHECK(r->version == 5);
  CHECK(r->cpuid_fam_id == 0x1A);
  CHECK(r->product == snp_product::turin);
  CHECK(r->reported() == tcb_version{1, 0, 2, 0x47, 0});
  CHECK(to_hex(std::span(r->chip_id).first(8)) == "3b42092f69c656d3");
  // Decoding the same bytes with the Milan layout gives different numbers.
  CHECK(decode_tcb(r->reported_tcb, snp_product::milan) != r->reported());
}

TEST_CASE("parse milan2-report.bin") {
  auto r = parse_snp_report(t::read_bytes("milan2-report.bin"));
  REQUIRE(r);
  CHECK(r->version == 2);
  CHECK(r->policy == 0x30000);
  CHECK(to_hex(std::span(r->measurement).first(4)) == "7a1e5c26");
}

TEST_CASE("parse rejects wrong sizes") {
  auto bytes = t::read_bytes("milan-report.bin");
  auto short_r = parse_snp_report(std::span(bytes).first(1183));
  REQUIRE_FALSE(short_r);
  CHECK(short_r.error().code == errc::invalid_request);
  CHECK(short_r.error().message == "report is 1183 bytes, expected 1184");
  bytes.push_back(0);
  auto long_r = parse_snp_report(bytes);
  REQUIRE_FALSE(long_r);
  CHECK(long_r.error().message == "report is 1185 bytes, expected 1184");
  auto empty = parse_snp_report({});
  REQUIRE_FALSE(empty);
  CHECK(empty.error().message == "report is 0 bytes, expected 1184");
}

TEST_CASE("parse rejects unknown versions and signature algorithms") {
  auto bytes = t::read_bytes("genoa-report.bin");
  for (uint8_t v : {0, 1, 6, 255}) {
    auto b = bytes;
    b[0] = v;
    auto r = parse_snp_report(b);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "unsupported report version " + std::to_string(v) + " (supported: 2 to 5)");
  }
  auto b = bytes;
  b[0x34] = 2;
  auto r = parse_snp_report(b);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("unsupported SIGNATURE_ALGO 2") == 0);
}

TEST_CASE("parse rejects non-zero must-be-zero fields") {
  auto genoa = t::read_bytes("genoa-report.bin");
  auto milan = t::read_bytes("milan-report.bin");
  struct c {
    std::vector<uint8_t> base;
    std::size_t off;
    const char* msg;
  };
  for (const auto& [base, off, msg] :
       {c{genoa, 0x04C, "reserved 0x04C"}, c{genoa, 0x190, "reserved 0x18B"},
        c{genoa, 0x210, "reserved 0x208"}, c{genoa, 0x2A0 + 60, "signature R high bytes"},
        c{genoa, 0x2E8 + 71, "signature S high bytes"}, c{genoa, 0x400, "reserved 0x330"},
        c{milan, 0x188, "CPUID (reserved before v3)"}, c{milan, 0x1F8, "MIT vectors (reserved before v5)"}}) {
    auto b = base;
    b[off] ^= 0x01;
    auto r = parse_snp_report(b);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == std::string("must-be-zero field is not zero: ") + msg);
  }
  auto b = genoa;
  b[0x48] = 0x20;  // signer-info bit 5
  CHECK_FALSE(parse_snp_report(b));
}

TEST_CASE("TCB encode/decode round trip for both layouts") {
  tcb_version v{3, 1, 8, 115, 0};
  CHECK(encode_tcb(v, snp_product::genoa) == 0x7308000000000103ull);
  CHECK(decode_tcb(encode_tcb(v, snp_product::milan), snp_product::milan) == v);
  tcb_version tv{1, 2, 3, 4, 5};
  CHECK(encode_tcb(tv, snp_product::turin) == 0x0400000003020105ull);
  CHECK(decode_tcb(encode_tcb(tv, snp_product::turin), snp_product::turin) == tv);
  CHECK(to_string(tv, snp_product::turin) == "bl=1 tee=2 snp=3 microcode=4 fmc=5");
}

TEST_CASE("product detection") {
  CHECK(product_from_name("Milan-B0") == snp_product::milan);
  CHECK(product_from_name("Genoa") == snp_product::genoa);
  CHECK(product_from_name("Turin") == snp_product::turin);
  CHECK(product_from_name("Sim") == snp_product::unknown);
  CHECK(product_from_cpuid(0x19, 0x01) == snp_product::milan);
  CHECK(product_from_cpuid(0x19, 0x11) == snp_product::genoa);
  CHECK(product_from_cpuid(0x19, 0xA0) == snp_product::genoa);
  CHECK(product_from_cpuid(0x1A, 0x02) == snp_product::turin);
  CHECK(product_from_cpuid(0x17, 0x31) == snp_product::unknown);
}

TEST_CASE("hex helpers") {
  const uint8_t b[] = {0x00, 0xab, 0xFF};
  CHECK(to_hex(b) == "00abff");
  CHECK(from_hex("00ABff") == std::vector<uint8_t>{0x00, 0xab, 0xff});
  CHECK_FALSE(from_hex("abc"));
  CHECK_FALSE(from_hex("zz"));
  CHECK(from_hex("")->empty());
}

// TPM quote parsing and verification on crafted TPMS_ATTEST / TPMT_SIGNATURE /
// TPM2B_PUBLIC bytes signed with OpenSSL keys (the swtpm round trip is in guest/tests).
#include <doctest/doctest.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "cove/attest/snp_report.hpp"
#include "cove/attest/tpm_quote.hpp"
#include "tpm_test_util.hpp"

using namespace cove::attest;
using namespace cove::attest::tpm_test;

namespace {

struct fixture {
  pkey ec{EVP_EC_gen("P-256"), EVP_PKEY_free};
  pkey ec2{EVP_EC_gen("P-256"), EVP_PKEY_free};
  bytes nonce = bytes(32, 0x5A);
  tpm_pcr_values pcrs = sample_pcrs();
  bytes attest = tpm2b(make_attest(nonce, pcrs));
  bytes sig = sign(ec.get(), make_attest(nonce, pcrs), tpm_alg_ecdsa);
  bytes pub = ecc_public(ec.get());
};

}  // namespace

TEST_CASE("tpm: parse_tpm_attest reads every field") {
  fixture f;
  auto a = parse_tpm_attest(f.attest);
  REQUIRE(a);
  CHECK(a->magic == tpm_generated_value);
  CHECK(a->type == tpm_st_attest_quote);
  CHECK(a->qualified_signer == bytes(34, 0xAA));
  CHECK(a->extra_data == f.nonce);
  CHECK(a->clock == 123456);
  CHECK(a->reset_count == 7);
  CHECK(a->restart_count == 1);
  CHECK(a->safe);
  CHECK(a->firmware_version == 0x2023000100000000ull);
  REQUIRE(a->pcr_select.size() == 1);
  CHECK(a->pcr_select[0].hash_alg == tpm_alg_sha256);
  CHECK(a->pcr_select[0].pcrs == std::vector<uint32_t>{0, 1, 2, 7, 16});
  CHECK(a->body == make_attest(f.nonce, f.pcrs));
  // Bare TPMS_ATTEST (no size prefix) is accepted too.
  CHECK(parse_tpm_attest(a->body));
}

TEST_CASE("tpm: malformed attest, signature and public bytes give named errors") {
  fixture f;
  // Every truncation fails cleanly.
  for (std::size_t n = 0; n < f.attest.size(); ++n) {
    CHECK_FALSE(parse_tpm_attest(std::span(f.attest).first(n)));
  }
  for (std::size_t n = 0; n < f.sig.size(); ++n) CHECK_FALSE(parse_tpm_signature(std::span(f.sig).first(n)));
  for (std::size_t n = 0; n < f.pub.size(); ++n) CHECK_FALSE(parse_tpm_public(std::span(f.pub).first(n)));

  auto body = make_attest(f.nonce, f.pcrs);
  auto trunc = parse_tpm_attest(std::span(body).first(50));
  REQUIRE_FALSE(trunc);
  CHECK(trunc.error().message.find("truncated at extraData") != std::string::npos);

  auto extra = body;
  extra.push_back(0);
  auto e = parse_tpm_attest(extra);
  REQUIRE_FALSE(e);
  CHECK(e.error().message.find("1 trailing bytes") != std::string::npos);

  auto wrong_size = f.attest;
  wrong_size[1] ^= 1;
  CHECK(parse_tpm_attest(wrong_size).error().message.find("size field") != std::string::npos);

  auto magic = body;
  magic[3] ^= 1;
  CHECK_FALSE(parse_tpm_attest(magic));

  auto certify = make_attest(f.nonce, f.pcrs, 0x8017);
  CHECK(parse_tpm_attest(certify).error().message.find("not TPM_ST_ATTEST_QUOTE") != std::string::npos);

  auto big_nonce = f.attest;  // extraData size field -> 0xffff
  big_nonce[2 + 6 + 2 + 34] = 0xff;
  big_nonce[2 + 6 + 2 + 34 + 1] = 0xff;
  CHECK(parse_tpm_attest(big_nonce).error().message.find("extraData size 65535 exceeds 64") !=
        std::string::npos);

  bytes hmac_sig = be_writer{}.u16(0x0005).u16(tpm_alg_sha256).raw(bytes(32, 0)).b;
  CHECK(parse_tpm_signature(hmac_sig).error().message.find("unsupported sigAlg") != std::string::npos);
  CHECK_FALSE(parse_tpm_attest(bytes(3000, 0xff)));
  CHECK_FALSE(parse_tpm_public(bytes(500, 0x00)));
}

TEST_CASE("tpm: an ECDSA P-256 quote verifies with TPM2B_PUBLIC and DER SPKI") {
  fixture f;
  auto q = verify_tpm_quote(f.attest, f.sig, f.pub, f.nonce, f.pcrs);
  REQUIRE_MESSAGE(q, q.error().to_string());
  CHECK(q->extra_data == f.nonce);
  auto q2 = verify_tpm_quote(f.attest, f.sig, spki(f.ec.get()), f.nonce, f.pcrs);
  CHECK_MESSAGE(q2, q2.error().to_string());

  auto p = parse_tpm_public(f.pub);
  REQUIRE(p);
  CHECK(p->type == tpm_alg_ecc);
  CHECK(p->restricted_signing());
  CHECK(p->spki_der == spki(f.ec.get()));
  CHECK(p->name.size() == 34);
}

TEST_CASE("tpm: RSASSA and RSAPSS quotes verify") {
  pkey rsa{EVP_RSA_gen(2048), EVP_PKEY_free};
  REQUIRE(rsa);
  bytes nonce(20, 0x11);
  auto pcrs = sample_pcrs();
  auto body = make_attest(nonce, pcrs);
  for (uint16_t scheme : {tpm_alg_rsassa, tpm_alg_rsapss}) {
    CAPTURE(scheme);
    auto sig = sign(rsa.get(), body, scheme);
    auto q = verify_tpm_quote(tpm2b(body), sig, rsa_public(rsa.get(), scheme), nonce, pcrs);
    CHECK_MESSAGE(q, q.error().to_string());
    // An AK with no fixed scheme accepts either.
    CHECK(verify_tpm_quote(tpm2b(body), sig, rsa_public(rsa.get(), tpm_alg_null), nonce, pcrs));
  }
  // A signature made with a scheme other than the AK's fixed scheme fails.
  auto pss = sign(rsa.get(), body, tpm_alg_rsapss);
  auto r = verify_tpm_quote(tpm2b(body), pss, rsa_public(rsa.get(), tpm_alg_rsassa), nonce, pcrs);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("differs from the AK scheme") != std::string::npos);
  // PKCS#1 v1.5 bytes presented as PSS do not verify.
  auto v15 = sign(rsa.get(), body, tpm_alg_rsassa);
  v15[1] = static_cast<uint8_t>(tpm_alg_rsapss);
  CHECK_FALSE(verify_tpm_quote(tpm2b(body), v15, rsa_public(rsa.get(), tpm_alg_null), nonce, pcrs));
}

TEST_CASE("tpm: verification failures name what failed") {
  fixture f;
  SUBCASE("nonce") {
    auto r = verify_tpm_quote(f.attest, f.sig, f.pub, bytes(32, 0x5B), f.pcrs);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == cove::errc::attestation_failed);
    CHECK(r.error().message.find("nonce mismatch") != std::string::npos);
  }
  SUBCASE("flipped signature byte") {
    auto sig = f.sig;
    sig[10] ^= 0x01;
    auto r = verify_tpm_quote(f.attest, sig, f.pub, f.nonce, f.pcrs);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("quote signature does not verify") != std::string::npos);
  }
  SUBCASE("flipped attest byte") {
    auto a = f.attest;
    a[20] ^= 0x01;  // inside qualifiedSigner
    CHECK(verify_tpm_quote(a, f.sig, f.pub, f.nonce, f.pcrs).error().message.find("does not verify") !=
          std::string::npos);
  }
  SUBCASE("another AK") {
    auto r = verify_tpm_quote(f.attest, f.sig, ecc_public(f.ec2.get()), f.nonce, f.pcrs);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("quote signature does not verify") != std::string::npos);
  }
  SUBCASE("PCR value that does not match the digest") {
    auto pcrs = f.pcrs;
    pcrs[7][0] ^= 1;
    auto r = verify_tpm_quote(f.attest, f.sig, f.pub, f.nonce, pcrs);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("pcrDigest mismatch") != std::string::npos);
  }
  SUBCASE("missing PCR value") {
    auto pcrs = f.pcrs;
    pcrs.erase(16);
    auto r = verify_tpm_quote(f.attest, f.sig, f.pub, f.nonce, pcrs);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("pcr[16] is quoted but no value") != std::string::npos);
  }
  SUBCASE("non-restricted key") {
    auto r = verify_tpm_quote(f.attest, f.sig, ecc_public(f.ec.get(), 0x00040072), f.nonce, f.pcrs);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("not a restricted signing key") != std::string::npos);
  }
  SUBCASE("garbage key") {
    auto r = verify_tpm_quote(f.attest, f.sig, bytes(100, 0x30), f.nonce, f.pcrs);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == cove::errc::invalid_request);
  }
  SUBCASE("RSA signature with an EC key") {
    pkey rsa{EVP_RSA_gen(2048), EVP_PKEY_free};
    auto sig = sign(rsa.get(), make_attest(f.nonce, f.pcrs), tpm_alg_rsassa);
    CHECK(verify_tpm_quote(f.attest, sig, f.pub, f.nonce, f.pcrs).error().message.find("does not match") !=
          std::string::npos);
  }
}

TEST_CASE("tpm: PCR policy") {
  fixture f;
  auto q = verify_tpm_quote(f.attest, f.sig, f.pub, f.nonce, f.pcrs);
  REQUIRE(q);
  tpm_policy p;
  p.pcrs[7] = f.pcrs[7];
  p.pcrs[0] = f.pcrs[0];
  CHECK(check_tpm_policy(*q, f.pcrs, p));

  p.pcrs[7] = bytes(32, 0xcd);
  auto r = check_tpm_policy(*q, f.pcrs, p);
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "pcr[7]: got " + to_hex(f.pcrs[7]) + ", expected " + to_hex(p.pcrs[7]));

  tpm_policy p2;
  p2.pcrs[9] = bytes(32, 0);
  CHECK(check_tpm_policy(*q, f.pcrs, p2)
            .error()
            .message.find("pcr[9] is required by the policy but not quoted") != std::string::npos);
}

TEST_CASE("tpm: policy JSON") {
  auto p = load_tpm_policy_json(R"({"pcrs": {"7": ")" + std::string(64, 'a') + R"(", "0": ")" +
                                std::string(64, '0') + R"("}})");
  REQUIRE(p);
  CHECK(p->pcrs.size() == 2);
  CHECK(p->pcrs.at(7) == bytes(32, 0xaa));
  CHECK_FALSE(load_tpm_policy_json(R"({"pcr": {}})"));
  CHECK_FALSE(load_tpm_policy_json(R"({"pcrs": {"24": ")" + std::string(64, 'a') + R"("}})"));
  CHECK_FALSE(load_tpm_policy_json(R"({"pcrs": {"x": ")" + std::string(64, 'a') + R"("}})"));
  CHECK_FALSE(load_tpm_policy_json(R"({"pcrs": {"1": "abcd"}})"));
  CHECK_FALSE(load_tpm_policy_json("not json"));
}

TEST_CASE("tpm: only the sha256 bank is supported for the PCR digest") {
  std::vector<tpm_pcr_selection> sel{{tpm_alg_sha1, {0}}};
  tpm_pcr_values v{{0, bytes(32, 0)}};
  auto d = tpm_pcr_digest(sel, v);
  REQUIRE_FALSE(d);
  CHECK(d.error().message.find("sha1 is not supported") != std::string::npos);
  sel = {{tpm_alg_sha256, {0}}};
  v[0] = bytes(20, 0);
  CHECK(tpm_pcr_digest(sel, v).error().message.find("not 32") != std::string::npos);
}

TEST_CASE("tpm: quotes made by tpm2-tools on swtpm (the fuzz seeds) verify") {
  // Seed layout: u16 len, TPM2B_ATTEST or TPMS_ATTEST, u16 len, TPMT_SIGNATURE, TPM2B_PUBLIC.
  struct seed {
    const char* file;
    bytes nonce;
    uint16_t sig_alg;
  };
  for (const auto& s : {seed{"swtpm-ecdsa.bin", {1, 2, 3, 4, 5, 6, 7, 8}, tpm_alg_ecdsa},
                        seed{"swtpm-rsassa.bin", {0x0a, 0x0b}, tpm_alg_rsassa}}) {
    CAPTURE(s.file);
    std::ifstream in(std::string(COVE_SOURCE_DIR) + "/attest/fuzz/corpus/tpm_quote/" + s.file,
                     std::ios::binary);
    bytes b{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    REQUIRE(b.size() > 4);
    std::size_t alen = (std::size_t{b[0]} << 8) | b[1];
    REQUIRE(b.size() > 4 + alen);
    bytes att(b.begin() + 2, b.begin() + 2 + static_cast<long>(alen));
    std::size_t slen = (std::size_t{b[2 + alen]} << 8) | b[3 + alen];
    bytes sig(b.begin() + 4 + static_cast<long>(alen), b.begin() + 4 + static_cast<long>(alen + slen));
    bytes pub(b.begin() + 4 + static_cast<long>(alen + slen), b.end());
    auto a = parse_tpm_attest(att);
    REQUIRE_MESSAGE(a, a.error().to_string());
    CHECK(a->extra_data == s.nonce);
    auto ts = parse_tpm_signature(sig);
    REQUIRE(ts);
    CHECK(ts->sig_alg == s.sig_alg);
    auto p = parse_tpm_public(pub);
    REQUIRE_MESSAGE(p, p.error().to_string());
    CHECK(p->restricted_signing());
    tpm_pcr_values zeros;
    for (uint32_t i = 0; i < 24; ++i) zeros[i] = bytes(32, 0);
    // A fresh swtpm's PCRs 0-9 and 16 are all zero, so the quote verifies in full.
    auto v = verify_tpm_quote(att, sig, pub, s.nonce, zeros);
    CHECK_MESSAGE(v, v.error().to_string());
    zeros[7][31] = 1;
    auto r = verify_tpm_quote(att, sig, pub, s.nonce, zeros);
    REQUIRE_FALSE(r);
    CHECK_MESSAGE(r.error().message.find("pcrDigest mismatch") != std::string::npos, r.error().message);
    auto wrong = verify_tpm_quote(att, sig, pub, bytes{9}, zeros);
    CHECK(wrong.error().message.find("nonce mismatch") != std::string::npos);
  }
}

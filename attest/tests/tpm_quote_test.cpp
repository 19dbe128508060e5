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

using namespace cove::attest;
using bytes = std::vector<uint8_t>;

namespace {

struct be_writer {
  bytes b;
  be_writer& u8(uint8_t v) {
    b.push_back(v);
    return *this;
  }
  be_writer& u16(uint16_t v) { return u8(static_cast<uint8_t>(v >> 8)).u8(static_cast<uint8_t>(v)); }
  be_writer& u32(uint32_t v) { return u16(static_cast<uint16_t>(v >> 16)).u16(static_cast<uint16_t>(v)); }
  be_writer& u64(uint64_t v) { return u32(static_cast<uint32_t>(v >> 32)).u32(static_cast<uint32_t>(v)); }
  be_writer& raw(const bytes& v) {
    b.insert(b.end(), v.begin(), v.end());
    return *this;
  }
  be_writer& tpm2b(const bytes& v) { return u16(static_cast<uint16_t>(v.size())).raw(v); }
};

using pkey = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

bytes bn_param(EVP_PKEY* k, const char* name, std::size_t width) {
  BIGNUM* bn = nullptr;
  REQUIRE(EVP_PKEY_get_bn_param(k, name, &bn) == 1);
  bytes out(width);
  REQUIRE(BN_bn2binpad(bn, out.data(), static_cast<int>(width)) == static_cast<int>(width));
  BN_free(bn);
  return out;
}

constexpr uint32_t ak_attrs =
    0x00050072;  // fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign

bytes ecc_public(EVP_PKEY* k, uint32_t attrs = ak_attrs) {
  be_writer t;
  t.u16(tpm_alg_ecc).u16(tpm_alg_sha256).u32(attrs).tpm2b({});
  t.u16(tpm_alg_null).u16(tpm_alg_ecdsa).u16(tpm_alg_sha256).u16(tpm_ecc_nist_p256).u16(tpm_alg_null);
  t.tpm2b(bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, 32)).tpm2b(bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32));
  return be_writer{}.tpm2b(t.b).b;
}

bytes rsa_public(EVP_PKEY* k, uint16_t scheme) {
  be_writer t;
  t.u16(tpm_alg_rsa).u16(tpm_alg_sha256).u32(ak_attrs).tpm2b({});
  t.u16(tpm_alg_null).u16(scheme);
  if (scheme != tpm_alg_null) t.u16(tpm_alg_sha256);
  t.u16(2048).u32(0).tpm2b(bn_param(k, OSSL_PKEY_PARAM_RSA_N, 256));
  return be_writer{}.tpm2b(t.b).b;
}

bytes spki(EVP_PKEY* k) {
  int n = i2d_PUBKEY(k, nullptr);
  bytes out(static_cast<std::size_t>(n));
  unsigned char* p = out.data();
  i2d_PUBKEY(k, &p);
  return out;
}

bytes sha256(const bytes& in) {
  bytes out(32);
  SHA256(in.data(), in.size(), out.data());
  return out;
}

tpm_pcr_values sample_pcrs() {
  tpm_pcr_values v;
  for (uint32_t i : {0u, 1u, 2u, 7u, 16u}) v[i] = bytes(32, static_cast<uint8_t>(0x10 + i));
  return v;
}

// TPMS_ATTEST of a quote over sha256 PCRs {0,1,2,7,16}.
bytes make_attest(const bytes& nonce, const tpm_pcr_values& pcrs, uint16_t type = tpm_st_attest_quote) {
  bytes concat;
  for (auto& [i, v] : pcrs) concat.insert(concat.end(), v.begin(), v.end());
  be_writer w;
  w.u32(tpm_generated_value).u16(type).tpm2b(bytes(34, 0xAA)).tpm2b(nonce);
  w.u64(123456).u32(7).u32(1).u8(1).u64(0x2023000100000000ull);
  w.u32(1).u16(tpm_alg_sha256).u8(3).u8(0x87).u8(0x00).u8(0x01);  // PCRs 0,1,2,7 and 16
  w.tpm2b(sha256(concat));
  return w.b;
}

bytes tpm2b(const bytes& body) {
  return be_writer{}.tpm2b(body).b;
}

bytes sign(EVP_PKEY* k, const bytes& msg, uint16_t scheme) {
  auto* md = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  REQUIRE(EVP_DigestSignInit(md, &pctx, EVP_sha256(), nullptr, k) == 1);
  if (scheme == tpm_alg_rsapss) {
    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
  }
  std::size_t n = 0;
  REQUIRE(EVP_DigestSign(md, nullptr, &n, msg.data(), msg.size()) == 1);
  bytes sig(n);
  REQUIRE(EVP_DigestSign(md, sig.data(), &n, msg.data(), msg.size()) == 1);
  sig.resize(n);
  EVP_MD_CTX_free(md);
  be_writer w;
  w.u16(scheme).u16(tpm_alg_sha256);
  if (scheme == tpm_alg_ecdsa) {
    const unsigned char* p = sig.data();
    ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    REQUIRE(es != nullptr);
    bytes r(32);
    bytes s(32);
    BN_bn2binpad(ECDSA_SIG_get0_r(es), r.data(), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), s.data(), 32);
    ECDSA_SIG_free(es);
    w.tpm2b(r).tpm2b(s);
  } else {
    w.tpm2b(sig);
  }
  return w.b;
}

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

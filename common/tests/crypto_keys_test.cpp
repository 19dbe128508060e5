#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "cove/crypto/encoding.hpp"
#include "cove/crypto/keys.hpp"
#include "test_keys.hpp"

using namespace cove::crypto;
using cove::c_handle;
using cove::errc;

namespace {

const private_key& test_key(key_type t, int which = 0) {
  return test::cached_key(t, which);
}

std::vector<uint8_t> msg_of(std::string_view s) {
  return {s.begin(), s.end()};
}

evp_pkey openssl_keygen_ec(const char* curve) {
  return evp_pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve));
}
evp_pkey openssl_keygen_rsa(size_t bits) {
  return evp_pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", bits));
}

std::string bio_string(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string pubkey_pem(EVP_PKEY* k) {
  c_handle<BIO, BIO_free> bio(BIO_new(BIO_s_mem()));
  REQUIRE(PEM_write_bio_PUBKEY(bio.get(), k) == 1);
  return bio_string(bio.get());
}

std::string privkey_pkcs8_pem(EVP_PKEY* k) {
  c_handle<BIO, BIO_free> bio(BIO_new(BIO_s_mem()));
  REQUIRE(PEM_write_bio_PrivateKey(bio.get(), k, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  return bio_string(bio.get());
}

/// Traditional (PKCS#1 for RSA, SEC1 for EC) DER under an arbitrary PEM label.
std::string traditional_pem(EVP_PKEY* k, const char* label) {
  unsigned char* der = nullptr;
  int len = i2d_PrivateKey(k, &der);
  REQUIRE(len > 0);
  c_handle<BIO, BIO_free> bio(BIO_new(BIO_s_mem()));
  REQUIRE(PEM_write_bio(bio.get(), label, "", der, len) > 0);
  OPENSSL_free(der);
  return bio_string(bio.get());
}

}  // namespace

TEST_CASE("each key type: generate, PEM round trip, sign/verify, tamper and wrong-key rejection") {
  for (key_type t : {key_type::ed25519, key_type::ecdsa_p256, key_type::rsa}) {
    CAPTURE(to_string(t));
    const private_key& key = test_key(t);
    CHECK(key.type() == t);
    public_key pub = key.public_key();
    CHECK(pub.type() == t);

    // Private PEM round trip (PKCS#8).
    std::string pem = key.to_pem();
    CHECK(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    auto again = private_key::from_pem(pem);
    REQUIRE(again);
    CHECK(again->type() == t);
    CHECK(again->public_key() == pub);

    // Public PEM and DER round trips; parse() of PEM and of base64 DER.
    CHECK(pub.pem().starts_with("-----BEGIN PUBLIC KEY-----"));
    auto from_pem = public_key::from_pem(pub.pem());
    REQUIRE(from_pem);
    CHECK(*from_pem == pub);
    auto from_der = public_key::from_der(pub.der());
    REQUIRE(from_der);
    CHECK(from_der->der() == pub.der());
    auto parsed_pem = public_key::parse(pub.pem());
    REQUIRE(parsed_pem);
    CHECK(*parsed_pem == pub);
    auto parsed_b64 = public_key::parse("  " + base64_encode(pub.der()) + "\n");
    REQUIRE(parsed_b64);
    CHECK(*parsed_b64 == pub);
    CHECK(parsed_b64->type() == t);

    CHECK(pub.fingerprint().size() == 64);
    CHECK(pub.short_id() == pub.fingerprint().substr(0, 16));
    CHECK(pub.fingerprint() == test_key(t).public_key().fingerprint());
    CHECK(pub.fingerprint() != test_key(t, 1).public_key().fingerprint());

    // Sign and verify.
    auto msg = msg_of("upload statement bytes");
    auto sig = key.sign(msg);
    REQUIRE(sig);
    CHECK(pub.verify(msg, *sig));
    CHECK(parsed_b64->verify(msg, *sig));
    auto empty_sig = key.sign({});
    REQUIRE(empty_sig);
    CHECK(pub.verify({}, *empty_sig));

    auto flipped = *sig;
    flipped[flipped.size() / 2] ^= 0x01;
    auto bad = pub.verify(msg, flipped);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == errc::unauthorized);

    auto msg2 = msg;
    msg2[0] ^= 0x80;
    CHECK_FALSE(pub.verify(msg2, *sig));
    CHECK_FALSE(pub.verify(msg, {}));

    auto other_sig = test_key(t, 1).sign(msg);
    REQUIRE(other_sig);
    auto wrong = pub.verify(msg, *other_sig);
    REQUIRE_FALSE(wrong);
    CHECK(wrong.error().code == errc::unauthorized);
  }
}

TEST_CASE("signature schemes are the documented ones") {
  auto msg = msg_of("scheme check");
  auto ed = test_key(key_type::ed25519).sign(msg);
  REQUIRE(ed);
  CHECK(ed->size() == 64);
  auto ec = test_key(key_type::ecdsa_p256).sign(msg);
  REQUIRE(ec);
  CHECK((*ec)[0] == 0x30);  // DER SEQUENCE (r, s)

  // RSA: PSS / SHA-256 / MGF1-SHA-256 / salt 32, checked with plain OpenSSL.
  const private_key& rsa = test_key(key_type::rsa);
  auto sig = rsa.sign(msg);
  REQUIRE(sig);
  CHECK(sig->size() == 256);
  auto verify_with = [&](int padding, int saltlen) {
    c_handle<EVP_MD_CTX, EVP_MD_CTX_free> ctx(EVP_MD_CTX_new());
    EVP_PKEY_CTX* pctx = nullptr;
    REQUIRE(EVP_DigestVerifyInit(ctx.get(), &pctx, EVP_sha256(), nullptr, rsa.native()) == 1);
    REQUIRE(EVP_PKEY_CTX_set_rsa_padding(pctx, padding) == 1);
    if (padding == RSA_PKCS1_PSS_PADDING) {
      REQUIRE(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, saltlen) == 1);
      REQUIRE(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1);
    }
    return EVP_DigestVerify(ctx.get(), sig->data(), sig->size(), msg.data(), msg.size()) == 1;
  };
  CHECK(verify_with(RSA_PKCS1_PSS_PADDING, 32));
  CHECK_FALSE(verify_with(RSA_PKCS1_PADDING, 0));
}

TEST_CASE("unsupported keys are rejected with clear messages") {
  auto p384 = openssl_keygen_ec("P-384");
  REQUIRE(p384);
  auto r = public_key::from_pem(pubkey_pem(p384.get()));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::invalid_request);
  CHECK(r.error().message.find("secp384r1") != std::string::npos);
  CHECK(r.error().message.find("P-256") != std::string::npos);
  auto rp = private_key::from_pem(privkey_pkcs8_pem(p384.get()));
  REQUIRE_FALSE(rp);
  CHECK(rp.error().code == errc::invalid_request);

  auto rsa1024 = openssl_keygen_rsa(1024);
  REQUIRE(rsa1024);
  auto r2 = public_key::parse(pubkey_pem(rsa1024.get()));
  REQUIRE_FALSE(r2);
  CHECK(r2.error().code == errc::invalid_request);
  CHECK(r2.error().message.find("1024") != std::string::npos);
  CHECK(r2.error().message.find("2048") != std::string::npos);
  CHECK_FALSE(private_key::from_pem(traditional_pem(rsa1024.get(), "RSA PRIVATE KEY")));
  auto g = private_key::generate(key_type::rsa, 1024);
  REQUIRE_FALSE(g);
  CHECK(g.error().code == errc::invalid_request);

  evp_pkey x25519(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  auto r3 = public_key::from_pem(pubkey_pem(x25519.get()));
  REQUIRE_FALSE(r3);
  CHECK(r3.error().message.find("not supported") != std::string::npos);
}

TEST_CASE("malformed key input is rejected") {
  auto der = test_key(key_type::ed25519).public_key().der();
  auto trailing = der;
  trailing.push_back(0);
  CHECK_FALSE(public_key::from_der(trailing));
  CHECK_FALSE(public_key::from_der(std::span<const uint8_t>(der).first(der.size() - 1)));
  CHECK_FALSE(public_key::from_der({}));
  CHECK_FALSE(public_key::parse(""));
  CHECK_FALSE(public_key::parse("not a key"));
  CHECK_FALSE(public_key::parse(base64_encode(msg_of("garbage bytes"))));
  auto priv_as_pub = public_key::from_pem(test_key(key_type::ed25519).to_pem());
  REQUIRE_FALSE(priv_as_pub);
  CHECK(priv_as_pub.error().message.find("PUBLIC KEY") != std::string::npos);
  CHECK_FALSE(private_key::from_pem(""));
  CHECK_FALSE(private_key::from_pem(test_key(key_type::ed25519).public_key().pem()));
  CHECK_FALSE(private_key::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"));

  // Encrypted PKCS#8 is refused with a hint.
  c_handle<BIO, BIO_free> bio(BIO_new(BIO_s_mem()));
  char pass[] = "pw";
  REQUIRE(PEM_write_bio_PKCS8PrivateKey(bio.get(), test_key(key_type::ecdsa_p256).native(), EVP_aes_256_cbc(),
                                        nullptr, 0, nullptr, pass) == 1);
  auto enc = private_key::from_pem(bio_string(bio.get()));
  REQUIRE_FALSE(enc);
  CHECK(enc.error().message.find("encrypted") != std::string::npos);
}

TEST_CASE("private key PEM variants: PKCS#1 under PRIVATE KEY (cocos), RSA PRIVATE KEY, EC PRIVATE KEY") {
  const private_key& rsa = test_key(key_type::rsa);
  std::string pkcs1_as_pkcs8_label = traditional_pem(rsa.native(), "PRIVATE KEY");
  {
    // Make sure the body really is PKCS#1 (SEQUENCE { INTEGER 0, INTEGER n, ... }).
    c_handle<BIO, BIO_free> bio(
        BIO_new_mem_buf(pkcs1_as_pkcs8_label.data(), static_cast<int>(pkcs1_as_pkcs8_label.size())));
    char *name = nullptr, *header = nullptr;
    unsigned char* data = nullptr;
    long len = 0;
    REQUIRE(PEM_read_bio(bio.get(), &name, &header, &data, &len) == 1);
    CHECK(std::string(name) == "PRIVATE KEY");
    REQUIRE(len > 8);
    CHECK(data[7] == 0x02);  // the modulus INTEGER, where PKCS#8 has an AlgorithmIdentifier SEQUENCE
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
  }
  auto k1 = private_key::from_pem(pkcs1_as_pkcs8_label);
  REQUIRE(k1);
  CHECK(k1->type() == key_type::rsa);
  CHECK(k1->public_key() == rsa.public_key());
  auto sig = k1->sign(msg_of("x"));
  REQUIRE(sig);
  CHECK(rsa.public_key().verify(msg_of("x"), *sig));

  auto k2 = private_key::from_pem(traditional_pem(rsa.native(), "RSA PRIVATE KEY"));
  REQUIRE(k2);
  CHECK(k2->public_key() == rsa.public_key());

  const private_key& ec = test_key(key_type::ecdsa_p256);
  std::string sec1 = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" +
                     traditional_pem(ec.native(), "EC PRIVATE KEY");
  auto k3 = private_key::from_pem(sec1);
  REQUIRE(k3);
  CHECK(k3->type() == key_type::ecdsa_p256);
  CHECK(k3->public_key() == ec.public_key());

  // PKCS#1 RSA public key PEM.
  unsigned char* der = nullptr;
  int len = i2d_PublicKey(rsa.native(), &der);
  REQUIRE(len > 0);
  c_handle<BIO, BIO_free> bio(BIO_new(BIO_s_mem()));
  REQUIRE(PEM_write_bio(bio.get(), "RSA PUBLIC KEY", "", der, len) > 0);
  OPENSSL_free(der);
  auto pk = public_key::from_pem(bio_string(bio.get()));
  REQUIRE(pk);
  CHECK(*pk == rsa.public_key());
}

TEST_CASE("a private key whose public half does not match its private half is rejected") {
  auto sec1 = [](EVP_PKEY* k) {
    unsigned char* der = nullptr;
    int len = i2d_PrivateKey(k, &der);
    REQUIRE(len > 65);
    std::vector<uint8_t> v(der, der + len);
    OPENSSL_free(der);
    return v;
  };
  auto a = sec1(test_key(key_type::ecdsa_p256).native());
  auto b = sec1(test_key(key_type::ecdsa_p256, 1).native());
  REQUIRE(a.size() == b.size());
  std::copy(b.end() - 65, b.end(), a.end() - 65);  // A's scalar with B's public point
  c_handle<BIO, BIO_free> bio(BIO_new(BIO_s_mem()));
  REQUIRE(PEM_write_bio(bio.get(), "EC PRIVATE KEY", "", a.data(), static_cast<long>(a.size())) > 0);
  auto r = private_key::from_pem(bio_string(bio.get()));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::invalid_request);
  CHECK(r.error().message.find("inconsistent") != std::string::npos);
}

TEST_CASE("load_file reads a PEM key; a missing file is not_found") {
  std::vector<uint8_t> rnd(8);
  random_bytes(rnd);
  auto path = std::filesystem::temp_directory_path() / ("cove-key-test-" + to_hex(rnd) + ".pem");
  {
    std::ofstream out(path);
    out << test_key(key_type::ed25519).to_pem();
  }
  auto k = private_key::load_file(path);
  std::filesystem::remove(path);
  REQUIRE(k);
  CHECK(k->public_key() == test_key(key_type::ed25519).public_key());
  auto missing = private_key::load_file(path);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == errc::not_found);
  {
    std::ofstream out(path);
    out << std::string((1 << 20) + 1, 'A');
  }
  auto huge = private_key::load_file(path);
  std::filesystem::remove(path);
  REQUIRE_FALSE(huge);
  CHECK(huge.error().code == errc::invalid_request);
  CHECK(huge.error().message.find("too large") != std::string::npos);
}

TEST_CASE("public_key copies share the key and compare equal") {
  public_key a = test_key(key_type::ecdsa_p256).public_key();
  public_key b = a;
  CHECK(a == b);
  public_key c = test_key(key_type::ecdsa_p256, 1).public_key();
  CHECK_FALSE(a == c);
  c = b;
  CHECK(c == a);
  auto sig = test_key(key_type::ecdsa_p256).sign(msg_of("m"));
  REQUIRE(sig);
  CHECK(c.verify(msg_of("m"), *sig));
  CHECK(a.bits() == 256);
}

#include <doctest/doctest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "cove/crypto/x509.hpp"

using namespace cove;

namespace {
using evp_pkey = c_handle<EVP_PKEY, EVP_PKEY_free>;

std::string subject_of(X509* cert) {
  char buf[256];
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof buf);
  return buf;
}
}  // namespace

TEST_CASE("x509: a self-signed CA and a certificate it issues verify; a stranger's does not") {
  evp_pkey ca_key{EVP_EC_gen("P-256")}, leaf_key{EVP_EC_gen("P-256")}, other_key{EVP_EC_gen("P-256")};
  REQUIRE((ca_key && leaf_key && other_key));
  auto ca = crypto::issue_certificate(
      ca_key.get(), "test CA", nullptr, ca_key.get(), 10,
      {{NID_basic_constraints, "critical,CA:TRUE"}, {NID_subject_key_identifier, "hash"}});
  REQUIRE(ca.has_value());
  CHECK(subject_of(ca->get()) == "/O=cove/CN=test CA");
  CHECK(X509_verify(ca->get(), ca_key.get()) == 1);
  CHECK(X509_check_ca(ca->get()) >= 1);

  auto leaf = crypto::issue_certificate(
      leaf_key.get(), "leaf", ca->get(), ca_key.get(), 1,
      {{NID_subject_alt_name, "IP:127.0.0.1"}, {NID_authority_key_identifier, "keyid"}});
  REQUIRE(leaf.has_value());
  CHECK(X509_verify(leaf->get(), ca_key.get()) == 1);
  CHECK(X509_verify(leaf->get(), other_key.get()) != 1);
  CHECK(X509_check_issued(ca->get(), leaf->get()) == X509_V_OK);
  CHECK(X509_check_ip_asc(leaf->get(), "127.0.0.1", 0) == 1);
  // Valid now, for `days` days (from an hour ago).
  CHECK(X509_cmp_current_time(X509_get0_notBefore(leaf->get())) < 0);
  CHECK(X509_cmp_current_time(X509_get0_notAfter(leaf->get())) > 0);
  ERR_clear_error();
}

TEST_CASE("x509: a malformed extension is an error naming it; PEM holds what was asked") {
  evp_pkey key{EVP_EC_gen("P-256")};
  REQUIRE(key);
  auto bad =
      crypto::issue_certificate(key.get(), "x", nullptr, key.get(), 1, {{NID_key_usage, "no-such-usage"}});
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().code == errc::crypto_failed);
  CHECK(bad.error().message.find("no-such-usage") != std::string::npos);

  auto cert = crypto::issue_certificate(key.get(), "x", nullptr, key.get(), 1, {});
  REQUIRE(cert.has_value());
  auto both = crypto::to_pem(cert->get(), key.get());
  REQUIRE(both.has_value());
  CHECK(both->find("-----BEGIN CERTIFICATE-----") != std::string::npos);
  CHECK(both->find("-----BEGIN PRIVATE KEY-----") != std::string::npos);
  auto cert_only = crypto::to_pem(cert->get(), nullptr);
  REQUIRE(cert_only.has_value());
  CHECK(cert_only->find("PRIVATE KEY") == std::string::npos);
}

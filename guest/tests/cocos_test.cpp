// The cocos front door's building blocks: role-string signatures in cocos's three
// schemes and the EAT token layout.
#include <doctest/doctest.h>

#include "cove/agent/atls.hpp"
#include "cove/agent/cocos_auth.hpp"
#include "cove/agent/eat.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/keys.hpp"

using namespace cove;
using cove::agent::cocos::role;

TEST_CASE("cocos role signatures: each scheme verifies for its role only") {
  for (auto type : {crypto::key_type::rsa, crypto::key_type::ecdsa_p256, crypto::key_type::ed25519}) {
    CAPTURE(crypto::to_string(type));
    auto key = *crypto::private_key::generate(type, 2048);
    auto sig = agent::cocos::sign_role(key, role::data_provider);
    REQUIRE(sig);
    CHECK(agent::cocos::verify_role_signature(key.public_key(), role::data_provider, *sig));
    auto other = agent::cocos::verify_role_signature(key.public_key(), role::consumer, *sig);
    REQUIRE_FALSE(other);
    CHECK(other.error().code == errc::unauthorized);
    auto stranger = *crypto::private_key::generate(type, 2048);
    CHECK_FALSE(agent::cocos::verify_role_signature(stranger.public_key(), role::data_provider, *sig));
  }
}

TEST_CASE("cocos RSA signatures are PKCS#1 v1.5, not cove's RSA-PSS") {
  auto key = *crypto::private_key::generate(crypto::key_type::rsa, 2048);
  auto pss = key.sign(crypto::as_bytes(agent::cocos::role_string(role::consumer)));  // cove's own scheme
  REQUIRE(pss);
  CHECK_FALSE(agent::cocos::verify_role_signature(key.public_key(), role::consumer, *pss));
  auto pkcs1 = *agent::cocos::sign_role(key, role::consumer);
  CHECK(key.public_key().verify(crypto::as_bytes("consumer"), pkcs1).has_value() == false);
}

TEST_CASE("cocos signature metadata must be standard base64") {
  CHECK(agent::cocos::decode_signature("AAEC"));
  auto bad = agent::cocos::decode_signature("AA-_");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == errc::unauthorized);
  auto empty = agent::cocos::decode_signature("");  // decodes to nothing; verify refuses it
  REQUIRE(empty);
  auto key = *crypto::private_key::generate(crypto::key_type::ed25519);
  CHECK_FALSE(agent::cocos::verify_role_signature(key.public_key(), role::consumer, *empty));
}

TEST_CASE("EAT token: COSE_Sign1 (tag 18) with ES256 and the claims") {
  agent::eat_claims c;
  c.issuer = "cove-agent";
  c.nonce.assign(32, 7);
  c.ueid.assign(64, 1);
  c.measurements.assign(48, 2);
  c.platform_type = "SNP";
  c.raw_report.assign(1184, 3);
  auto key = *crypto::private_key::generate(crypto::key_type::ecdsa_p256);
  auto token = agent::make_eat_token(c, key);
  REQUIRE(token);
  // d2 = tag 18, 84 = array(4), 43 a1 01 26 = bstr(3) {1: -7}
  REQUIRE(token->size() > 1184);
  CHECK(std::vector<uint8_t>(token->begin(), token->begin() + 6) ==
        std::vector<uint8_t>{0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26});
  // The signature is the last 64 bytes (bstr of 64 = 58 40).
  CHECK((*token)[token->size() - 66] == 0x58);
  CHECK((*token)[token->size() - 65] == 0x40);
  auto ed = *crypto::private_key::generate(crypto::key_type::ed25519);
  CHECK_FALSE(agent::make_eat_token(c, ed));
}

TEST_CASE("aTLS authenticator requests: ours parse, malformed ones do not") {
  std::vector<uint8_t> ctx(32, 9);
  auto req = agent::atls::make_request(ctx);
  auto parsed = agent::atls::parse_request(req);
  REQUIRE(parsed);
  CHECK(parsed->context == ctx);
  CHECK(parsed->offers_attestation);
  CHECK(parsed->schemes == std::vector<uint16_t>{agent::atls::scheme_ecdsa_p256_sha256});
  auto trailing = req;
  trailing.push_back(0);
  CHECK_FALSE(agent::atls::parse_request(trailing));
  auto truncated = req;
  truncated.pop_back();
  CHECK_FALSE(agent::atls::parse_request(truncated));
  auto wrong_type = req;
  wrong_type[0] = 13;
  CHECK_FALSE(agent::atls::parse_request(wrong_type));
}

// nkeys: encoding vectors, bad input, and a round trip through nats.c and a
// real nats-server that knows the user only by its nkey.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

#include "cove/bus/authz.hpp"
#include "cove/bus/nkeys.hpp"
#include "cove/crypto/keys.hpp"
#include "cove/test/process.hpp"
#include "helpers.hpp"

using namespace cove;
using namespace cove::bus;
using namespace cove::bus::testing;

namespace {
// The pair printed by `nk -gen user -pubout` in the NATS documentation.
constexpr std::string_view doc_seed = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";
constexpr std::string_view doc_public = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4";

std::string flip(std::string s, size_t i) {
  s[i] = s[i] == 'A' ? 'B' : 'A';
  return s;
}
}  // namespace

TEST_CASE("nkeys: crc16 is CRC-16/XMODEM") {
  std::string check = "123456789";
  CHECK(nkeys::crc16({reinterpret_cast<const uint8_t*>(check.data()), check.size()}) == 0x31C3);
  CHECK(nkeys::crc16({}) == 0);
}

TEST_CASE("nkeys: base32 round trip and strictness") {
  std::string foobar = "foobar";
  std::span<const uint8_t> in{reinterpret_cast<const uint8_t*>(foobar.data()), foobar.size()};
  CHECK(nkeys::base32_encode(in) == "MZXW6YTBOI");  // RFC 4648 test vector, unpadded
  auto back = nkeys::base32_decode("MZXW6YTBOI");
  REQUIRE(back.has_value());
  CHECK(std::string(back->begin(), back->end()) == foobar);
  CHECK_FALSE(nkeys::base32_decode("mzxw6ytboi").has_value());  // lower case
  CHECK_FALSE(nkeys::base32_decode("MZXW6YTBO1").has_value());  // '1' not in the alphabet
  CHECK_FALSE(nkeys::base32_decode("MZXW6YTBOJ").has_value());  // non-zero trailing bits
  CHECK_FALSE(nkeys::base32_decode("MZXW6YTBO").has_value());   // dangling 5 bits
}

TEST_CASE("nkeys: the documented seed gives the documented public key") {
  auto k = nkeys::user_key::from_seed(doc_seed);
  REQUIRE_MESSAGE(k.has_value(), k.error().to_string());
  CHECK(k->public_key() == doc_public);
  CHECK(k->seed() == doc_seed);
  auto pk = nkeys::decode_user_public(doc_public);
  REQUIRE(pk.has_value());
  CHECK(*pk == k->raw_public_key());
  CHECK(nkeys::encode_user_public(*pk) == doc_public);
  // Surrounding whitespace (a trailing newline in a file) is fine.
  CHECK(nkeys::user_key::from_seed(std::string(doc_seed) + "\n").has_value());
}

TEST_CASE("nkeys: generated keys round trip and sign") {
  auto k = nkeys::user_key::generate();
  REQUIRE(k.has_value());
  auto seed = k->seed();
  CHECK(seed.size() == 58);
  CHECK(seed.starts_with("SU"));
  CHECK(k->public_key().size() == 56);
  CHECK(k->public_key().starts_with("U"));
  auto again = nkeys::user_key::from_seed(seed);
  REQUIRE(again.has_value());
  CHECK(again->public_key() == k->public_key());
  std::string msg = "nonce-123";
  std::span<const uint8_t> m{reinterpret_cast<const uint8_t*>(msg.data()), msg.size()};
  auto sig = k->sign(m);
  CHECK(nkeys::verify(k->raw_public_key(), m, sig));
  sig[0] ^= 1;
  CHECK_FALSE(nkeys::verify(k->raw_public_key(), m, sig));
  auto other = nkeys::user_key::generate();
  REQUIRE(other.has_value());
  CHECK(other->public_key() != k->public_key());
}

TEST_CASE("nkeys: nats.c's own signer accepts our seeds and agrees with our signature") {
  auto k = nkeys::user_key::generate();
  REQUIRE(k.has_value());
  auto seed = k->seed();
  const char* nonce = "k3VcZ9WkQnh2ZlM";
  unsigned char* sig = nullptr;
  int len = 0;
  REQUIRE(nats_Sign(seed.c_str(), nonce, &sig, &len) == NATS_OK);
  REQUIRE(len == 64);
  auto ours = k->sign({reinterpret_cast<const uint8_t*>(nonce), std::strlen(nonce)});
  CHECK(std::equal(ours.begin(), ours.end(), sig));  // Ed25519 is deterministic
  std::free(sig);
}

TEST_CASE("nkeys: bad seeds and public keys are refused with a reason") {
  auto check_bad = [](expected<nkeys::user_key> r, std::string_view text) {
    REQUIRE_FALSE(r.has_value());
    INFO(r.error().to_string());
    CHECK(r.error().code == errc::invalid_request);
    CHECK(r.error().message.find(text) != std::string::npos);
  };
  check_bad(nkeys::user_key::from_seed(""), "58 characters");
  check_bad(nkeys::user_key::from_seed(doc_seed.substr(1)), "58 characters");
  check_bad(nkeys::user_key::from_seed(flip(std::string(doc_seed), 20)), "checksum");
  check_bad(nkeys::user_key::from_seed(std::string(doc_seed.substr(0, 57)) + "1"), "base32");
  // A public key where a seed is expected (and vice versa).
  check_bad(nkeys::user_key::from_seed(std::string(doc_public) + "AA"), "");
  CHECK_FALSE(nkeys::decode_user_public(doc_seed).has_value());
  auto bad_crc = nkeys::decode_user_public(flip(std::string(doc_public), 10));
  REQUIRE_FALSE(bad_crc.has_value());
  CHECK(bad_crc.error().message.find("checksum") != std::string::npos);
  // An account key ('A' prefix) is not a user key.
  auto pk = *nkeys::decode_user_public(doc_public);
  std::vector<uint8_t> raw{0 << 3};  // 'A' = 0
  raw.insert(raw.end(), pk.begin(), pk.end());
  uint16_t crc = nkeys::crc16(raw);
  raw.push_back(static_cast<uint8_t>(crc & 0xff));
  raw.push_back(static_cast<uint8_t>(crc >> 8));
  auto account = nkeys::decode_user_public(nkeys::base32_encode(raw));
  REQUIRE_FALSE(account.has_value());
  CHECK(account.error().message.find("not a user key") != std::string::npos);
}

TEST_CASE("nkeys: an Ed25519 participant key is its own nkey; other key types are refused") {
  auto ed = crypto::private_key::generate(crypto::key_type::ed25519);
  REQUIRE(ed.has_value());
  auto k = nkeys::user_key::from_private_key(*ed);
  REQUIRE(k.has_value());
  auto raw = nkeys::raw_ed25519(ed->public_key());
  REQUIRE(raw.has_value());
  CHECK(*raw == k->raw_public_key());
  // The nkey signs exactly what the participant key signs.
  std::string msg = "same key";
  std::span<const uint8_t> m{reinterpret_cast<const uint8_t*>(msg.data()), msg.size()};
  auto sig = k->sign(m);
  CHECK(ed->public_key().verify(m, sig).has_value());

  auto p256 = crypto::private_key::generate(crypto::key_type::ecdsa_p256);
  REQUIRE(p256.has_value());
  auto refused = nkeys::user_key::from_private_key(*p256);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().message.find("Ed25519") != std::string::npos);
  CHECK_FALSE(nkeys::raw_ed25519(p256->public_key()).has_value());
}

TEST_CASE("nkeys: key files hold a seed or an Ed25519 PEM; seeds are saved 0600") {
  test::temp_dir dir("cove-nkeys");
  auto k = nkeys::user_key::generate();
  REQUIRE(k.has_value());
  auto seed_file = dir.path() / "user.seed";
  REQUIRE(nkeys::save_seed(*k, seed_file));
  struct stat st {};
  REQUIRE(::stat(seed_file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto loaded = nkeys::user_key::load_file(seed_file);
  REQUIRE(loaded.has_value());
  CHECK(loaded->public_key() == k->public_key());

  auto ed = crypto::private_key::generate(crypto::key_type::ed25519);
  REQUIRE(ed.has_value());
  auto pem_file = dir.path() / "participant.key";
  std::ofstream(pem_file) << ed->to_pem();
  auto from_pem = nkeys::user_key::load_file(pem_file);
  REQUIRE(from_pem.has_value());
  CHECK(from_pem->raw_public_key() == *nkeys::raw_ed25519(ed->public_key()));

  auto junk = dir.path() / "junk";
  std::ofstream(junk) << "hello";
  auto bad = nkeys::user_key::load_file(junk);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message.find("neither an nkey seed") != std::string::npos);
  auto missing = nkeys::user_key::load_file(dir.path() / "missing");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().code == errc::not_found);
  auto huge = dir.path() / "huge";
  std::ofstream(huge) << "SU" << std::string(64 * 1024, 'A');
  auto too_large = nkeys::user_key::load_file(huge);
  REQUIRE_FALSE(too_large.has_value());
  CHECK(too_large.error().message.find("too large") != std::string::npos);
}

TEST_CASE("nkeys: a real nats-server accepts the user's nkey and refuses a wrong seed or none") {
  test::temp_dir dir("cove-nkeys-srv");
  auto good = nkeys::user_key::generate();
  auto wrong = nkeys::user_key::generate();
  REQUIRE(good.has_value());
  REQUIRE(wrong.has_value());
  auto good_pub = good->public_key();
  authz::permissions all{{">"}, {">"}, false};
  auto conf = dir.path() / "nats.conf";
  REQUIRE(authz::write_private_file(conf, authz::render_server_config(nullptr, {{good_pub, all}})));
  auto srv = test::nats_server::start_with_config(conf);
  REQUIRE_MESSAGE(srv.has_value(), (srv ? "" : srv.error().to_string()));

  connect_options o;
  o.url = srv->url();
  o.max_reconnect = 0;
  o.nkey = std::make_shared<const nkeys::user_key>(std::move(*good));
  auto c = connection::connect(o);
  REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().to_string()));
  // Replies come back on the user's own inbox.
  CHECK((*c)->inbox_prefix() == "_INBOX." + good_pub);
  CHECK((*c)->new_inbox().starts_with("_INBOX." + good_pub + "."));
  auto echo =
      (*c)->subscribe("t.echo", [conn = c->get()](message&& m) { (void)conn->publish(m.reply, m.data); });
  REQUIRE(echo.has_value());
  REQUIRE((*c)->flush(5s));
  auto reply = (*c)->request("t.echo", bytes("ping"), 5s);
  REQUIRE_MESSAGE(reply.has_value(), (reply ? "" : reply.error().to_string()));
  CHECK(reply->subject.starts_with("_INBOX." + good_pub + "."));
  CHECK(text(reply->data) == "ping");
  echo->reset();

  // An unknown key is refused.
  auto wrong_key = std::make_shared<const nkeys::user_key>(std::move(*wrong));
  connect_options other = o;
  other.nkey = wrong_key;
  auto refused = connection::connect(other);
  REQUIRE_FALSE(refused.has_value());
  INFO(refused.error().to_string());
  CHECK(refused.error().code == errc::unauthorized);
  CHECK(refused.error().message.find("uthorization") != std::string::npos);

  // The wrong seed for the right public key: the server checks the nonce
  // signature against the key the client claims (raw nats.c, since cove's
  // connection always claims its own key's public half).
  {
    natsOptions* raw_opts = nullptr;
    REQUIRE(natsOptions_Create(&raw_opts) == NATS_OK);
    nats_opts owned{raw_opts};
    REQUIRE(natsOptions_SetURL(raw_opts, srv->url().c_str()) == NATS_OK);
    REQUIRE(natsOptions_SetNKey(
                raw_opts, good_pub.c_str(),
                [](char**, unsigned char** sig, int* len, const char* nonce, void* closure) -> natsStatus {
                  auto* k = static_cast<const nkeys::user_key*>(closure);
                  auto s = k->sign({reinterpret_cast<const uint8_t*>(nonce), std::strlen(nonce)});
                  *sig = static_cast<unsigned char*>(std::malloc(s.size()));
                  std::memcpy(*sig, s.data(), s.size());
                  *len = static_cast<int>(s.size());
                  return NATS_OK;
                },
                const_cast<nkeys::user_key*>(wrong_key.get())) == NATS_OK);
    natsConnection* raw_conn = nullptr;
    natsStatus st = natsConnection_Connect(&raw_conn, raw_opts);
    CHECK(st == NATS_CONNECTION_AUTH_FAILED);
    if (raw_conn != nullptr) natsConnection_Destroy(raw_conn);
  }

  connect_options none = o;
  none.nkey.reset();
  auto anonymous = connection::connect(none);
  REQUIRE_FALSE(anonymous.has_value());
  CHECK(anonymous.error().code == errc::unauthorized);
}

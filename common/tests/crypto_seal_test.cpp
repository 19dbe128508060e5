#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "cove/crypto/encoding.hpp"
#include "cove/crypto/keys.hpp"
#include "cove/crypto/seal.hpp"
#include "test_keys.hpp"

using namespace cove::crypto;
using cove::errc;

namespace {

const private_key& wrap_key_of(key_type t, int which = 0) {
  return test::cached_key(t, which);
}

struct sealed {
  seal_header header{};
  std::vector<std::vector<uint8_t>> chunks;
  std::vector<std::vector<uint8_t>> plain;
};

sealed seal_chunks(const secret_key& key, std::vector<size_t> sizes) {
  sealed s;
  auto stream = seal_stream::create(key, s.header);
  REQUIRE(stream);
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::vector<uint8_t> p(sizes[i]);
    random_bytes(p);
    std::vector<uint8_t> c;
    REQUIRE(stream->push(p, i + 1 == sizes.size(), c));
    CHECK(c.size() == p.size() + seal_overhead);
    s.plain.push_back(std::move(p));
    s.chunks.push_back(std::move(c));
  }
  CHECK(stream->finished());
  return s;
}

/// Pulls `order` chunk indices; returns the index of the first failing pull, or -1.
int open_chunks(const secret_key& key, const sealed& s, const std::vector<size_t>& order,
                bool* finished = nullptr) {
  auto stream = open_stream::create(key, s.header);
  REQUIRE(stream);
  std::vector<uint8_t> out;
  for (size_t i = 0; i < order.size(); ++i) {
    bool fin = false;
    auto r = stream->pull(s.chunks[order[i]], out, fin);
    if (!r) {
      CHECK(r.error().code == errc::crypto_failed);
      return static_cast<int>(i);
    }
    CHECK(out == s.plain[order[i]]);
    CHECK(fin == (order[i] + 1 == s.chunks.size()));
  }
  if (finished != nullptr) *finished = stream->finished();
  return -1;
}

}  // namespace

TEST_CASE("secret_key: 32 bytes, move wipes the source") {
  auto k = secret_key::generate();
  std::vector<uint8_t> copy(k.bytes().begin(), k.bytes().end());
  CHECK(copy != std::vector<uint8_t>(32, 0));
  secret_key moved = std::move(k);
  CHECK(std::vector<uint8_t>(moved.bytes().begin(), moved.bytes().end()) == copy);
  CHECK(std::vector<uint8_t>(k.bytes().begin(), k.bytes().end()) ==
        std::vector<uint8_t>(32, 0));  // NOLINT(bugprone-use-after-move)
  auto from = secret_key::from_bytes(copy);
  REQUIRE(from);
  CHECK(std::equal(from->bytes().begin(), from->bytes().end(), copy.begin()));
  CHECK_FALSE(secret_key::from_bytes(std::vector<uint8_t>(31)));
}

TEST_CASE("client and server session keys match; other pairs differ") {
  auto client = kx_keypair::generate();
  auto server = kx_keypair::generate();
  auto c = client_session_key(client, server.public_key);
  auto s = server_session_key(server, client.public_key);
  REQUIRE(c);
  REQUIRE(s);
  CHECK(constant_time_equal(c->bytes(), s->bytes()));

  auto other = kx_keypair::generate();
  auto s2 = server_session_key(other, client.public_key);
  REQUIRE(s2);
  CHECK_FALSE(constant_time_equal(c->bytes(), s2->bytes()));

  auto bad = client_session_key(client, std::vector<uint8_t>(31));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == errc::invalid_request);
  auto zero = client_session_key(client, std::vector<uint8_t>(32, 0));  // low-order point
  REQUIRE_FALSE(zero);
  CHECK(zero.error().code == errc::crypto_failed);

  auto rebuilt = kx_keypair::from_secret(*secret_key::from_bytes(server.secret.bytes()));
  CHECK(rebuilt.public_key == server.public_key);
}

TEST_CASE("sealed stream round trip over several chunks") {
  {
    auto key = secret_key::generate();
    auto only_empty = seal_chunks(key, {0});
    CHECK(open_chunks(key, only_empty, {0}) == -1);
  }
  auto key = secret_key::generate();
  auto s = seal_chunks(key, {1000, 0, 512 * 1024, 17, 3});
  bool finished = false;
  CHECK(open_chunks(key, s, {0, 1, 2, 3, 4}, &finished) == -1);
  CHECK(finished);
}

TEST_CASE("sealed stream detects tampering, drops, reordering, truncation and extra chunks") {
  auto key = secret_key::generate();
  auto s = seal_chunks(key, {100, 200, 300, 400});

  SUBCASE("tampered chunk") {
    auto t = s;
    t.chunks[1][50] ^= 0x01;
    CHECK(open_chunks(key, t, {0, 1, 2, 3}) == 1);
  }
  SUBCASE("tampered tag byte") {
    auto t = s;
    t.chunks[0][0] ^= 0x80;
    CHECK(open_chunks(key, t, {0, 1, 2, 3}) == 0);
  }
  SUBCASE("dropped chunk") {
    CHECK(open_chunks(key, s, {0, 2, 3}) == 1);
  }
  SUBCASE("reordered chunks") {
    CHECK(open_chunks(key, s, {1, 0, 2, 3}) == 0);
  }
  SUBCASE("replayed chunk") {
    CHECK(open_chunks(key, s, {0, 0, 1}) == 1);
  }
  SUBCASE("truncated stream without its final chunk") {
    bool finished = true;
    CHECK(open_chunks(key, s, {0, 1, 2}, &finished) == -1);
    CHECK_FALSE(finished);
  }
  SUBCASE("truncated chunk bytes") {
    auto t = s;
    t.chunks[3].resize(t.chunks[3].size() - 1);
    CHECK(open_chunks(key, t, {0, 1, 2, 3}) == 3);
    t.chunks[3].resize(seal_overhead - 1);
    CHECK(open_chunks(key, t, {0, 1, 2, 3}) == 3);
  }
  SUBCASE("wrong key or header") {
    CHECK(open_chunks(secret_key::generate(), s, {0}) == 0);
    auto t = s;
    t.header[3] ^= 1;
    CHECK(open_chunks(key, t, {0}) == 0);
    CHECK_FALSE(open_stream::create(key, std::span<const uint8_t>(s.header).first(23)));
  }
  SUBCASE("pulling after the final chunk is an error, and a failed stream stays failed") {
    auto stream = open_stream::create(key, s.header);
    REQUIRE(stream);
    std::vector<uint8_t> out;
    bool fin = false;
    for (size_t i = 0; i < 4; ++i) REQUIRE(stream->pull(s.chunks[i], out, fin));
    CHECK(fin);
    auto extra = stream->pull(s.chunks[3], out, fin);
    REQUIRE_FALSE(extra);
    CHECK(extra.error().code == errc::crypto_failed);
    CHECK_FALSE(fin);

    auto s2 = open_stream::create(key, s.header);
    REQUIRE(s2);
    CHECK_FALSE(s2->pull(s.chunks[1], out, fin));  // out of order: fails
    CHECK_FALSE(s2->pull(s.chunks[0], out, fin));  // and the stream is now dead
  }
}

TEST_CASE("push after final is wrong_state; push/pull reuse buffer capacity") {
  auto key = secret_key::generate();
  seal_header header{};
  auto stream = seal_stream::create(key, header);
  REQUIRE(stream);
  auto opener = open_stream::create(key, header);
  REQUIRE(opener);
  std::vector<uint8_t> plain(512 * 1024, 0x5a);
  std::vector<uint8_t> cipher;
  std::vector<uint8_t> back;
  cipher.reserve(plain.size() + seal_overhead);
  back.reserve(plain.size());
  const uint8_t* cipher_buf = cipher.data();
  const uint8_t* back_buf = back.data();
  for (int i = 0; i < 4; ++i) {
    bool last = i == 3;
    REQUIRE(stream->push(plain, last, cipher));
    bool fin = false;
    REQUIRE(opener->pull(cipher, back, fin));
    CHECK(fin == last);
    CHECK(back == plain);
  }
  CHECK(cipher.data() == cipher_buf);  // no reallocation
  CHECK(back.data() == back_buf);
  auto r = stream->push(plain, false, cipher);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::wrong_state);
}

TEST_CASE("wrap/unwrap round trip for every key type; another key cannot unwrap") {
  for (key_type t : {key_type::ed25519, key_type::ecdsa_p256, key_type::rsa}) {
    CAPTURE(to_string(t));
    const private_key& owner = wrap_key_of(t);
    auto key = secret_key::generate();
    auto wrapped = wrap_key(owner.public_key(), key);
    REQUIRE(wrapped);
    switch (t) {
      case key_type::ed25519:
        CHECK(wrapped->size() == 1 + 48 + 32);
        CHECK((*wrapped)[0] == wrap_tag_ed25519);
        break;
      case key_type::ecdsa_p256:
        CHECK(wrapped->size() == 1 + 65 + 24 + 48);
        CHECK((*wrapped)[0] == wrap_tag_p256);
        break;
      case key_type::rsa:
        CHECK(wrapped->size() == 1 + 256);
        CHECK((*wrapped)[0] == wrap_tag_rsa);
        break;
    }
    auto back = unwrap_key(owner, *wrapped);
    REQUIRE(back);
    CHECK(constant_time_equal(back->bytes(), key.bytes()));

    // Wrapping is randomised.
    auto wrapped2 = wrap_key(owner.public_key(), key);
    REQUIRE(wrapped2);
    CHECK(*wrapped2 != *wrapped);

    auto other = unwrap_key(wrap_key_of(t, 1), *wrapped);
    REQUIRE_FALSE(other);
    CHECK(other.error().code == errc::crypto_failed);

    auto damaged = *wrapped;
    damaged[damaged.size() - 5] ^= 0x10;
    CHECK_FALSE(unwrap_key(owner, damaged));
    CHECK_FALSE(unwrap_key(owner, std::span<const uint8_t>(*wrapped).first(wrapped->size() - 1)));
    CHECK_FALSE(unwrap_key(owner, {}));

    key_type different = t == key_type::ed25519 ? key_type::ecdsa_p256 : key_type::ed25519;
    auto cross = unwrap_key(wrap_key_of(different), *wrapped);
    REQUIRE_FALSE(cross);
    CHECK(cross.error().code == errc::crypto_failed);
  }
}

TEST_CASE("P-256 unwrap rejects an ephemeral point that is not on the curve") {
  const private_key& owner = wrap_key_of(key_type::ecdsa_p256);
  auto wrapped = wrap_key(owner.public_key(), secret_key::generate());
  REQUIRE(wrapped);
  auto bad = *wrapped;
  bad[10] ^= 0x01;  // inside the ephemeral point's X coordinate
  auto r = unwrap_key(owner, bad);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::crypto_failed);
}

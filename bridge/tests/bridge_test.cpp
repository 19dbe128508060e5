#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "cove/bridge/channel.hpp"
#include "cove/bridge/frame.hpp"
#include "cove/bridge/server.hpp"
#include "cove/bridge/tls.hpp"
#include "cove/bus/envelope.hpp"
#include "cove/test/process.hpp"

using namespace cove;
using namespace cove::bridge;
using namespace std::chrono_literals;

namespace {

std::vector<uint8_t> enc(const frame& f) {
  std::vector<uint8_t> out;
  REQUIRE(encode(f, out));
  return out;
}

void check_same(const frame& a, const frame& b) {
  CHECK(a.kind == b.kind);
  CHECK(a.sid == b.sid);
  CHECK(a.subject == b.subject);
  CHECK(a.reply == b.reply);
  CHECK(a.data == b.data);
}

/// Both ends of one TLS 1.3 session over a socketpair.
struct tls_pair {
  test::temp_dir dir{"cove-bridge-test"};
  ssl_ctx server_ctx, client_ctx;
  ssl_ptr server, client;
  int server_fd = -1, client_fd = -1;

  explicit tls_pair(bool trusted_ca = true) {
    auto id = ensure_identity(dir.path() / "bridge");
    REQUIRE(id);
    auto sc = server_context(*id);
    REQUIRE(sc);
    server_ctx = std::move(*sc);
    auto ca = id->cert;
    if (!trusted_ca) {
      auto other = ensure_identity(dir.path() / "other");
      REQUIRE(other);
      ca = other->cert;
    }
    auto cc = client_context(ca);
    REQUIRE(cc);
    client_ctx = std::move(*cc);
    std::array<int, 2> fds{};
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds.data()) == 0);
    server_fd = fds[0];
    client_fd = fds[1];
    server.reset(SSL_new(server_ctx.get()));
    client.reset(SSL_new(client_ctx.get()));
    SSL_set_fd(server.get(), server_fd);
    SSL_set_fd(client.get(), client_fd);
    SSL_set1_host(client.get(), std::string(bridge_tls_name).c_str());
  }
  ~tls_pair() {
    if (server_fd >= 0) ::close(server_fd);
    if (client_fd >= 0) ::close(client_fd);
  }
  /// Runs both handshakes; returns (server ok, client ok).
  std::pair<bool, bool> handshake_both() {
    auto s = std::async(std::launch::async,
                        [&] { return static_cast<bool>(handshake(server.get(), server_fd, true, 5s)); });
    bool c = static_cast<bool>(handshake(client.get(), client_fd, false, 5s));
    return {s.get(), c};
  }
};

}  // namespace

TEST_CASE("every frame kind round-trips through encode and the stream decoder") {
  std::vector<frame> frames = {
      {.kind = op::hello, .data = {1, 2, 3}},
      {.kind = op::welcome, .sid = 3600, .data = {'4', '2'}},
      {.kind = op::refuse, .data = {'n', 'o'}},
      {.kind = op::sub, .sid = 7, .subject = "cove.v1.cvm.cvm-1.upload"},
      {.kind = op::unsub, .sid = 7},
      {.kind = op::pub, .subject = "cove.v1.cvm.cvm-1.events", .data = std::vector<uint8_t>(1 << 20, 0xab)},
      {.kind = op::msg, .sid = 9, .subject = "cove.v1.cvm.cvm-1.chunk", .reply = "_INBOX.a.1", .data = {9}},
      {.kind = op::err, .data = {'x'}},
      {.kind = op::ping, .sid = 5},
      {.kind = op::pong, .sid = 5},
      {.kind = op::close, .data = {}},
  };
  std::vector<uint8_t> stream;
  for (const auto& f : frames) {
    auto e = enc(f);
    stream.insert(stream.end(), e.begin(), e.end());
  }
  decoder dec;
  // Byte-sized pieces at the start, then the rest at once: reassembly must not care.
  for (size_t i = 0; i < 40; ++i) dec.feed({stream.data() + i, 1});
  dec.feed({stream.data() + 40, stream.size() - 40});
  for (const auto& want : frames) {
    auto got = dec.next();
    REQUIRE(got);
    REQUIRE(got->has_value());
    check_same(**got, want);
  }
  auto end = dec.next();
  REQUIRE(end);
  CHECK_FALSE(end->has_value());
}

TEST_CASE("want/got: the decoder takes bytes where they belong, a payload straight into its frame") {
  std::vector<frame> frames = {
      {.kind = op::msg,
       .sid = 2,
       .subject = "cove.v1.cvm.c.chunk",
       .reply = "",
       .data = std::vector<uint8_t>(70000, 7)},
      {.kind = op::pong, .sid = 4},
      {.kind = op::pub, .subject = "", .data = {}},
      {.kind = op::msg, .sid = 3, .subject = "s", .reply = "r", .data = {1, 2, 3}},
  };
  std::vector<uint8_t> stream;
  for (const auto& f : frames) {
    auto e = enc(f);
    stream.insert(stream.end(), e.begin(), e.end());
  }
  decoder dec;
  std::vector<frame> got;
  size_t at = 0, step = 1;
  while (at < stream.size()) {
    auto into = dec.want();
    REQUIRE_FALSE(into.empty());
    // Never more than the rest of the current frame: a reader using want() cannot
    // consume bytes of the next one.
    size_t n = std::min({into.size(), stream.size() - at, step});
    std::memcpy(into.data(), stream.data() + at, n);
    at += n;
    step = step * 3 + 1;
    auto f = dec.got(n);
    REQUIRE(f);
    if (*f) {
      // A frame completes exactly at its own end.
      size_t end = 0;
      for (size_t i = 0; i <= got.size(); ++i) end += enc(frames[i]).size();
      CHECK(at == end);
      got.push_back(std::move(**f));
    }
  }
  REQUIRE(got.size() == frames.size());
  for (size_t i = 0; i < frames.size(); ++i) check_same(got[i], frames[i]);

  SUBCASE("an error comes from got() and sticks") {
    decoder bad;
    auto into = bad.want();
    REQUIRE(into.size() == 4);
    std::memset(into.data(), 0xff, 4);  // length 4 GiB - 1
    auto f = bad.got(4);
    REQUIRE_FALSE(f);
    CHECK(f.error().message.find("length") != std::string::npos);
    CHECK_FALSE(bad.got(1));
    CHECK_FALSE(bad.next());
  }
  SUBCASE("a subject longer than the frame is refused before its bytes arrive") {
    auto b = enc({.kind = op::sub, .sid = 1, .subject = "cove.v1.cvm.a.b"});
    b[3] -= 3;
    decoder d;
    d.feed({b.data(), 4 + 1 + 4 + 2});  // up to the subject's length field
    auto f = d.next();
    REQUIRE_FALSE(f);
    CHECK(f.error().message.find("truncated subject") != std::string::npos);
  }
}

TEST_CASE("malformed frames are refused with a reason") {
  SUBCASE("unknown op") {
    std::vector<uint8_t> b = {0, 0, 0, 1, 99};
    decoder d;
    d.feed(b);
    auto f = d.next();
    REQUIRE_FALSE(f);
    CHECK(f.error().message.find("unknown op 99") != std::string::npos);
  }
  SUBCASE("length zero or beyond the limit") {
    for (uint32_t len : {0u, max_frame_body + 1}) {
      std::vector<uint8_t> b = {static_cast<uint8_t>(len >> 24), static_cast<uint8_t>(len >> 16),
                                static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len)};
      decoder d;
      d.feed(b);
      auto f = d.next();
      REQUIRE_FALSE(f);
      CHECK(f.error().message.find("length") != std::string::npos);
    }
  }
  SUBCASE("truncated subject") {
    auto b = enc({.kind = op::sub, .sid = 1, .subject = "cove.v1.cvm.a.b"});
    b[3] -= 3;  // body shorter than the subject it announces
    b.resize(b.size() - 3);
    auto f = decode({b.data() + 4, b.size() - 4});
    REQUIRE_FALSE(f);
    CHECK(f.error().message.find("truncated subject") != std::string::npos);
  }
  SUBCASE("trailing bytes after a fixed-size frame") {
    auto b = enc({.kind = op::unsub, .sid = 1});
    b.push_back(0);
    auto f = decode({b.data() + 4, b.size() - 4});
    REQUIRE_FALSE(f);
    CHECK(f.error().message.find("trailing") != std::string::npos);
  }
  SUBCASE("oversized payload is not encoded") {
    std::vector<uint8_t> out;
    auto e = encode({.kind = op::pub, .subject = "s", .data = std::vector<uint8_t>(max_frame_body)}, out);
    REQUIRE_FALSE(e);
    CHECK(e.error().code == errc::too_large);
  }
}

TEST_CASE("both ends of a TLS 1.3 session derive the same channel binding; another session differs") {
  tls_pair a;
  auto [s_ok, c_ok] = a.handshake_both();
  REQUIRE(s_ok);
  REQUIRE(c_ok);
  auto sb = channel_binding(a.server.get());
  auto cb = channel_binding(a.client.get());
  REQUIRE(sb);
  REQUIRE(cb);
  CHECK(*sb == *cb);
  CHECK(*sb != std::array<uint8_t, 32>{});

  tls_pair b;
  auto [s2, c2] = b.handshake_both();
  REQUIRE((s2 && c2));
  CHECK(*channel_binding(b.client.get()) != *cb);
}

TEST_CASE("an agent that pins another certificate refuses the bridge") {
  tls_pair p(/*trusted_ca=*/false);
  auto [s_ok, c_ok] = p.handshake_both();
  CHECK_FALSE(c_ok);
  CHECK_FALSE(s_ok);
}

TEST_CASE("the bridge identity is generated once, key file 0600") {
  test::temp_dir dir("cove-bridge-id");
  auto a = ensure_identity(dir.path() / "b");
  REQUIRE(a);
  auto perms = std::filesystem::status(a->key).permissions();
  CHECK((perms & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
  std::ifstream f1(a->cert);
  std::string first((std::istreambuf_iterator<char>(f1)), {});
  auto b = ensure_identity(dir.path() / "b");
  REQUIRE(b);
  std::ifstream f2(b->cert);
  std::string second((std::istreambuf_iterator<char>(f2)), {});
  CHECK(first == second);
}

TEST_CASE("channels carry frames both ways in order, with back-pressure, and report the close reason") {
  tls_pair p;
  auto [s_ok, c_ok] = p.handshake_both();
  REQUIRE((s_ok && c_ok));
  std::mutex mu;
  std::vector<frame> at_server, at_client;
  std::promise<std::string> server_closed, client_closed;
  int sfd = p.server_fd, cfd = p.client_fd;
  p.server_fd = p.client_fd = -1;  // the channels own them now
  auto server = channel::start(std::move(p.server), sfd,
                               {.on_frame =
                                    [&](frame&& f) {
                                      std::lock_guard lock(mu);
                                      at_server.push_back(std::move(f));
                                    },
                                .on_closed = [&](const std::string& why) { server_closed.set_value(why); }},
                               {.max_queued_bytes = 1 << 20}, decoder{});
  auto client = channel::start(std::move(p.client), cfd,
                               {.on_frame =
                                    [&](frame&& f) {
                                      std::lock_guard lock(mu);
                                      at_client.push_back(std::move(f));
                                    },
                                .on_closed = [&](const std::string& why) { client_closed.set_value(why); }},
                               {.max_queued_bytes = 1 << 20}, decoder{});
  constexpr uint32_t n = 64;
  std::thread sender([&] {
    for (uint32_t i = 0; i < n; ++i)
      REQUIRE(client->send({.kind = op::pub,
                            .subject = "s." + std::to_string(i),
                            .data = std::vector<uint8_t>(256 * 1024, static_cast<uint8_t>(i))}));
  });
  for (uint32_t i = 0; i < n; ++i)
    REQUIRE(server->send({.kind = op::msg, .sid = i, .subject = "m", .data = {1}}));
  sender.join();
  bool all = test::wait_until(
      [&] {
        std::lock_guard lock(mu);
        return at_server.size() == n && at_client.size() == n;
      },
      test::deadline_in(20s));
  REQUIRE(all);
  for (uint32_t i = 0; i < n; ++i) {
    CHECK(at_server[i].subject == "s." + std::to_string(i));
    CHECK(at_server[i].data.size() == 256 * 1024);
    CHECK(at_server[i].data[1000] == static_cast<uint8_t>(i));
    CHECK(at_client[i].sid == i);
  }
  server->close("policy changed", frame{.kind = op::close, .data = {'p'}});
  auto sf = server_closed.get_future();
  auto cf = client_closed.get_future();
  REQUIRE(sf.wait_for(10s) == std::future_status::ready);
  REQUIRE(cf.wait_for(10s) == std::future_status::ready);
  CHECK(sf.get() == "policy changed");
  CHECK(cf.get() == "the peer closed the link");
  {
    std::lock_guard lock(mu);
    REQUIRE(at_client.size() == n + 1);
    CHECK(at_client.back().kind == op::close);
  }
  auto after = client->send({.kind = op::ping, .sid = 1});
  REQUIRE_FALSE(after);
  CHECK(after.error().code == errc::unavailable);
}

TEST_CASE("a channel closes itself when its admission expires, telling the peer why") {
  tls_pair p;
  auto [s_ok, c_ok] = p.handshake_both();
  REQUIRE((s_ok && c_ok));
  std::promise<std::string> closed;
  std::promise<frame> last;
  int sfd = p.server_fd, cfd = p.client_fd;
  p.server_fd = p.client_fd = -1;
  auto server = channel::start(
      std::move(p.server), sfd,
      {.on_frame = [](frame&&) {}, .on_closed = [&](const std::string& w) { closed.set_value(w); }},
      {.close_at = std::chrono::steady_clock::now() + 200ms, .expiry_reason = "expired"}, decoder{});
  auto client = channel::start(std::move(p.client), cfd,
                               {.on_frame =
                                    [&](frame&& f) {
                                      if (f.kind == op::close) last.set_value(std::move(f));
                                    },
                                .on_closed = [](const std::string&) {}},
                               {}, decoder{});
  auto lf = last.get_future();
  REQUIRE(lf.wait_for(10s) == std::future_status::ready);
  auto f = lf.get();
  CHECK(std::string(f.data.begin(), f.data.end()) == "expired");
  auto cf = closed.get_future();
  REQUIRE(cf.wait_for(10s) == std::future_status::ready);
  CHECK(cf.get() == "expired");
}

TEST_CASE("an agent's event passes only when it names the agent's own CVM") {
  auto event = [](const char* cvm) {
    flatbuffers::FlatBufferBuilder b(256);
    auto ev = v1::CreateEventDirect(b, "computation", cvm, "run", "Complete", "", 0);
    return bus::finish(b, ev, {}, "agent");
  };
  CHECK_FALSE(forged_event(event("cvm-a"), "cvm-a"));
  auto other = forged_event(event("cvm-b"), "cvm-a");
  REQUIRE(other);
  CHECK(*other == "an Event for CVM 'cvm-b' from the agent of cvm-a");
  // The claimed id is untrusted text: not echoed unless it is a valid id.
  auto bad = forged_event(event("cvm-b.>"), "cvm-a");
  REQUIRE(bad);
  CHECK(*bad == "an Event for CVM '<invalid id>' from the agent of cvm-a");
  CHECK(forged_event(event(nullptr), "cvm-a"));  // no cvm_id at all
  std::vector<uint8_t> junk = {1, 2, 3};
  auto not_event = forged_event(junk, "cvm-a");
  REQUIRE(not_event);
  CHECK(not_event->starts_with("not an Event"));
  flatbuffers::FlatBufferBuilder b(64);
  auto wrong_body = bus::finish(b, v1::CreateCvmRef(b, b.CreateString("cvm-a")), {}, "agent");
  CHECK(forged_event(wrong_body, "cvm-a"));
}

#include "cove/bridge/server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <future>
#include <set>
#include <unordered_set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/schemas/bridge_generated.h"

namespace cove::bridge {

using clock = std::chrono::steady_clock;

struct server::session {
  uint64_t id = 0;
  std::string cvm_id;
  std::string peer;
  std::shared_ptr<channel> link;
  std::mutex mu;
  std::map<uint32_t, bus::subscription> subs;  // sid -> the bus subscription relaying to it
  std::unordered_set<std::string> replies;     // reply subjects handed to the agent, unanswered
  std::deque<std::string> reply_order;         // oldest first, for eviction

  /// Unsubscribes everything. The subscriptions are destroyed outside `mu`: each waits
  /// for its handler, which takes `mu`.
  void drop_subscriptions() {
    std::map<uint32_t, bus::subscription> gone;
    {
      std::lock_guard lock(mu);
      gone.swap(subs);
    }
  }
};

namespace {

constexpr std::string_view sender = "coved.bridge";

expected<std::pair<int, std::string>> listen_on(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos)
    return make_error(errc::invalid_request, "--bridge-listen: expected HOST:PORT");
  std::string host = address.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(address.substr(colon + 1));
  } catch (const std::exception&) {
    return make_error(errc::invalid_request, "--bridge-listen: bad port in '" + address + "'");
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1)
    return make_error(errc::invalid_request, "--bridge-listen: '" + host + "' is not an IPv4 address");
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(errc::internal, std::string("bridge socket: ") + std::strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 128) != 0) {
    auto msg = fmt::format("bridge: cannot listen on {}: {}", address, std::strerror(errno));
    ::close(fd);
    return make_error(errc::unavailable, msg);
  }
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  return std::pair{fd, fmt::format("{}:{}", host, ntohs(sa.sin_port))};
}

}  // namespace

std::optional<std::string> forged_event(std::span<const uint8_t> data, std::string_view cvm_id) {
  auto ev = bus::body_as<v1::Event>(data);
  if (!ev) return "not an Event (" + ev.error().message + ")";
  std::string_view claimed = (*ev)->cvm_id() ? (*ev)->cvm_id()->string_view() : std::string_view();
  if (claimed != cvm_id) {
    // The claimed id is untrusted: shown only when it is a well-formed id.
    return fmt::format("an Event for CVM '{}' from the agent of {}",
                       bus::valid_id(claimed) ? claimed : std::string_view("<invalid id>"), cvm_id);
  }
  return std::nullopt;
}

expected<std::unique_ptr<server>> server::start(server_config cfg, admit_fn admit) {
  if (!cfg.bus) return make_error(errc::invalid_request, "bridge: a bus connection is required");
  std::unique_ptr<server> s(new server());
  s->cfg_ = std::move(cfg);
  s->admit_ = std::move(admit);
  auto ctx = server_context(s->cfg_.identity);
  if (!ctx) return ctx.error();
  s->ctx_ = std::move(*ctx);
  auto l = listen_on(s->cfg_.listen);
  if (!l) return l.error();
  s->listen_fd_ = l->first;
  s->address_ = l->second;
  s->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  auto* raw = s.get();
  s->acceptor_ = std::thread([raw] { raw->accept_loop(); });
  spdlog::info("bridge: listening on {} (TLS 1.3)", s->address_);
  return s;
}

server::~server() {
  stopping_ = true;
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  if (acceptor_.joinable()) acceptor_.join();
  std::map<uint64_t, std::shared_ptr<session>> sessions;
  {
    std::unique_lock lock(mu_);
    for (auto& [id, fd] : handshaking_) ::shutdown(fd, SHUT_RDWR);
    handshakes_done_.wait(lock, [this] { return handshakes_ == 0; });
    sessions.swap(sessions_);
    by_cvm_.clear();
  }
  for (auto& [id, s] : sessions) {
    s->drop_subscriptions();  // no more bus deliveries
    s->link->close("the bridge is shutting down");
  }
  sessions.clear();  // joins each link's I/O thread
  {
    // Links that closed on their own and are still finishing on_closed.
    std::unique_lock lock(mu_);
    closings_done_.wait(lock, [this] { return closing_ == 0; });
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

server_stats server::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

size_t server::sessions() const {
  std::lock_guard lock(mu_);
  return sessions_.size();
}

void server::accept_loop() {
  while (!stopping_) {
    std::array<pollfd, 2> fds{pollfd{listen_fd_, POLLIN, 0}, pollfd{wake_fd_, POLLIN, 0}};
    if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) break;
    if (stopping_) break;
    if (!(fds[0].revents & POLLIN)) continue;
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&sa), &len, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::array<char, INET_ADDRSTRLEN> ip{};
    inet_ntop(AF_INET, &sa.sin_addr, ip.data(), ip.size());
    std::string peer = fmt::format("{}:{}", ip.data(), ntohs(sa.sin_port));
    uint64_t id = 0;
    {
      std::lock_guard lock(mu_);
      if (sessions_.size() + handshaking_.size() >= cfg_.max_sessions) {
        spdlog::warn("bridge: refusing {}: {} links already", peer, cfg_.max_sessions);
        ::close(fd);
        continue;
      }
      id = ++next_id_;
      handshaking_[id] = fd;
      ++handshakes_;
    }
    std::thread([this, fd, peer, id] { handle(fd, peer, id); }).detach();
  }
}

void server::handle(int fd, std::string peer, uint64_t id) {
  auto finish_handshake = [this, id] {
    std::lock_guard lock(mu_);
    handshaking_.erase(id);
    --handshakes_;
    handshakes_done_.notify_all();
  };
  ssl_ptr ssl{SSL_new(ctx_.get())};
  bool fd_owned = true;
  auto drop = [&](const std::string& why) {
    spdlog::info("bridge: link from {} dropped before admission: {}", peer, why);
    if (fd_owned) ::close(fd);
    finish_handshake();
  };
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) return drop("SSL_new");
  if (auto h = handshake(ssl.get(), fd, true, cfg_.handshake_timeout); !h) return drop(h.error().message);
  auto deadline = clock::now() + cfg_.handshake_timeout;
  decoder dec;
  auto first = read_frame(ssl.get(), fd, dec, deadline);
  if (!first) return drop(first.error().message);
  auto refuse = [&](const std::string& cvm_id, const std::string& why) {
    {
      std::lock_guard lock(mu_);
      ++stats_.refused;
    }
    spdlog::warn("bridge: refused {} ({}): {}", cvm_id.empty() ? "an agent" : cvm_id, peer, why);
    // The event first: the manager fails a pending create with this reason.
    if (!cvm_id.empty()) publish_event(cvm_id, "refused", why);
    std::vector<uint8_t> bytes;
    if (encode(frame{.kind = op::refuse, .data = {why.begin(), why.end()}}, bytes))
      (void)write_all(ssl.get(), fd, bytes, clock::now() + std::chrono::seconds(2));
    SSL_shutdown(ssl.get());
    drop("refused");
  };
  if (first->kind != op::hello) return refuse("", "protocol: the first frame must be hello");
  flatbuffers::Verifier v(first->data.data(), first->data.size(), 16, 4096);
  if (!v1::VerifyBridgeHelloBuffer(v)) return refuse("", "hello: not a valid BridgeHello");
  const auto* hello = v1::GetBridgeHello(first->data.data());
  std::string cvm_id = hello->cvm_id() ? hello->cvm_id()->str() : "";
  if (!bus::valid_id(cvm_id)) return refuse("", "hello: cvm_id must match [a-z0-9-]{1,64}");
  if (hello->evidence() == nullptr) return refuse(cvm_id, "hello: no evidence");
  auto exporter = channel_binding(ssl.get());
  if (!exporter) return refuse(cvm_id, exporter.error().message);

  hello_info info{.session = id, .cvm_id = cvm_id, .hello = first->data, .exporter = *exporter, .peer = peer};
  auto verdict_deadline = clock::now() + cfg_.admission_timeout;
  admission a;
  for (auto pause = std::chrono::milliseconds(50);;
       pause = std::min(pause * 2, std::chrono::milliseconds(500))) {
    auto verdict = std::make_shared<std::promise<admission>>();
    auto fut = verdict->get_future();
    admit_(info, [verdict](admission v) {
      try {
        verdict->set_value(std::move(v));
      } catch (const std::future_error&) {
        // decided twice: the first verdict stands
      }
    });
    // Waits in slices so a shutting-down bridge does not sit out the whole timeout.
    while (fut.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
      if (stopping_) return refuse(cvm_id, "the bridge is shutting down");
      if (clock::now() >= verdict_deadline)
        return refuse(cvm_id, "admission: no attestation verdict in time");
    }
    a = fut.get();
    // A service that is (re)starting answers nobody for a moment: ask again.
    if (a.admitted || !a.retryable || clock::now() + pause >= verdict_deadline) break;
    for (auto until = clock::now() + pause; clock::now() < until;) {
      if (stopping_) return refuse(cvm_id, "the bridge is shutting down");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (stopping_) return refuse(cvm_id, "the bridge is shutting down");
  if (!a.admitted) return refuse(cvm_id, a.reason);

  auto s = std::make_shared<session>();
  s->id = id;
  s->cvm_id = cvm_id;
  s->peer = peer;
  std::string session_name = fmt::format("{}", id);
  std::vector<uint8_t> welcome;
  (void)encode(frame{.kind = op::welcome,
                     .sid = static_cast<uint32_t>(a.valid_for.count()),
                     .data = {session_name.begin(), session_name.end()}},
               welcome);
  if (auto w = write_all(ssl.get(), fd, welcome, clock::now() + std::chrono::seconds(5)); !w)
    return drop(w.error().message);

  std::weak_ptr<session> weak = s;
  channel::callbacks cb{
      .on_frame =
          [this, weak](frame&& f) {
            if (auto sp = weak.lock()) on_agent_frame(sp, std::move(f));
          },
      .on_closed = [this, id](const std::string& why) { on_closed(id, why); },
  };
  channel::limits lim{.max_queued_bytes = cfg_.max_queued_bytes,
                      .close_at = clock::now() + a.valid_for,
                      .expiry_reason = "the evidence validity window ended; reconnect with fresh evidence"};
  // s->link is set before the I/O thread runs: the agent's first frames (a ping right
  // after its subscriptions) are answered through it. The session becomes visible to
  // close_cvm and the destructor only below, with its channel in place.
  channel::start(std::move(ssl), fd, std::move(cb), lim, std::move(dec),
                 [&s](const std::shared_ptr<channel>& c) { s->link = c; });
  fd_owned = false;
  std::shared_ptr<session> replaced;
  {
    std::lock_guard lock(mu_);
    ++stats_.admitted;
    if (closed_early_.erase(id) == 0) {  // else the link died before we got here
      if (auto it = by_cvm_.find(cvm_id); it != by_cvm_.end()) {
        auto old = sessions_.find(it->second);
        if (old != sessions_.end()) replaced = old->second;
      }
      sessions_[id] = s;
      by_cvm_[cvm_id] = id;
    }
  }
  if (replaced)
    replaced->link->close("replaced by a newer link of the same CVM", frame{.kind = op::close, .data = {}});
  spdlog::info("bridge: admitted {} from {}: {}", cvm_id, peer, a.reason);
  publish_event(cvm_id, "admitted", a.reason);
  finish_handshake();
}

void server::publish_event(const std::string& cvm_id, std::string_view state, const std::string& message) {
  flatbuffers::FlatBufferBuilder b(256);
  auto ev = v1::CreateEventDirect(b, "bridge", cvm_id.c_str(), "", std::string(state).c_str(),
                                  message.c_str(), bus::now_ns());
  if (auto r = cfg_.bus->publish(*bus::events_subject("bridge"), bus::finish(b, ev, {}, sender)); !r)
    spdlog::warn("bridge: event: {}", r.error().to_string());
}

void server::deny(const std::shared_ptr<session>& s, const std::string& what) {
  {
    std::lock_guard lock(mu_);
    ++stats_.denied_ops;
  }
  spdlog::warn("bridge: {} denied: {}", s->cvm_id, what);
  (void)s->link->send(frame{.kind = op::err, .data = {what.begin(), what.end()}},
                      std::chrono::milliseconds(0));
  publish_event(s->cvm_id, "denied", what);
}

void server::on_agent_frame(const std::shared_ptr<session>& s, frame&& f) {
  switch (f.kind) {
    case op::sub: {
      if (bus::cvm_id_of(f.subject) != s->cvm_id || !bus::cvm_leaf_of(f.subject))
        return deny(s, fmt::format("subscribe to '{}': outside cove.v1.cvm.{}.*", f.subject, s->cvm_id));
      std::weak_ptr<session> weak = s;
      auto sub = cfg_.bus->subscribe(f.subject, [this, weak, sid = f.sid](bus::message&& m) {
        if (auto sp = weak.lock()) on_bus_message(sp, sid, std::move(m));
      });
      if (!sub) return deny(s, fmt::format("subscribe to '{}': {}", f.subject, sub.error().message));
      std::lock_guard lock(s->mu);
      s->subs[f.sid] = std::move(*sub);
      return;
    }
    case op::unsub: {
      bus::subscription gone;  // destroyed (waiting for its handler) outside the lock
      std::lock_guard lock(s->mu);
      if (auto it = s->subs.find(f.sid); it != s->subs.end()) {
        gone = std::move(it->second);
        s->subs.erase(it);
      }
      return;
    }
    case op::pub: {
      bool allowed = bus::cvm_id_of(f.subject) == s->cvm_id && bus::cvm_leaf_of(f.subject).has_value();
      if (!allowed) {
        std::lock_guard lock(s->mu);
        if (s->replies.erase(f.subject) > 0) allowed = true;  // one answer per request
      }
      if (!allowed)
        return deny(s, fmt::format("publish to '{}': outside cove.v1.cvm.{}.* and not a pending reply",
                                   f.subject, s->cvm_id));
      if (bus::cvm_leaf_of(f.subject) == "events") {
        if (auto why = forged_event(f.data, s->cvm_id)) {
          {
            std::lock_guard lock(mu_);
            ++stats_.forged_events;
          }
          return deny(s, fmt::format("publish to '{}': {}", f.subject, *why));
        }
      }
      if (auto r = cfg_.bus->publish(f.subject, f.data); !r)
        spdlog::warn("bridge: {} publish {}: {}", s->cvm_id, f.subject, r.error().to_string());
      return;
    }
    case op::ping: {
      (void)cfg_.bus->flush(std::chrono::seconds(2));
      (void)s->link->send(frame{.kind = op::pong, .sid = f.sid}, std::chrono::milliseconds(0));
      return;
    }
    case op::pong:
      return;
    default:
      s->link->close(fmt::format("protocol: unexpected {} frame from the agent", to_string(f.kind)),
                     frame{.kind = op::close, .data = {}});
  }
}

void server::on_bus_message(const std::shared_ptr<session>& s, uint32_t sid, bus::message&& m) {
  frame f{.kind = op::msg, .sid = sid};
  {
    std::lock_guard lock(s->mu);
    if (!s->subs.count(sid)) return;  // unsubscribed meanwhile
    if (!m.reply.empty() && s->replies.insert(m.reply).second) {
      s->reply_order.push_back(m.reply);
      while (s->reply_order.size() > cfg_.max_pending_replies) {
        s->replies.erase(s->reply_order.front());
        s->reply_order.pop_front();
      }
    }
  }
  f.subject = std::move(m.subject);
  f.reply = std::move(m.reply);
  f.data = std::move(m.data);
  // Back-pressure: wait (bounded) for the agent to read; a stuck agent loses the message.
  if (auto r = s->link->send(std::move(f), std::chrono::seconds(2)); !r) {
    if (r.error().code == errc::timeout) {
      {
        std::lock_guard lock(mu_);
        ++stats_.dropped;
      }
      publish_event(s->cvm_id, "dropped", "a message to the agent was dropped: it did not read for 2 s");
    }
  }
}

void server::on_closed(uint64_t id, const std::string& reason) {
  std::shared_ptr<session> s;
  // Counted under mu_ together with the erase: the destructor waits for every link
  // that left sessions_ this way, so `this` outlives the rest of this function.
  auto done = [this] {
    std::lock_guard lock(mu_);
    --closing_;
    closings_done_.notify_all();
  };
  {
    std::lock_guard lock(mu_);
    ++closing_;
    auto it = sessions_.find(id);
    if (it == sessions_.end()) {  // shutting down (the destructor owns it), or not registered yet
      closed_early_.insert(id);
      --closing_;
      closings_done_.notify_all();
      return;
    }
    s = it->second;
    sessions_.erase(it);
    if (auto c = by_cvm_.find(s->cvm_id); c != by_cvm_.end() && c->second == id) by_cvm_.erase(c);
  }
  s->drop_subscriptions();
  spdlog::info("bridge: link of {} closed: {}", s->cvm_id, reason);
  if (!stopping_) publish_event(s->cvm_id, "closed", reason);
  // `s` (and its channel) may be the last reference: released on this I/O thread,
  // which the channel destructor detects (no self-join).
  s.reset();
  done();
}

void server::close_cvm(const std::string& cvm_id, const std::string& reason) {
  std::shared_ptr<session> s;
  {
    std::lock_guard lock(mu_);
    auto it = by_cvm_.find(cvm_id);
    if (it == by_cvm_.end()) return;
    auto sit = sessions_.find(it->second);
    if (sit == sessions_.end()) return;
    s = sit->second;
  }
  s->link->close(reason, frame{.kind = op::close, .data = {reason.begin(), reason.end()}});
}

}  // namespace cove::bridge

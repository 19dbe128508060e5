#include "cove/bridge/client.hpp"

#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace cove::bridge {

using clock = std::chrono::steady_clock;

expected<std::unique_ptr<client>> client::connect(client_config cfg, hello_fn hello, state_fn on_state) {
  std::unique_ptr<client> c(new client());
  c->cfg_ = std::move(cfg);
  c->hello_ = std::move(hello);
  c->on_state_ = std::move(on_state);
  auto ctx = client_context(c->cfg_.ca_file);
  if (!ctx) return ctx.error();
  c->ctx_ = std::move(*ctx);
  if (auto e = c->establish(); !e) return e.error();
  c->supervisor_ = std::thread([raw = c.get()] { raw->supervise(); });
  return c;
}

client::~client() {
  std::shared_ptr<channel> link;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    link = std::move(link_);
  }
  cv_.notify_all();
  if (supervisor_.joinable()) supervisor_.join();
  if (link) link->close("the agent is shutting down");
  link.reset();  // joins the I/O thread
}

expected<void> client::establish() {
  auto fd = dial_tcp(cfg_.address, std::chrono::milliseconds(5000));
  if (!fd) return fd.error();
  ssl_ptr ssl{SSL_new(ctx_.get())};
  if (!ssl || SSL_set_fd(ssl.get(), *fd) != 1 ||
      SSL_set1_host(ssl.get(), std::string(bridge_tls_name).c_str()) != 1) {
    ::close(*fd);
    return make_error(errc::internal, ssl_error_text("bridge: SSL_new"));
  }
  SSL_set_tlsext_host_name(ssl.get(), std::string(bridge_tls_name).c_str());
  auto fail = [&](const error& e) -> expected<void> {
    ::close(*fd);
    return e;
  };
  if (auto h = handshake(ssl.get(), *fd, false, cfg_.handshake_timeout); !h) return fail(h.error());
  auto exporter = channel_binding(ssl.get());
  if (!exporter) return fail(exporter.error());
  auto hello = hello_(*exporter);
  if (!hello) return fail(hello.error());
  std::vector<uint8_t> bytes;
  if (auto e = encode(frame{.kind = op::hello, .data = std::move(*hello)}, bytes); !e) return fail(e.error());
  auto deadline = clock::now() + cfg_.handshake_timeout;
  if (auto w = write_all(ssl.get(), *fd, bytes, deadline); !w) return fail(w.error());
  decoder dec;
  auto answer = read_frame(ssl.get(), *fd, dec, deadline);
  if (!answer) return fail(answer.error());
  if (answer->kind == op::refuse) {
    std::string why(answer->data.begin(), answer->data.end());
    if (on_state_) on_state_("refused", why);
    return fail(error{errc::attestation_failed, "the bridge refused this agent: " + why});
  }
  if (answer->kind != op::welcome)
    return fail(error{errc::invalid_request,
                      fmt::format("bridge: expected welcome, got {}", to_string(answer->kind))});

  channel::callbacks cb{
      .on_frame = [this](frame&& f) { on_frame(std::move(f)); },
      .on_closed =
          [this](const std::string& why) {
            {
              std::lock_guard lock(mu_);
              down_ = true;
            }
            cv_.notify_all();
            if (on_state_) on_state_("closed", why);
          },
  };
  std::string detail = fmt::format("admitted for {} s", answer->sid);
  std::lock_guard lock(mu_);
  down_ = false;
  link_ = channel::start(std::move(ssl), *fd, std::move(cb), channel::limits{}, std::move(dec));
  ++links_;
  for (const auto& [sid, sub] : subs_)
    (void)link_->send(frame{.kind = op::sub, .sid = sid, .subject = sub.first});
  if (on_state_) on_state_("admitted", detail);
  return ok();
}

void client::supervise() {
  auto wait = cfg_.reconnect_wait;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || down_; });
      if (stopping_) return;
    }
    // The old link's thread has finished its on_closed: release it before dialing.
    std::shared_ptr<channel> old;
    {
      std::lock_guard lock(mu_);
      old = std::move(link_);
    }
    old.reset();
    auto e = establish();
    if (e) {
      wait = cfg_.reconnect_wait;
      continue;
    }
    spdlog::warn("bridge: reconnect failed: {}; retrying in {} ms", e.error().to_string(), wait.count());
    std::unique_lock lock(mu_);
    down_ = true;
    if (cv_.wait_for(lock, wait, [this] { return stopping_; })) return;
    wait = std::min(wait * 2, cfg_.reconnect_wait_max);
  }
}

void client::on_frame(frame&& f) {
  switch (f.kind) {
    case op::msg: {
      handler h;
      {
        std::lock_guard lock(mu_);
        auto it = subs_.find(f.sid);
        if (it == subs_.end()) return;
        h = it->second.second;
      }
      h(bus::message{
          .subject = std::move(f.subject), .reply = std::move(f.reply), .data = std::move(f.data)});
      return;
    }
    case op::pong: {
      {
        std::lock_guard lock(mu_);
        last_pong_ = std::max(last_pong_, f.sid);
      }
      cv_.notify_all();
      return;
    }
    case op::ping: {
      std::shared_ptr<channel> link;
      {
        std::lock_guard lock(mu_);
        link = link_;
      }
      if (link) (void)link->send(frame{.kind = op::pong, .sid = f.sid}, std::chrono::milliseconds(0));
      return;
    }
    case op::err:
      spdlog::warn("bridge refused an operation: {}", std::string(f.data.begin(), f.data.end()));
      return;
    case op::close:
      spdlog::info("bridge closes the link: {}", std::string(f.data.begin(), f.data.end()));
      return;
    default:
      spdlog::warn("bridge: unexpected {} frame", to_string(f.kind));
  }
}

expected<void> client::subscribe(const std::string& subject, handler h) {
  std::shared_ptr<channel> link;
  uint32_t sid = 0;
  {
    std::lock_guard lock(mu_);
    sid = ++next_sid_;
    subs_[sid] = {subject, std::move(h)};
    link = link_;
  }
  if (!link) return make_error(errc::unavailable, "bridge link down");
  return link->send(frame{.kind = op::sub, .sid = sid, .subject = subject});
}

expected<void> client::publish(std::string_view subject, std::span<const uint8_t> data) {
  std::shared_ptr<channel> link;
  {
    std::lock_guard lock(mu_);
    if (!down_) link = link_;
  }
  if (!link) return make_error(errc::unavailable, "bridge link down");
  return link->send(
      frame{.kind = op::pub, .subject = std::string(subject), .data = {data.begin(), data.end()}});
}

expected<void> client::flush(std::chrono::milliseconds timeout) {
  std::shared_ptr<channel> link;
  uint32_t id = 0;
  {
    std::lock_guard lock(mu_);
    if (!down_) link = link_;
    id = ++next_ping_;
  }
  if (!link) return make_error(errc::unavailable, "bridge link down");
  if (auto s = link->send(frame{.kind = op::ping, .sid = id}, timeout); !s) return s;
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return last_pong_ >= id || stopping_; }))
    return make_error(errc::timeout, "bridge flush: no pong in time");
  return ok();
}

bool client::connected() const {
  std::lock_guard lock(mu_);
  return link_ && !down_;
}

uint64_t client::links() const {
  std::lock_guard lock(mu_);
  return links_;
}

}  // namespace cove::bridge

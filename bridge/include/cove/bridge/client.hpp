#pragma once
// The agent's end of the bridge: a bus-like API (subscribe, publish, flush) over one
// attested TLS link, re-established with fresh evidence whenever the bridge closes it
// (evidence expiry, policy change, bridge restart). The agent never holds NATS
// credentials: this link is its only way onto the bus.
#include <array>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include "cove/bridge/channel.hpp"
#include "cove/bus/message.hpp"
#include "cove/expected.hpp"

namespace cove::bridge {

struct client_config {
  std::string address;                                 // the bridge, "host:port"
  std::filesystem::path ca_file;                       // the bridge certificate the agent pins
  std::chrono::milliseconds handshake_timeout{45000};  // TLS + attestation verdict
  std::chrono::milliseconds reconnect_wait{100};       // first retry; doubles up to the cap
  std::chrono::milliseconds reconnect_wait_max{5000};
};

/// Builds the BridgeHello for a new link, binding `exporter` into the evidence.
using hello_fn = std::function<expected<std::vector<uint8_t>>(const std::array<uint8_t, 32>& exporter)>;

class client {
 public:
  using handler = std::function<void(bus::message&&)>;
  /// Called on link changes: ("admitted", detail), ("closed", reason), ("refused", reason).
  using state_fn = std::function<void(std::string_view state, const std::string& detail)>;

  /// Dials and runs the attested handshake once; an error (refused, unreachable) is
  /// returned as is. Later losses of the link are repaired in the background.
  static expected<std::unique_ptr<client>> connect(client_config cfg, hello_fn hello, state_fn on_state = {});
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  /// Subscribes to an exact subject (kept across reconnects). `h` runs on the link's
  /// I/O thread and must only hand off.
  expected<void> subscribe(const std::string& subject, handler h);
  /// errc::unavailable while the link is down.
  expected<void> publish(std::string_view subject, std::span<const uint8_t> data);
  /// Everything published before has reached the bus (ping → bridge flush → pong).
  expected<void> flush(std::chrono::milliseconds timeout);

  [[nodiscard]] bool connected() const;
  [[nodiscard]] uint64_t links() const;  // successful admissions so far

 private:
  client() = default;
  expected<void> establish();
  void supervise();
  void on_frame(frame&& f);

  client_config cfg_;
  hello_fn hello_;
  state_fn on_state_;
  ssl_ctx ctx_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<channel> link_;
  bool down_ = false;  // the link closed; the supervisor reconnects
  bool stopping_ = false;
  uint64_t links_ = 0;
  uint32_t next_sid_ = 0;
  std::map<uint32_t, std::pair<std::string, handler>> subs_;
  uint32_t next_ping_ = 0;
  uint32_t last_pong_ = 0;
  std::thread supervisor_;
};

}  // namespace cove::bridge

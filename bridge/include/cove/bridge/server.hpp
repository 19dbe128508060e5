#pragma once
// The bridge service's TLS front: accepts agents, runs the attested handshake
// (hello → admission → welcome/refuse) and then relays, for each admitted agent,
// exactly its own CVM's subjects (cove.v1.cvm.<id>.<leaf>) plus one reply per
// request it was handed. Everything else an agent sends is refused with an `err`
// frame and a cove.v1.events.bridge event. See bridge/README.md.
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cove/bridge/channel.hpp"
#include "cove/bridge/tls.hpp"
#include "cove/bus/connection.hpp"
#include "cove/bus/subscription.hpp"

namespace cove::bridge {

/// What an agent presented, for the admission decision.
struct hello_info {
  uint64_t session = 0;
  std::string cvm_id;                  // as claimed in the hello (validated syntax)
  std::vector<uint8_t> hello;          // the BridgeHello FlatBuffer (verified)
  std::array<uint8_t, 32> exporter{};  // this TLS session's channel binding
  std::string peer;                    // "ip:port"
};

struct admission {
  bool admitted = false;
  std::string reason;                    // refusal reason, or a summary when admitted
  std::chrono::seconds valid_for{3600};  // the link closes after it; the agent re-attests
  bool retryable = false;                // refused only because a service did not answer yet
};

/// Decides asynchronously: `decide` must be called exactly once, from any thread.
using admit_fn = std::function<void(const hello_info&, std::function<void(admission)> decide)>;

struct server_config {
  std::string listen = "127.0.0.1:0";  // port 0: a free port (see server::address())
  tls_identity identity;
  /// Its own connection (no echo, shared delivery threads): one exact subscription per
  /// subject an admitted agent subscribes to, so a request to a CVM without a live agent
  /// still gets NATS's "no responders" at once.
  std::shared_ptr<bus::connection> bus;
  std::chrono::milliseconds handshake_timeout{10000};  // TLS + hello
  std::chrono::milliseconds admission_timeout{30000};  // attestation verdict
  size_t max_sessions = 4096;
  size_t max_queued_bytes = 32u << 20;  // per agent link, bridge → agent
  size_t max_pending_replies = 4096;    // reply subjects an agent may still answer
};

struct server_stats {
  uint64_t admitted = 0;
  uint64_t refused = 0;
  uint64_t denied_ops = 0;     // publish/subscribe outside the CVM's subjects
  uint64_t dropped = 0;        // messages dropped because an agent did not read in time
  uint64_t forged_events = 0;  // events naming another CVM (or not Events) on the agent's events subject
};

/// Why `data`, published by the agent admitted as `cvm_id` on its
/// cove.v1.cvm.<cvm_id>.events subject, is refused: it is not a valid Event
/// envelope, or its cvm_id is not the agent's own (an agent speaking for another
/// CVM). nullopt: it may pass.
std::optional<std::string> forged_event(std::span<const uint8_t> data, std::string_view cvm_id);

class server {
 public:
  static expected<std::unique_ptr<server>> start(server_config cfg, admit_fn admit);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// "host:port" the bridge listens on.
  [[nodiscard]] const std::string& address() const { return address_; }
  /// Closes the link of `cvm_id`'s agent (if any) with `reason` in a close frame.
  void close_cvm(const std::string& cvm_id, const std::string& reason);
  [[nodiscard]] server_stats stats() const;
  [[nodiscard]] size_t sessions() const;

  struct session;

 private:
  server() = default;
  void accept_loop();
  void handle(int fd, std::string peer, uint64_t id);
  void on_bus_message(const std::shared_ptr<session>& s, uint32_t sid, bus::message&& m);
  void on_agent_frame(const std::shared_ptr<session>& s, frame&& f);
  void on_closed(uint64_t id, const std::string& reason);
  void publish_event(const std::string& cvm_id, std::string_view state, const std::string& message);
  void deny(const std::shared_ptr<session>& s, const std::string& what);

  server_config cfg_;
  admit_fn admit_;
  ssl_ctx ctx_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::string address_;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;

  mutable std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<session>> sessions_;  // admitted
  std::map<std::string, uint64_t> by_cvm_;
  std::set<uint64_t> closed_early_;      // links whose on_closed ran before they were registered
  std::map<uint64_t, int> handshaking_;  // fd of links not admitted yet (shut down on stop)
  std::condition_variable handshakes_done_;
  size_t handshakes_ = 0;  // detached handshake threads still running
  std::condition_variable closings_done_;
  size_t closing_ = 0;  // on_closed calls still running
  uint64_t next_id_ = 0;
  server_stats stats_;
};

}  // namespace cove::bridge

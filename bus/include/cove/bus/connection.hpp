#pragma once
// RAII NATS connection (nats.c 3.4.1): publish, subscribe, blocking and
// non-blocking request/reply with deadlines, and error mapping to cove::errc.
//
// Threading: subscription handlers and request_async completions run on NATS
// library threads (one per subscription) or on this connection's deadline
// thread. They must only hand off (copy, anon_send, push to a queue) and never
// block. publish() may be called from a handler; request() and flush() block
// and must not be called from one.
#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/bus/message.hpp"
#include "cove/bus/nkeys.hpp"
#include "cove/bus/subscription.hpp"
#include "cove/c_handle.hpp"
#include "cove/expected.hpp"

namespace cove::bus {

using nats_conn = c_handle<natsConnection, natsConnection_Destroy>;
using nats_opts = c_handle<natsOptions, natsOptions_Destroy>;
using nats_msg = c_handle<natsMsg, natsMsg_Destroy>;

struct connect_options {
  std::string url = "nats://127.0.0.1:4222";  // comma-separated list allowed
  std::string name = "cove";                  // shown by the server (connz)
  std::chrono::milliseconds connect_timeout{2000};
  /// -1: reconnect forever (daemons); 0: never reconnect (fail fast).
  int max_reconnect = -1;
  /// Reconnect backoff: first wait, doubling per attempt up to the cap.
  std::chrono::milliseconds reconnect_wait{50};
  std::chrono::milliseconds reconnect_wait_max{2000};
  /// Keep retrying the initial connect in the background instead of failing.
  bool retry_on_failed_connect = false;
  /// Bytes buffered by publish() while reconnecting; beyond it publish fails.
  int reconnect_buffer_bytes = 8 * 1024 * 1024;
  /// Per-subscription pending limits; beyond them messages are dropped and
  /// counted as slow-consumer drops.
  int max_pending_msgs = 65536;
  int max_pending_bytes = 64 * 1024 * 1024;
  /// Do not deliver this connection's own publishes to its subscriptions (the bridge
  /// relays agents' publishes and must not receive them back).
  bool no_echo = false;
  /// Deliver all subscriptions' messages on nats.c's shared thread pool instead of one
  /// thread per subscription (the bridge holds thousands of exact subscriptions).
  bool shared_delivery_threads = false;

  // Credentials (all optional; docs/security.md "Bus security").
  /// PEM file of the CA that signed the server's certificate. Set: TLS is
  /// required and the server is verified against it (also implied by a
  /// tls:// URL, which then verifies against the system's CAs).
  std::string ca_file;
  /// The user nkey that signs the server's nonce at every (re)connect.
  std::shared_ptr<const nkeys::user_key> nkey;
  /// Prefix of this connection's reply inboxes. Empty: "_INBOX.<nkey public
  /// key>" with an nkey (what the generated server config allows each user
  /// to subscribe to), else "_INBOX".
  std::string inbox_prefix;
  /// Called on a NATS thread for each permission violation the server
  /// reports (publish or subscribe refused), with errc::unauthorized and the
  /// server's text. Must only hand off.
  std::function<void(const cove::error&)> on_permission_violation;
};

struct connection_stats {
  uint64_t slow_consumer_events = 0;  // async NATS_SLOW_CONSUMER errors
  uint64_t async_errors = 0;          // all async errors, slow consumer included
  uint64_t disconnects = 0;
  uint64_t reconnects = 0;
  uint64_t permission_violations = 0;  // async NATS_NOT_PERMITTED errors
};

/// Maps a natsStatus to a cove::error; `what` prefixes the message.
cove::error error_from_status(natsStatus s, std::string_view what);

class connection {
 public:
  struct state;  // shared with NATS callbacks
  using handler = std::function<void(message&&)>;
  using async_handler = std::function<void(expected<message>)>;

  /// Connects (nats_Open is called once per process on first use).
  static expected<std::shared_ptr<connection>> connect(const connect_options& opts);

  /// Unsubscribes the async-request inbox, fails pending async requests with
  /// errc::unavailable, closes (waits for the closed callback, bounded), then
  /// destroys the connection and the options.
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  /// Buffers a message (sent ASAP). errc::too_large over max_payload,
  /// errc::unavailable when closed or the reconnect buffer is full.
  expected<void> publish(std::string_view subject, std::span<const uint8_t> data,
                         std::string_view reply = {});

  /// Blocking request. errc::unavailable when nobody subscribes to `subject`
  /// (no-responders), errc::timeout when no reply arrives in time.
  expected<message> request(std::string_view subject, std::span<const uint8_t> data,
                            std::chrono::milliseconds timeout);

  /// Non-blocking request: `done` is called exactly once, on a NATS thread (reply
  /// or no-responders) or the deadline thread (timeout), or from ~connection
  /// (errc::unavailable). If this returns an error, `done` is not called.
  expected<void> request_async(std::string_view subject, std::span<const uint8_t> data,
                               std::chrono::milliseconds timeout, async_handler done);

  /// Async subscription; `h` runs on the subscription's NATS thread. An empty
  /// queue_group means a plain subscription.
  expected<subscription> subscribe(std::string_view subject, handler h, std::string_view queue_group = {});

  /// A fresh unique inbox subject (<inbox prefix>.<nuid>).
  std::string new_inbox();

  /// The server's text of the last permission violation (empty if none).
  [[nodiscard]] std::string last_permission_violation() const;
  [[nodiscard]] const std::string& inbox_prefix() const noexcept;

  /// Round trip to the server: everything published before is processed.
  expected<void> flush(std::chrono::milliseconds timeout);

  [[nodiscard]] bool connected() const noexcept;
  [[nodiscard]] int64_t max_payload() const noexcept;
  [[nodiscard]] connection_stats stats() const noexcept;
  [[nodiscard]] natsConnection* native() const noexcept { return conn_.get(); }

 private:
  connection() = default;
  expected<void> start_async_inbox();

  // Destroyed in reverse order: conn_ before opts_; state_ lives longer
  // (shared with callbacks).
  std::shared_ptr<state> state_;
  int max_pending_msgs_ = 65536;
  int max_pending_bytes_ = 64 * 1024 * 1024;
  nats_opts opts_;
  nats_conn conn_;
};

}  // namespace cove::bus

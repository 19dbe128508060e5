#pragma once
// A framed TLS link with one I/O thread: the thread owns the SSL object (reads and
// writes never race), decodes incoming frames and hands them to a callback, and
// drains a bounded outbound queue. Used by both ends of the bridge.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>

#include "cove/bridge/frame.hpp"
#include "cove/bridge/tls.hpp"

namespace cove::bridge {

class channel {
 public:
  struct callbacks {
    /// Runs on the I/O thread; must only hand off (post, publish, enqueue) or send().
    std::function<void(frame&&)> on_frame;
    /// Runs once on the I/O thread when the link ends, with the reason.
    std::function<void(const std::string&)> on_closed;
  };
  struct limits {
    size_t max_queued_bytes = 32u << 20;  // outbound; send() waits beyond it
    /// Closes the link after this instant (evidence validity); max() = never.
    std::chrono::steady_clock::time_point close_at = std::chrono::steady_clock::time_point::max();
    std::string expiry_reason = "the admission expired";  // sent in a close frame at close_at
  };

  /// Takes a connected socket whose TLS handshake is complete; `pending` holds bytes
  /// already read past the handshake frames. Calls `before_io` with the channel (e.g.
  /// to store it where the callbacks will look for it), then starts the I/O thread.
  static std::shared_ptr<channel> start(
      ssl_ptr ssl, int fd, callbacks cb, limits lim, decoder pending,
      const std::function<void(const std::shared_ptr<channel>&)>& before_io = {});

  /// Stops the I/O thread (close("shut down") if still open) and frees the link.
  ~channel();
  channel(const channel&) = delete;
  channel& operator=(const channel&) = delete;

  /// Queues a frame. Waits up to `max_wait` while the queue is over its limit
  /// (back-pressure); errc::timeout then, errc::unavailable once the link is closed.
  expected<void> send(const frame& f, std::chrono::milliseconds max_wait = std::chrono::seconds(30));
  /// As above; the payload is moved into the queue, not copied.
  expected<void> send(frame&& f, std::chrono::milliseconds max_wait = std::chrono::seconds(30));

  /// Sends `last` (if given) and whatever is queued, then closes. Idempotent.
  void close(const std::string& reason, std::optional<frame> last = std::nullopt);

  [[nodiscard]] bool open() const;
  [[nodiscard]] size_t queued_bytes() const;

 private:
  channel() = default;
  void run();
  void wake();
  expected<void> enqueue(std::vector<uint8_t> head, std::vector<uint8_t> body,
                         std::chrono::milliseconds max_wait);

  ssl_ptr ssl_;
  int fd_ = -1;
  int wake_fd_ = -1;
  callbacks cb_;
  limits lim_;
  decoder in_;

  mutable std::mutex mu_;
  std::condition_variable space_;
  std::deque<std::vector<uint8_t>> out_;
  size_t queued_ = 0;
  bool closing_ = false;  // no more send(); flush then close
  bool closed_ = false;
  std::string close_reason_;
  std::thread thread_;
  std::atomic<std::thread::id> io_thread_{};  // set by run() before anything else
};

/// A TCP connection to "host:port" with a deadline, or an error naming the address.
expected<int> dial_tcp(const std::string& address, std::chrono::milliseconds timeout);

/// Runs the TLS handshake on a blocking socket within `timeout`.
expected<void> handshake(SSL* ssl, int fd, bool server, std::chrono::milliseconds timeout);

/// Writes `bytes` fully on a blocking-with-deadline socket (handshake phase only).
expected<void> write_all(SSL* ssl, int fd, std::span<const uint8_t> bytes,
                         std::chrono::steady_clock::time_point deadline);

/// Reads until `dec` yields one frame (handshake phase only).
expected<frame> read_frame(SSL* ssl, int fd, decoder& dec, std::chrono::steady_clock::time_point deadline);

}  // namespace cove::bridge

#pragma once
// RAII NATS subscription: unsubscribes on destruction; movable.
//
// Destruction is a synchronisation point: when ~subscription (or reset())
// returns, the handler is not running and will not run again — unless reset
// is called from that very handler, which is allowed and does not wait.
#include <nats/nats.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include "cove/bus/message.hpp"
#include "cove/c_handle.hpp"

namespace cove::bus {

using nats_sub = c_handle<natsSubscription, natsSubscription_Destroy>;

namespace detail {
/// Shared between the subscription and its NATS callbacks.
struct sub_state {
  std::function<void(message&&)> handler;
  std::mutex mu;
  std::condition_variable cv;
  bool complete = false;  // set by the on-complete callback
};
}  // namespace detail

class subscription {
 public:
  subscription() = default;
  subscription(nats_sub sub, std::shared_ptr<detail::sub_state> st) noexcept
      : sub_(std::move(sub)), state_(std::move(st)) {}
  ~subscription() { reset(); }
  subscription(subscription&&) noexcept = default;
  subscription& operator=(subscription&& other) noexcept {
    if (this != &other) {
      reset();
      sub_ = std::move(other.sub_);
      state_ = std::move(other.state_);
    }
    return *this;
  }
  subscription(const subscription&) = delete;
  subscription& operator=(const subscription&) = delete;

  /// Unsubscribes and waits (bounded, 10 s) until the handler has returned for
  /// the last time. Never blocks when called from the handler itself.
  void reset() noexcept;

  [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(sub_); }
  explicit operator bool() const noexcept { return valid(); }
  /// Messages dropped because this subscription exceeded its pending limits.
  [[nodiscard]] int64_t dropped() const noexcept {
    int64_t n = 0;
    if (sub_) natsSubscription_GetDropped(sub_.get(), &n);
    return n;
  }
  [[nodiscard]] natsSubscription* native() const noexcept { return sub_.get(); }

 private:
  nats_sub sub_;
  std::shared_ptr<detail::sub_state> state_;
};

}  // namespace cove::bus

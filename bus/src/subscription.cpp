#include "cove/bus/subscription.hpp"

#include <chrono>

#include "subscription_impl.hpp"

namespace cove::bus {

namespace detail {
const sub_state*& delivering() noexcept {
  thread_local const sub_state* slot = nullptr;
  return slot;
}
}  // namespace detail

void subscription::reset() noexcept {
  if (sub_) {
    natsSubscription_Unsubscribe(sub_.get());
    sub_.reset();
  }
  if (state_ && detail::delivering() != state_.get()) {
    std::unique_lock lock(state_->mu);
    state_->cv.wait_for(lock, std::chrono::seconds(10), [&] { return state_->complete; });
  }
  state_.reset();
}

}  // namespace cove::bus

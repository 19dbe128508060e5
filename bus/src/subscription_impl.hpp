#pragma once
// Internal: the thread-local marker of the subscription whose handler runs on
// the current thread (set by the message callback in connection.cpp).
#include "cove/bus/subscription.hpp"

namespace cove::bus::detail {
/// This thread's slot (a function-local thread_local: no extern TLS across TUs).
const sub_state*& delivering() noexcept;
}  // namespace cove::bus::detail

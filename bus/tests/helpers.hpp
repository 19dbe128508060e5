#pragma once
// Shared helpers for the bus tests: a real nats-server and a thread-safe
// message collector (condition variable, no sleeps).
#include <doctest/doctest.h>

#include <condition_variable>
#include <mutex>
#include <vector>

#include "cove/bus/connection.hpp"
#include "cove/test/nats_server.hpp"

namespace cove::bus::testing {

using namespace std::chrono_literals;

inline test::nats_server start_server() {
  auto srv = test::nats_server::start();
  REQUIRE_MESSAGE(srv.has_value(), (srv ? "" : srv.error().to_string()));
  return std::move(*srv);
}

inline std::shared_ptr<connection> connect_to(const test::nats_server& srv, connect_options o = {}) {
  o.url = srv.url();
  o.name = "cove-bus-test";
  auto c = connection::connect(o);
  REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().to_string()));
  return *c;
}

inline std::span<const uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

inline std::string text(const std::vector<uint8_t>& v) {
  return {v.begin(), v.end()};
}

template <class T>
class collector {
 public:
  void push(T x) {
    std::lock_guard lock(mu_);
    items_.push_back(std::move(x));
    cv_.notify_all();
  }
  /// Waits until at least n items arrived or the timeout passes.
  bool wait_for(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return items_.size() >= n; });
  }
  std::vector<T> items() {
    std::lock_guard lock(mu_);
    return items_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<T> items_;
};

}  // namespace cove::bus::testing

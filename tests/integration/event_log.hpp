#pragma once
// event_log: collects every event on cove.v1.events.> (lifecycle, bridge, health,
// stats, computation, ...) in arrival order, for tests that wait on them with a
// deadline instead of sleeping.
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "fixture.hpp"

namespace cove::itest {

class event_log {
 public:
  struct event {
    std::string kind, cvm_id, computation_id, state, message;
  };

  /// Subscribes (and flushes, so no event published after this returns is missed).
  explicit event_log(bus::connection& conn) {
    sub_ = must(conn.subscribe(
                    bus::subjects::all_events,
                    [this](bus::message&& m) {
                      auto ev = bus::body_as<v1::Event>(m.data);
                      if (!ev) return;
                      auto str = [](const flatbuffers::String* s) { return s ? s->str() : std::string(); };
                      std::lock_guard lock(mu_);
                      seen_.push_back({str((*ev)->kind()), str((*ev)->cvm_id()), str((*ev)->computation_id()),
                                       str((*ev)->state()), str((*ev)->message())});
                    }),
                "subscribe events");
    must(conn.flush(std::chrono::seconds(5)), "flush");
  }

  /// How many events arrived so far: a mark for wait_for(..., from).
  size_t size() {
    std::lock_guard lock(mu_);
    return seen_.size();
  }

  /// Events (any kind) for `cvm` in `state` whose message contains `text`.
  size_t count(const std::string& cvm, const std::string& state, std::string_view text = {}) {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& e : seen_)
      if (matches(e, cvm, state, text)) ++n;
    return n;
  }

  /// Waits until at least `n` matching events (any kind) arrived; returns the last
  /// one's message. Fails the test, listing every event seen, when none comes in time.
  std::string wait(const std::string& cvm, const std::string& state, std::string_view text = {}, size_t n = 1,
                   std::chrono::seconds limit = std::chrono::seconds(20)) {
    bool ok = test::wait_until([&] { return count(cvm, state, text) >= n; }, test::deadline_in(limit));
    std::lock_guard lock(mu_);
    if (!ok) {
      std::string all;
      for (const auto& e : seen_) all += e.kind + " " + e.cvm_id + "/" + e.state + ": " + e.message + "\n";
      FAIL("no " << n << " '" << state << "' event(s) for " << cvm << " containing '" << text << "'; saw:\n"
                 << all);
    }
    for (auto it = seen_.rbegin(); it != seen_.rend(); ++it)
      if (matches(*it, cvm, state, text)) return it->message;
    return {};
  }

  /// Waits (bounded) for an event of `kind` for `cvm` in `state`, at index >= from.
  std::optional<event> wait_for(std::string_view kind, const std::string& cvm, std::string_view state,
                                size_t from = 0, std::chrono::seconds limit = std::chrono::seconds(10)) {
    std::optional<event> found;
    test::wait_until(
        [&] {
          std::lock_guard lock(mu_);
          for (size_t i = from; i < seen_.size() && !found; ++i)
            if (seen_[i].kind == kind && seen_[i].cvm_id == cvm && seen_[i].state == state) found = seen_[i];
          return found.has_value();
        },
        test::deadline_in(limit));
    return found;
  }

 private:
  static bool matches(const event& e, const std::string& cvm, std::string_view state, std::string_view text) {
    return e.cvm_id == cvm && e.state == state && e.message.find(text) != std::string::npos;
  }

  std::mutex mu_;
  std::vector<event> seen_;
  bus::subscription sub_;
};

}  // namespace cove::itest

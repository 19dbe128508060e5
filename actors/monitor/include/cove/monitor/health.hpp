#pragma once
// Agent heartbeats and the health of one CVM, without actors or clocks of their own:
// the monitor passes the time in, so every transition is unit-testable.
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/expected.hpp"

namespace cove::monitor {

using steady_clock = std::chrono::steady_clock;

/// Bounds of an agent's announced heartbeat period.
inline constexpr std::chrono::milliseconds min_heartbeat_interval{10};
inline constexpr std::chrono::milliseconds max_heartbeat_interval{600000};

struct heartbeat {
  std::string cvm_id;
  uint64_t seq = 0;
  std::chrono::milliseconds interval{0};
  std::string agent_state;
  uint64_t uptime_ms = 0;
};

/// Verifies a heartbeat received on `subject` (cove.v1.cvm.<id>.heartbeat): a valid
/// envelope with a Heartbeat body whose cvm_id equals the subject's id, and an interval
/// within [min_heartbeat_interval, max_heartbeat_interval]. errc::invalid_request naming
/// what is wrong otherwise.
expected<heartbeat> decode_heartbeat(std::string_view subject, std::span<const uint8_t> payload);

/// The Heartbeat envelope an agent publishes.
std::vector<uint8_t> encode_heartbeat(const heartbeat& hb, std::string_view sender);

enum class health_state { unknown, healthy, unhealthy, gone };
std::string_view to_string(health_state s) noexcept;

struct health_config {
  std::chrono::milliseconds default_interval{5000};  // until the agent announces its own
  uint32_t misses = 3;                               // heartbeats missed before unhealthy
};

struct health_transition {
  health_state to = health_state::unknown;
  std::string message;
};

/// One CVM's heartbeat bookkeeping.
///   unknown --first heartbeat--> healthy --no heartbeat for misses x interval--> unhealthy
///   unhealthy --heartbeat--> healthy;  any --gone()--> gone (final)
/// Before the first heartbeat the deadline runs only once the manager reported the agent
/// ready (`ready()`): a starting agent is not late.
class health_tracker {
 public:
  explicit health_tracker(health_config cfg);

  void ready(steady_clock::time_point now);
  std::optional<health_transition> on_heartbeat(const heartbeat& hb, steady_clock::time_point now);
  std::optional<health_transition> check(steady_clock::time_point now);
  void gone(std::string why);

  [[nodiscard]] health_state state() const noexcept { return state_; }
  [[nodiscard]] uint64_t heartbeats() const noexcept { return heartbeats_; }
  [[nodiscard]] std::optional<steady_clock::time_point> last_heartbeat() const noexcept { return last_; }
  [[nodiscard]] std::chrono::milliseconds interval() const noexcept { return interval_; }
  [[nodiscard]] std::chrono::milliseconds deadline() const noexcept { return interval_ * cfg_.misses; }
  [[nodiscard]] const std::string& agent_state() const noexcept { return agent_state_; }
  [[nodiscard]] const std::string& detail() const noexcept { return detail_; }

 private:
  health_config cfg_;
  health_state state_ = health_state::unknown;
  std::chrono::milliseconds interval_;
  std::optional<steady_clock::time_point> ready_at_;
  std::optional<steady_clock::time_point> last_;
  std::optional<steady_clock::time_point> unhealthy_since_;
  uint64_t heartbeats_ = 0;
  std::string agent_state_;
  std::string detail_;
};

/// "1.2 s", "350 ms".
std::string human_duration(std::chrono::milliseconds d);

}  // namespace cove::monitor

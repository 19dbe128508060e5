#include "cove/monitor/health.hpp"

#include <fmt/format.h>

#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"

namespace cove::monitor {

expected<heartbeat> decode_heartbeat(std::string_view subject, std::span<const uint8_t> payload) {
  auto id = bus::cvm_id_of(subject);
  auto leaf = bus::cvm_leaf_of(subject);
  if (!id || !leaf || *leaf != bus::subjects::heartbeat_leaf)
    return make_error(errc::invalid_request, "not a heartbeat subject");
  auto body = bus::body_as<v1::Heartbeat>(payload);
  if (!body) return make_error(errc::invalid_request, "heartbeat: " + body.error().message);
  const v1::Heartbeat& b = **body;
  if (!b.cvm_id() || b.cvm_id()->str() != *id)
    return make_error(errc::invalid_request, "heartbeat: cvm_id does not match the subject");
  std::chrono::milliseconds interval{b.interval_ms()};
  if (interval < min_heartbeat_interval || interval > max_heartbeat_interval)
    return make_error(errc::invalid_request,
                      fmt::format("heartbeat: interval_ms {} is outside {}..{}", b.interval_ms(),
                                  min_heartbeat_interval.count(), max_heartbeat_interval.count()));
  heartbeat hb;
  hb.cvm_id = *id;
  hb.seq = b.seq();
  hb.interval = interval;
  if (b.agent_state()) hb.agent_state = b.agent_state()->str().substr(0, 64);
  hb.uptime_ms = b.uptime_ms();
  return hb;
}

std::vector<uint8_t> encode_heartbeat(const heartbeat& hb, std::string_view sender) {
  flatbuffers::FlatBufferBuilder b(128);
  auto body =
      v1::CreateHeartbeatDirect(b, hb.cvm_id.c_str(), hb.seq, static_cast<uint32_t>(hb.interval.count()),
                                hb.agent_state.c_str(), hb.uptime_ms);
  return bus::finish(b, body, {}, sender);
}

std::string_view to_string(health_state s) noexcept {
  switch (s) {
    case health_state::unknown:
      return "unknown";
    case health_state::healthy:
      return "healthy";
    case health_state::unhealthy:
      return "unhealthy";
    case health_state::gone:
      return "gone";
  }
  return "unknown";
}

std::string human_duration(std::chrono::milliseconds d) {
  if (d < std::chrono::seconds(1)) return fmt::format("{} ms", d.count());
  return fmt::format("{:.1f} s", static_cast<double>(d.count()) / 1000.0);
}

health_tracker::health_tracker(health_config cfg) : cfg_(cfg), interval_(cfg.default_interval) {}

void health_tracker::ready(steady_clock::time_point now) {
  if (!ready_at_) ready_at_ = now;
}

std::optional<health_transition> health_tracker::on_heartbeat(const heartbeat& hb,
                                                              steady_clock::time_point now) {
  if (state_ == health_state::gone) return std::nullopt;
  ++heartbeats_;
  auto previous = last_;
  last_ = now;
  interval_ = hb.interval;
  agent_state_ = hb.agent_state;
  if (state_ == health_state::healthy) return std::nullopt;
  health_transition t{health_state::healthy, {}};
  if (state_ == health_state::unhealthy) {
    auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(
        now - (previous ? *previous : ready_at_.value_or(now)));
    t.message = fmt::format("heartbeats resumed after {} of silence (agent {})", human_duration(silent),
                            agent_state_.empty() ? "?" : agent_state_);
  } else {
    t.message = fmt::format("first heartbeat (agent {}, every {})", agent_state_.empty() ? "?" : agent_state_,
                            human_duration(interval_));
  }
  state_ = health_state::healthy;
  detail_.clear();
  unhealthy_since_.reset();
  return t;
}

std::optional<health_transition> health_tracker::check(steady_clock::time_point now) {
  if (state_ == health_state::gone || state_ == health_state::unhealthy) return std::nullopt;
  auto since = last_ ? last_ : ready_at_;
  if (!since || now - *since <= deadline()) return std::nullopt;
  auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(now - *since);
  state_ = health_state::unhealthy;
  unhealthy_since_ = now;
  detail_ = last_ ? fmt::format("no heartbeat for {} ({} missed at {})", human_duration(silent),
                                silent / interval_, human_duration(interval_))
                  : fmt::format("no heartbeat {} after the agent became ready", human_duration(silent));
  return health_transition{health_state::unhealthy, detail_};
}

void health_tracker::gone(std::string why) {
  state_ = health_state::gone;
  detail_ = std::move(why);
}

}  // namespace cove::monitor

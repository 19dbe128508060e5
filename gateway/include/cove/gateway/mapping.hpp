#pragma once
// Pure translations between cocos's orchestrator wire format (cvms.proto,
// manager.proto) and cove's bus (schemas/*.fbs). No I/O: the cvms client and
// the manager gateway call these, the unit tests and the fuzz target too.
#include <grpcpp/support/status.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cove/expected.hpp"
#include "cove/manifest.hpp"
#include "cvms.pb.h"

namespace cove::gateway {

/// Largest reassembled run request (keys and hashes only; upstream sends
/// 1 MiB chunks, so a real request is one or two chunks).
inline constexpr size_t max_run_request_bytes = 4 * 1024 * 1024;
/// Partial run requests kept at once (distinct ids); more are refused.
inline constexpr size_t max_partial_run_requests = 16;
/// A partial run request is dropped after this long without a new chunk
/// (the upstream agent uses the same 30 s).
inline constexpr std::chrono::seconds run_request_chunk_timeout{30};
/// cocos splits log messages at 500 bytes.
inline constexpr size_t max_log_message_bytes = 500;

/// cocos's ComputationRunReq -> cove manifest. Checks what cove needs
/// (32-byte hashes, DER keys, known algo_type, no remote sources) and then
/// cove::validate(). Errors are errc::invalid_request with the field path,
/// e.g. "datasets[0].hash: expected 32 bytes, got 5".
expected<manifest> manifest_from_run_request(const cvms::ComputationRunReq& req);

/// Reassembles RunReqChunks per id (cocos-interfaces.md §1.2): data slices
/// are appended in arrival order; the chunk with is_last (its data, usually
/// empty, included) completes the request, which is then parsed.
class run_request_assembler {
 public:
  using clock = std::chrono::steady_clock;

  struct result {
    std::string id;                             // the chunks' id
    expected<cvms::ComputationRunReq> request;  // parse result (or a size/limit error)
  };

  /// Adds a chunk; returns the finished request when it was the last one,
  /// or an error result when the chunk broke a limit (the partial request
  /// is dropped then).
  std::optional<result> add(const cvms::RunReqChunks& chunk, clock::time_point now = clock::now());

  /// Drops partial requests idle for run_request_chunk_timeout; returns their ids.
  std::vector<std::string> expire(clock::time_point now = clock::now());

  /// Drops every partial request (the stream they came on ended).
  void clear() noexcept { partial_.clear(); }
  [[nodiscard]] size_t pending() const noexcept { return partial_.size(); }

 private:
  struct partial {
    std::string data;
    clock::time_point last;
  };
  std::map<std::string, partial> partial_;
};

/// One cove event (cove.v1.Event) as seen by the cvms client.
struct event_view {
  std::string kind;  // computation, upload, result, cvm, bridge
  std::string cvm_id;
  std::string computation_id;
  std::string state;
  std::string message;
  int64_t at_ns = 0;
};

/// cove's event -> cocos's AgentEvent / AgentLog messages (docs/operations.md
/// "Orchestrators"). `previous_state` is the computation's last cove agent
/// state (empty if none yet); `computation_id` is the cocos id the event
/// belongs to (cvm events carry none). Every event becomes at least one
/// AgentLog; computation state changes also become the AgentEvents the cocos
/// agent publishes for the same transition (reference §3.10).
std::vector<cvms::ClientStreamMessage> map_event(const event_view& ev, std::string_view previous_state,
                                                 const std::string& computation_id);

/// An AgentEvent (details: {"cvm_id":..., "message":...} as JSON).
cvms::ClientStreamMessage make_agent_event(std::string_view event_type, std::string_view status,
                                           std::string_view originator, const std::string& computation_id,
                                           std::string_view cvm_id, std::string_view message, int64_t at_ns);

/// AgentLog messages for `text`, split at max_log_message_bytes (never inside
/// a UTF-8 sequence).
std::vector<cvms::ClientStreamMessage> make_agent_logs(std::string_view level, std::string_view text,
                                                       const std::string& computation_id, int64_t at_ns);

/// Splits `text` into pieces of at most `max` bytes, not inside a UTF-8 sequence.
std::vector<std::string> split_utf8(std::string_view text, size_t max);

/// A Go time.Duration string ("1h30m", "90s", "1.5h", "300ms") in whole
/// seconds, rounded up; "" is 0 (no TTL). Negative, malformed or over
/// uint32 seconds: errc::invalid_request.
expected<uint32_t> parse_go_duration(std::string_view text);

/// cove error -> gRPC status (code table in gateway/README.md).
grpc::Status to_grpc_status(const error& e);

}  // namespace cove::gateway

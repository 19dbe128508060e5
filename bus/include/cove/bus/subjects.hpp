#pragma once
// The only place cove builds bus subjects (DESIGN.md "Bus contract").
// IDs that end up in a subject must match [a-z0-9-]{1,64}: '.', '*', '>' and
// whitespace would rewrite the subject.
#include <optional>
#include <string>
#include <string_view>

namespace cove::bus::subjects {

inline constexpr std::string_view prefix = "cove.v1";

// Requests to services: cove.v1.<service>.<verb>
inline constexpr std::string_view manager_create = "cove.v1.manager.create";
inline constexpr std::string_view manager_list = "cove.v1.manager.list";
inline constexpr std::string_view manager_info = "cove.v1.manager.info";
inline constexpr std::string_view manager_remove = "cove.v1.manager.remove";
inline constexpr std::string_view manager_policy = "cove.v1.manager.policy";
inline constexpr std::string_view computation_start = "cove.v1.computation.start";
inline constexpr std::string_view computation_stop = "cove.v1.computation.stop";
inline constexpr std::string_view computation_status = "cove.v1.computation.status";
inline constexpr std::string_view attestation_verify = "cove.v1.attestation.verify";
inline constexpr std::string_view monitor_stats = "cove.v1.monitor.stats";

// Per-CVM leaves: cove.v1.cvm.<id>.<leaf>
inline constexpr std::string_view cvm_prefix = "cove.v1.cvm.";
inline constexpr std::string_view events_prefix = "cove.v1.events.";
/// Wildcards for subscribing to all CVM subjects / all events.
inline constexpr std::string_view all_cvms = "cove.v1.cvm.>";
inline constexpr std::string_view all_events = "cove.v1.events.>";
/// Lifecycle events of CVMs (manager) and of agent links (bridge).
inline constexpr std::string_view cvm_events = "cove.v1.events.cvm";
inline constexpr std::string_view bridge_events = "cove.v1.events.bridge";
/// The monitor's events: agent health transitions, and periodic resource samples.
inline constexpr std::string_view health_events = "cove.v1.events.health";
inline constexpr std::string_view stats_events = "cove.v1.events.stats";
/// Agent heartbeats of every CVM (the agent publishes cove.v1.cvm.<id>.heartbeat).
inline constexpr std::string_view heartbeat_leaf = "heartbeat";
inline constexpr std::string_view all_heartbeats = "cove.v1.cvm.*.heartbeat";

}  // namespace cove::bus::subjects

namespace cove::bus {

/// True iff `id` matches [a-z0-9-]{1,64}.
bool valid_id(std::string_view id) noexcept;

/// True iff `leaf` is one or more '.'-separated tokens of [a-z0-9_-] (no
/// wildcards, no empty tokens), e.g. "status" or "result.chunk".
bool valid_leaf(std::string_view leaf) noexcept;

/// "cove.v1.cvm.<cvm_id>.<leaf>", or nullopt if the id or leaf is invalid.
std::optional<std::string> cvm_subject(std::string_view cvm_id, std::string_view leaf);

/// "cove.v1.events.<kind>", or nullopt if `kind` is not a valid leaf.
std::optional<std::string> events_subject(std::string_view kind);

/// The CVM id of "cove.v1.cvm.<id>.<leaf...>" (nullopt for any other subject or
/// an invalid id).
std::optional<std::string> cvm_id_of(std::string_view subject);

/// The leaf after "cove.v1.cvm.<id>." ("status", "result.chunk"), or nullopt.
std::optional<std::string> cvm_leaf_of(std::string_view subject);

}  // namespace cove::bus

#pragma once
// `cove policy from-measure` and `cove policy show`: SEV-SNP appraisal policies
// (attest/README.md "Policy JSON") built from a launch measurement, and checked.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cove/expected.hpp"

namespace cove::cli {

/// The policy JSON `cove policy from-measure` writes: `base_json` (a policy's raw JSON,
/// "" = none) with every key made explicit (defaults from attest::snp_policy: debug and
/// migration agent not allowed, minimum report version 2, ...), `measurements` =
/// [measurement], relative trusted_roots paths made absolute against `base_dir`, and
/// `extra_roots` (file paths) appended. The result loads with attest::load_policy_json
/// (checked before it is returned); an invalid base is errc::invalid_request naming the field.
/// With `guest_policy` (the SNP guest POLICY the guest launches with, e.g. an IGVM file's),
/// allow_debug, allow_migration_agent and allow_smt are set to its bits 19, 18 and 16 — the
/// tightest policy that accepts that guest; a base that refuses a bit the guest policy sets
/// is errc::invalid_request naming both.
expected<std::string> policy_from_measurement(std::span<const uint8_t> measurement,
                                              const std::string& base_json,
                                              const std::filesystem::path& base_dir,
                                              const std::vector<std::string>& extra_roots,
                                              std::optional<uint64_t> guest_policy = std::nullopt);

/// Registers `policy from-measure` and `policy show` on `app`. `json_out` is the global
/// --json flag (read when the command runs).
void add_policy_command(CLI::App& app, const bool& json_out);

}  // namespace cove::cli

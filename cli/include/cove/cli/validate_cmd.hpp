#pragma once
// `cove attestation validate`: verify saved evidence offline (no bus).
#include <CLI/CLI.hpp>

namespace cove::cli {

/// Registers `validate` under the `attestation` subcommand. `json_out` is the
/// global --json flag (read when the command runs).
void add_validate_command(CLI::App& attestation, const bool& json_out);

}  // namespace cove::cli

#pragma once
// `cove measure`: offline AMD SEV / SEV-ES / SEV-SNP launch measurement
// (cove::attest::compute_launch_digest), flags as virtee/sev-snp-measure.
#include <CLI/CLI.hpp>

namespace cove::cli {

/// Registers the `measure` subcommand on `app`. Its callback prints the digest
/// (hex, or base64 with --output-format base64) on stdout. Usage errors throw
/// CLI::ValidationError (exit 2); a failed computation prints
/// "cove: <code>: <message>" on stderr and throws CLI::RuntimeError(1) (exit 1).
void add_measure_command(CLI::App& app);

}  // namespace cove::cli

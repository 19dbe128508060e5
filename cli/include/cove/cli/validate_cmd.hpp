#pragma once
// `cove attestation validate`: verify saved evidence offline (no bus).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <vector>

#include "cove/attest/dice.hpp"
#include "cove/attest/snp_report.hpp"
#include "cove/attest/vtpm_evidence.hpp"

namespace cove::cli {

/// Registers `validate` under the `attestation` subcommand. `json_out` is the
/// global --json flag (read when the command runs).
void add_validate_command(CLI::App& attestation, const bool& json_out);
/// `cove collateral put`: seed a KDS-layout collateral directory (see attest/collateral.hpp).
void add_collateral_command(CLI::App& app, const bool& json_out);

/// The parsed fields `validate --json` prints (also used by `attestation get --json`):
/// every report field, the quote/AK/PCRs/event log summary, each DICE layer.
nlohmann::json report_to_json(const attest::snp_report& r);
nlohmann::json vtpm_to_json(const attest::vtpm_verified& v);
nlohmann::json dice_to_json(const std::vector<attest::dice_layer>& chain);

}  // namespace cove::cli

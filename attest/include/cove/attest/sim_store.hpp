#pragma once
// Files that carry a simulated TEE identity from the manager to an agent (the
// process backend's stand-in for the PSP), and the default policy for them.
#include <array>
#include <filesystem>
#include <string>

#include "cove/attest/sim.hpp"
#include "cove/expected.hpp"

namespace cove::attest {

/// A chip plus the chain above it: what an agent needs to produce evidence.
struct sim_identity {
  sim_chip chip;
  std::string ask_pem;
  std::string ark_pem;
};

/// Writes vcek.pem, vcek.key.pem (0600), chip.json, ask.pem and ark.pem into dir.
expected<void> save_sim_identity(const sim_chip& chip, const sim_root& root,
                                 const std::filesystem::path& dir);
expected<sim_identity> load_sim_identity(const std::filesystem::path& dir);

/// SHA-384 of a file (the simulated launch measurement of the agent binary).
expected<std::array<uint8_t, 48>> sha384_file(const std::filesystem::path& file);

/// A policy (JSON, attest/README.md) accepting exactly this simulated root and measurement.
std::string sim_policy_json(const sim_root& root, const std::array<uint8_t, 48>& measurement);

}  // namespace cove::attest

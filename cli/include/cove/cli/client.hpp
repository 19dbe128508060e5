#pragma once
// The user side of cove, as a library: everything the `cove` CLI does, callable
// from tests and benchmarks. Every function that sends a secret first verifies
// the agent's evidence against the caller's policy and seals to the attested key.
#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cove/attest/policy.hpp"
#include "cove/bus/connection.hpp"
#include "cove/cli/evidence_file.hpp"
#include "cove/crypto/keys.hpp"
#include "cove/expected.hpp"
#include "cove/manifest.hpp"

namespace cove::cli {

struct client_options {
  std::chrono::milliseconds request_timeout{10000};
  std::chrono::milliseconds chunk_timeout{30000};
};

/// Bus connection options for a CLI user. `nkey_seed` (--nkey-seed, env
/// COVE_NKEY_SEED): a file holding an nkey seed ("SU...") or an Ed25519
/// participant key (`cove keys generate`), which then is the bus identity.
/// `ca` (--ca, env COVE_NATS_CA): the CA that signed the server's certificate.
/// With a tls:// URL, what is not given comes from this host's embedded coved:
/// <state>/bus/ca.pem and, if readable, <state>/bus/admin.seed.
expected<bus::connect_options> bus_options(const std::string& url, std::string nkey_seed, std::string ca,
                                           const std::filesystem::path& state_dir);

/// What a verified attestation tells us about an agent.
struct attested_agent {
  std::vector<uint8_t> report;                        // the raw SEV-SNP-format report
  std::vector<uint8_t> kx_public_key;                 // X25519: uploads are sealed to it
  std::vector<uint8_t> sign_public_key;               // Ed25519
  std::string summary;                                // human-readable: measurement, chip, TCB
  std::optional<attest::verified_evidence> verified;  // what verify_agent_evidence returned
};

/// Asks the agent for evidence bound to `nonce` (32..64 bytes) and returns it as received,
/// unverified. Only sim_snp and sev_snp evidence with 32-byte agent keys is accepted
/// (errc::attestation_failed otherwise).
expected<saved_evidence> fetch_evidence(bus::connection& bus, const std::string& cvm_id,
                                        std::span<const uint8_t> nonce, const client_options& opt = {});

/// Verifies saved evidence offline: verify_sim_or_snp_evidence with report_data =
/// evidence_report_data(kx, sign, nonce). Returns the summary attest() gives.
expected<attested_agent> verify_saved_evidence(const saved_evidence& ev, const attest::snp_policy& policy);

/// Fetches evidence with a fresh nonce and verifies signature, certificate chain
/// and policy, including report_data = H(agent keys || nonce). errc::attestation_failed otherwise.
expected<attested_agent> attest(bus::connection& bus, const std::string& cvm_id,
                                const attest::snp_policy& policy, const client_options& opt = {});

/// Loads a policy file (see attest/README.md).
expected<attest::snp_policy> load_policy(const std::filesystem::path& file);

/// The default policy file: <state_dir>/sim/policy.json (written by coved for its simulated TEE).
std::filesystem::path default_policy_path();

enum class file_role { algorithm, dataset };

struct upload_stats {
  uint64_t bytes = 0;
  uint64_t chunks = 0;
  std::chrono::nanoseconds elapsed{0};
};

/// Attests, then streams `file` sealed to the agent. SHA3-256 is computed while
/// streaming; the last chunk carries it with `key`'s signature over the upload
/// statement (computation id, manifest digest, role, name, hash, both kx keys).
/// `agreed`: the manifest this participant agreed to; the agent must hold exactly
/// it (same manifest_digest), else errc::attestation_failed and nothing is sent.
/// Without it the agent's manifest is taken as it is (tests; the CLI requires one).
expected<upload_stats> upload(bus::connection& bus, const std::string& cvm_id, file_role role,
                              const std::filesystem::path& file, const crypto::private_key& key,
                              const attest::snp_policy& policy, const manifest* agreed = nullptr,
                              const client_options& opt = {});

/// Attests, then downloads the result sealed to `key` and writes the plaintext to `out`.
/// `agreed` as for upload().
expected<upload_stats> fetch_result(bus::connection& bus, const std::string& cvm_id,
                                    const crypto::private_key& key, const attest::snp_policy& policy,
                                    const std::filesystem::path& out, const manifest* agreed = nullptr,
                                    const client_options& opt = {});

/// The agent's current status.
struct status {
  std::string computation_id;
  std::string state;
  std::string message;
  std::vector<std::string> pending;
  std::vector<uint8_t> manifest_digest;  // empty without a manifest
};
expected<status> computation_status(bus::connection& bus, const std::string& cvm_id,
                                    const client_options& opt = {});

}  // namespace cove::cli

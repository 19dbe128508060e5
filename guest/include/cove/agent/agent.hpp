#pragma once
// cove-agent: the computation state machine inside a CVM.
//
// One thread owns all state: NATS callbacks and the algorithm runner only post
// work to the agent's queue (cove::agent::work_queue), so no handler ever races
// another. See guest/README.md for the subjects served and the state machine.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "cove/agent/cocos_front.hpp"
#include "cove/expected.hpp"

namespace cove::agent {

/// Where the agent's simulated TEE identity lives (written by the manager's
/// process backend): vcek.pem, vcek.key.pem, ask.pem, ark.pem, chip_id.
struct sim_tee_config {
  std::filesystem::path dir;
};

struct agent_config {
  std::string cvm_id;               // [a-z0-9-]{1,64}
  std::string bridge_address;       // the attested bridge, "host:port" (production)
  std::filesystem::path bridge_ca;  // the bridge certificate the agent pins
  std::string nats_url;             // or the bus directly (development, benchmarks)
  std::filesystem::path work_dir;   // datasets/, results/, algo live here
  sim_tee_config sim;               // evidence provider: simulated SEV-SNP
  std::string
      vtpm_tcti;  // --vtpm: TCTI of the vTPM ("device:/dev/tpmrm0", "swtpm:host=..,port=.."); empty = none
  std::filesystem::path vtpm_event_log = "/sys/kernel/security/tpm0/binary_bios_measurements";
  /// With a vTPM: the IMA measurement list sent in every evidence (and PCR 10 quoted). The
  /// default is read only with a device TCTI and only if it exists; an explicit path
  /// (--ima-list, ima_list_explicit) is read whatever the TCTI and must exist.
  std::filesystem::path ima_list = "/sys/kernel/security/ima/binary_runtime_measurements";
  bool ima_list_explicit = false;
  std::chrono::seconds default_timeout{600};  // algorithm wall-clock limit when the manifest sets none
  uint64_t max_upload_bytes = 64ull << 30;    // per file
  uint32_t chunk_size = 768 * 1024;  // plaintext bytes per chunk (at most 768 KiB: NATS max_payload 1 MiB)
  uint32_t window = 16;              // chunks in flight per stream
  std::string log_level = "info";
  std::filesystem::path manifest_file;  // a manifest (cocos JSON form) to load at start
  cocos_front_config cocos;             // cocos.listen set: serve agent.AgentService (gRPC)
  /// cove.v1.cvm.<id>.heartbeat every this long (the monitor's liveness signal); 0: none.
  std::chrono::milliseconds heartbeat_interval{5000};
};

/// Checks the config; the error names the offending field. The bus (nats_url or
/// bridge_address) is optional when the cocos front door is on (standalone agent).
expected<void> validate(const agent_config& cfg);

/// Runs the agent until SIGTERM/SIGINT or a fatal bus error. Returns the exit code.
int run(const agent_config& cfg);

}  // namespace cove::agent

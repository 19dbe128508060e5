#pragma once
// What the manager needs from a CVM backend: start a CVM for an agent, stop it, and
// report its end. Two implementations: `process_backend` (the agent as a local
// process, simulated TEE) and `libvirt_backend` (a QEMU VM booting EOS through
// libvirt). The manager picks one per CVM from CvmCreate.backend.
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "cove/expected.hpp"

namespace cove::manager {

/// Everything a backend needs to start one CVM's agent.
struct agent_launch {
  std::string cvm_id;
  std::filesystem::path agent_binary;  // process backend: the agent to run
  std::string bridge_address;          // the attested bridge (with bridge_ca), or
  std::filesystem::path bridge_ca;
  std::string nats_url;            // the bus directly (development only)
  std::filesystem::path dir;       // the CVM's directory (<state>/cvms/<id>)
  std::filesystem::path work_dir;  // the agent's scratch space (process backend)
  std::filesystem::path tee_dir;   // simulated TEE identity (VCEK etc.)
  std::filesystem::path log_file;  // agent stdout+stderr, or the VM's serial console
  std::string log_level = "info";
  uint64_t max_upload_bytes = 0;       // cove-agent --max-upload; 0: the agent's default
  uint32_t heartbeat_interval_ms = 0;  // cove-agent --heartbeat-interval; 0: the agent's default
  std::string vtpm_tcti;               // cove-agent --vtpm (process backend); empty: none
  std::string ima_list;                // cove-agent --ima-list (process backend, with vtpm_tcti); empty: none
  // The cocos front door (cove-agent --grpc-listen): reachable on the host at
  // 127.0.0.1:<cocos_grpc_port> (process: the agent listens there; libvirt: QEMU
  // forwards it to the guest's port 7002). 0: no front door.
  uint16_t cocos_grpc_port = 0;
  std::string cocos_grpc_tls = "atls";  // cove-agent --grpc-tls: none | atls
};

/// `status` as passed to an exit callback: a wait(2) status. The libvirt backend
/// synthesizes one (exit N when the guest's agent exited with N and the VM powered
/// off; "killed by SIGKILL" when the VM died or was destroyed).
using exit_callback = std::function<void(const std::string& cvm_id, int status)>;

class cvm_backend {
 public:
  virtual ~cvm_backend() = default;
  cvm_backend() = default;
  cvm_backend(const cvm_backend&) = delete;
  cvm_backend& operator=(const cvm_backend&) = delete;

  /// "process" or "libvirt".
  [[nodiscard]] virtual std::string_view name() const = 0;
  /// The file under the CVM's directory that tells what went wrong ("agent.log",
  /// "console.log"); `agent_launch::log_file` is <dir>/<this>.
  [[nodiscard]] virtual std::string_view log_name() const = 0;
  /// Starts the CVM; returns the pid to show (the agent's, or QEMU's; 0 if unknown).
  /// The exit callback fires exactly once per successful launch, from another thread.
  virtual expected<pid_t> launch(const agent_launch& l) = 0;
  /// Asks the CVM to stop; `force`: at once. Never blocks; the end is reported
  /// through the exit callback.
  virtual void stop(const std::string& cvm_id, pid_t pid, bool force) = 0;
  /// Human-readable end of a CVM that ended with `status`, e.g. "agent exit status 1".
  [[nodiscard]] virtual std::string describe_exit(const std::string& cvm_id, int status) const = 0;
  /// CvmInfo.launch_measurement of a CVM this backend would launch now, lowercase hex:
  /// `snp` true, the expected SEV-SNP launch digest of what it boots; false, the
  /// simulated measurement of its agent. Empty: the backend does not know it. Errors
  /// say why it cannot be computed (no OVMF configured, …).
  [[nodiscard]] virtual expected<std::string> launch_measurement(bool snp) const {
    (void)snp;
    return std::string();
  }
  /// The manager forgot the CVM: drop what the backend kept about it.
  virtual void forget(const std::string& cvm_id) { (void)cvm_id; }
  /// Ends every CVM (shutdown of coved) and joins the backend's threads: after it,
  /// the exit callback is never called again.
  virtual void shutdown() = 0;
};

}  // namespace cove::manager

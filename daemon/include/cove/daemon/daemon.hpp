#pragma once
// coved: the host daemon. Hosts the services as CAF actors, connects them to the
// bus, and (unless --nats names a server) runs an embedded nats-server, by
// default locked down: TLS and one nkey user per service role, generated in
// <state>/bus on first start (docs/security.md "Bus security").
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>

#include "cove/expected.hpp"

namespace cove::daemon {

struct daemon_config {
  std::string nats_url;                   // empty: start an embedded nats-server
  std::string listen = "127.0.0.1:4222";  // embedded server address; port 0 = random
  std::filesystem::path nats_server = "/usr/sbin/nats-server";
  std::filesystem::path state_dir;  // default: cove::default_state_dir()
  std::set<std::string> services = {"manager", "computation", "attestation", "bridge", "monitor"};
  std::filesystem::path agent_binary;  // default: cove-agent beside coved
  std::string agent_nats_url;          // agents dial the bus directly here (only without the bridge service)
  std::string bridge_listen = "127.0.0.1:0";  // the attested bridge's TLS address; port 0 = any free
  uint32_t bridge_evidence_ttl = 3600;        // seconds an agent's admission lasts before re-attestation
  uint64_t agent_max_upload = 0;  // per-file upload limit handed to agents; 0: the agent's default
  std::string agent_vtpm_tcti;    // process backend: every agent quotes this vTPM (cove-agent --vtpm)
  std::string agent_ima_list;     // process backend: ... and sends this IMA list (cove-agent --ima-list)
  std::string log_level = "info";
  // The libvirt backend (CvmCreate.backend = libvirt; connects on first use).
  std::string libvirt_uri = "qemu:///system";
  std::filesystem::path eos_dir;  // EOS image (eos/build.sh output); default: <coved's dir>/../eos
  uint32_t vm_vcpus = 1;
  std::filesystem::path snp_ovmf;  // SEV-SNP: OVMF with the kernel-hashes table; empty: none
  // libvirt under TCG: the qboot ROM that boots the image's PVH vmlinux; empty: vmlinuz + SeaBIOS
  std::filesystem::path pvh_firmware = "/usr/share/qemu/qboot.rom";
  std::string snp_vcpu_type = "EPYC-v4";
  uint64_t vm_memory_mib = 512;
  // Guest agents get --vtpm VALUE: every libvirt CVM has an emulated TPM 2.0 (swtpm,
  // started by libvirt), so its evidence carries a quote by default. Empty: none.
  std::string guest_vtpm_tcti = "device:/dev/tpmrm0";
  // The cocos front door of CVMs created with CvmCreate.cocos_grpc: none | atls.
  std::string cocos_grpc_tls = "atls";
  /// Agent heartbeats (cove-agent --heartbeat-interval) and the monitor's deadline:
  /// a CVM is unhealthy after `heartbeat_misses` periods without one.
  uint32_t heartbeat_interval_ms = 5000;
  uint32_t heartbeat_misses = 3;
  uint32_t stats_interval_ms = 10000;  // the monitor's sampling period; 0: off
  /// Embedded mode: start nats-server without TLS and users (development only).
  bool insecure_bus = false;
  /// External mode (--nats): directory holding <role>.seed nkeys, and the CA
  /// that signed the server's certificate. Both optional.
  std::filesystem::path nkey_dir;
  std::filesystem::path ca_file;
  /// Orchestrator front doors (gateway/, docs/operations.md "Orchestrators"),
  /// both on the bus as the `orchestrator` role.
  std::string cvms_url;  // dial a cocos CVMS server (cvms.Service/Process); empty: off
  std::filesystem::path cvms_ca, cvms_cert, cvms_key;  // TLS / mutual TLS to it
  std::string cvms_backend = "process";                // what a run request creates
  std::string cvms_tee = "sim";
  uint32_t cvms_cvm_ttl = 0;               // seconds; 0 = until StopComputation / coved exit
  uint32_t cvms_reconnect_max_ms = 30000;  // reconnect backoff cap
  std::string manager_grpc_listen;         // serve manager.ManagerService here; empty: off
  std::filesystem::path manager_grpc_cert, manager_grpc_key;
};

/// Parses coved's command line (CLI11). Prints help/usage itself; returns an
/// error with errc::none after --help.
expected<daemon_config> load_config(int argc, char** argv);

expected<void> validate(const daemon_config& cfg);

/// Runs until SIGTERM/SIGINT. Returns the process exit code.
int run(const daemon_config& cfg);

}  // namespace cove::daemon

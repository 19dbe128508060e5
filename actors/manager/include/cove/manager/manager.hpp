#pragma once
// The manager service: creates, lists, inspects and removes CVMs.
// Subjects: cove.v1.manager.{create,list,info,remove,policy}; events on cove.v1.events.cvm.
// Listens to cove.v1.events.bridge: a starting CVM whose agent the bridge refuses fails
// its create with the bridge's reason.
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "cove/actors.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/bus/connection.hpp"
#include "cove/manager/backend.hpp"
#include "cove/schemas/envelope_generated.h"

namespace cove::manager {

struct manager_config {
  std::filesystem::path state_dir;        // CVM work dirs live in <state_dir>/cvms/<id>
  std::filesystem::path agent_binary;     // cove-agent
  std::string agent_bridge_address;       // agents join through the bridge here, pinning
  std::filesystem::path agent_bridge_ca;  //   this certificate; or, when the address is empty,
  std::string agent_nats_url;             //   dial the bus directly (development only)
  std::string default_policy_json;        // policy of CVMs created without one
  std::string agent_log_level = "info";
  uint64_t agent_max_upload = 0;                          // cove-agent --max-upload; 0: the agent's default
  std::chrono::milliseconds agent_heartbeat_interval{0};  // cove-agent --heartbeat-interval; 0: its default
  std::string agent_vtpm_tcti;                            // cove-agent --vtpm; empty: agents quote no vTPM
  std::string agent_ima_list;  // cove-agent --ima-list (with agent_vtpm_tcti); empty: the agent's default
  std::string cocos_grpc_tls = "atls";  // the cocos front door of CVMs created with cocos_grpc: none | atls
  std::shared_ptr<bus::connection> bus;
  std::shared_ptr<cvm_backend> backend;              // CvmCreate.backend = process
  std::shared_ptr<cvm_backend> libvirt;              // CvmCreate.backend = libvirt; null: not offered
  std::shared_ptr<const attest::sim_root> sim_root;  // issues each CVM's simulated VCEK
  std::chrono::milliseconds create_timeout{15000};
  std::chrono::milliseconds vm_create_timeout{120000};  // libvirt: a TCG boot under load is slow
  std::chrono::milliseconds remove_timeout{5000};
  size_t max_cvms = 1024;
};

expected<void> validate(const manager_config& cfg);

struct cvm_record {
  std::string id;
  v1::Backend backend = v1::Backend::process;
  v1::Tee tee = v1::Tee::sim;
  v1::CvmState state = v1::CvmState::starting;
  pid_t pid = 0;  // the agent's (process) or QEMU's (libvirt)
  int64_t created_at_ns = 0;
  uint32_t ttl_seconds = 0;
  std::string detail;
  std::string policy_json;         // what the bridge admits this CVM's agent under
  std::string cocos_grpc_address;  // HOST:PORT of the agent's cocos front door; empty: none
  std::string launch_measurement;  // CvmInfo.launch_measurement (hex); empty: unknown
  std::filesystem::path dir;
  uint64_t generation = 0;                  // guards stale deadline messages
  std::string create_reply;                 // reply subject of a pending create
  std::vector<std::string> remove_replies;  // reply subjects of pending removes
  // The backend's launch runs on a worker (libvirt blocks for seconds): until its
  // `launched` message, pid is 0 and a stop is deferred (the backend does not know
  // the CVM yet); an exit or a ready event that overtakes it waits here.
  bool launching = false;
  std::optional<int> early_exit;  // wait status of an exit reported before `launched`
  bool early_ready = false;       // the agent announced readiness before `launched`
};

struct manager_state {
  static inline const char* name = "cove.manager";
  manager_config cfg;
  std::map<std::string, cvm_record> cvms;
  uint64_t generation = 0;
  std::string agent_measurement;  // SHA-384 (hex) of cfg.agent_binary, once hashed
};

/// Spawn function: `sys.spawn(cove::manager::manager, cfg)`.
manager_actor::behavior_type manager(manager_actor::stateful_pointer<manager_state> self, manager_config cfg);

}  // namespace cove::manager

#pragma once
// coved's orchestrator client: dials a computation-management server (Prism,
// or any cocos CVMS server) over the cvms.Service/Process bidirectional
// stream, turns its run/stop/state requests into bus requests (CVM create,
// computation start/stop/status) and streams cove's events back as cocos
// AgentEvent/AgentLog messages. Reconnects with capped exponential backoff.
// Semantics: gateway/README.md and docs/operations.md "Orchestrators".
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "cove/bus/connection.hpp"
#include "cove/expected.hpp"
#include "cove/schemas/cvm_generated.h"

namespace cove::gateway {

struct cvms_config {
  std::string url;  // HOST:PORT of the server (a grpc target; "dns:///h:p" also works)
  /// TLS: ca_file set -> TLS, server verified against it; cert_file + key_file
  /// set as well -> mutual TLS. All empty: plaintext (h2c).
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  std::shared_ptr<bus::connection> bus;  // the orchestrator role's connection
  /// What a run request creates.
  v1::Backend backend = v1::Backend::process;
  v1::Tee tee = v1::Tee::sim;
  uint32_t cvm_ttl_seconds = 0;  // 0: the CVM lives until StopComputation or coved exits
  /// Reconnect backoff: the first wait, doubled per failed attempt up to the cap.
  std::chrono::milliseconds backoff_initial{250};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds request_timeout{10000};  // computation start/stop/status
  std::chrono::milliseconds create_timeout{30000};   // manager create / remove
  /// Messages kept for the server while it is unreachable; beyond this the
  /// oldest are dropped (and counted).
  size_t outbox_limit = 10000;
};

expected<void> validate(const cvms_config& cfg);

struct cvms_stats {
  uint64_t streams = 0;      // streams opened (connections that reached the server)
  uint64_t disconnects = 0;  // streams that ended
  uint64_t sent = 0;         // messages written
  uint64_t dropped = 0;      // messages dropped from a full outbox
  size_t outbox = 0;         // messages waiting for the server
  size_t computations = 0;   // computations this client tracks
};

class cvms_client {
 public:
  /// Subscribes to cove's events and starts dialing. Fails only on bad
  /// config or a failed bus subscription; an unreachable server is retried.
  static expected<std::unique_ptr<cvms_client>> start(cvms_config cfg);
  /// Closes the stream and joins every thread. CVMs it created stay; coved
  /// removes them at shutdown.
  ~cvms_client();
  cvms_client(const cvms_client&) = delete;
  cvms_client& operator=(const cvms_client&) = delete;

  [[nodiscard]] cvms_stats stats() const;

  struct impl;

 private:
  explicit cvms_client(std::unique_ptr<impl> p) noexcept;
  std::unique_ptr<impl> impl_;
};

}  // namespace cove::gateway

#pragma once
// How the bridge decides to admit an agent: the CVM's policy from the manager
// (cove.v1.manager.info), then the attestation service's verdict on the hello's
// evidence under that policy, with REPORT_DATA bound to this TLS session
// (cove.v1.attestation.verify, binding = bridge_session). Both over the bus, so the
// bridge trusts only what those services answer.
#include <chrono>
#include <memory>

#include "cove/bridge/server.hpp"
#include "cove/bus/connection.hpp"

namespace cove::bridge {

struct admission_config {
  std::shared_ptr<bus::connection> bus;
  std::chrono::seconds valid_for{3600};  // how long an admission lasts before re-attestation
  std::chrono::milliseconds request_timeout{10000};
};

admit_fn make_admission(const admission_config& cfg);

}  // namespace cove::bridge

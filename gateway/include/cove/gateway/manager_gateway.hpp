#pragma once
// cocos's manager.ManagerService (CreateVm, RemoveVm, CVMInfo,
// AttestationPolicy) served with grpc++ and mapped onto cove.v1.manager.*,
// so an orchestrator that manages cocos managers can manage a cove host.
// Mapping and status codes: gateway/README.md.
#include <chrono>
#include <memory>
#include <string>

#include "cove/bus/connection.hpp"
#include "cove/expected.hpp"
#include "cove/schemas/cvm_generated.h"

namespace cove::gateway {

struct manager_gateway_config {
  std::string listen = "127.0.0.1:0";  // HOST:PORT; port 0 = any free
  /// TLS: both set -> the server presents this certificate; empty -> plaintext.
  std::string cert_file;
  std::string key_file;
  std::shared_ptr<bus::connection> bus;  // the orchestrator role's connection
  v1::Backend backend = v1::Backend::process;
  v1::Tee tee = v1::Tee::sim;
  std::chrono::milliseconds create_timeout{30000};  // create and remove
  std::chrono::milliseconds request_timeout{10000};
};

expected<void> validate(const manager_gateway_config& cfg);

class manager_gateway {
 public:
  static expected<std::unique_ptr<manager_gateway>> start(manager_gateway_config cfg);
  /// Shuts the server down (in-flight calls get a deadline of 5 s).
  ~manager_gateway();
  manager_gateway(const manager_gateway&) = delete;
  manager_gateway& operator=(const manager_gateway&) = delete;

  /// "HOST:PORT" with the port actually bound.
  [[nodiscard]] const std::string& address() const noexcept { return address_; }

  struct impl;

 private:
  explicit manager_gateway(std::unique_ptr<impl> p, std::string address) noexcept;
  std::unique_ptr<impl> impl_;
  std::string address_;
};

}  // namespace cove::gateway

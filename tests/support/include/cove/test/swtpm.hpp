#pragma once
// A swtpm (TPM 2.0 simulator) owned by a test, on free TCP ports of 127.0.0.1.
#include <memory>
#include <string>

#include "cove/expected.hpp"
#include "cove/test/process.hpp"

namespace cove::test {

class swtpm {
 public:
  /// Starts `swtpm socket --tpm2` with the server on port P and control on P+1 (free
  /// ports found by binding port 0; retried when another process takes them first),
  /// a fresh state directory and `--flags not-need-init,startup-clear`, then waits until
  /// the server port accepts connections. The binary is SWTPM_BIN if set, else `swtpm`
  /// from PATH.
  static expected<swtpm> start(clock::duration timeout = std::chrono::seconds(10));

  swtpm(swtpm&&) noexcept = default;
  swtpm& operator=(swtpm&&) noexcept = default;
  ~swtpm() = default;  // child_process kills (SIGKILL) and reaps by PID; temp_dir cleans up

  /// tpm2-tss TCTI configuration: "swtpm:host=127.0.0.1,port=P".
  [[nodiscard]] std::string tcti() const;
  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] pid_t pid() const noexcept { return proc_.pid(); }
  [[nodiscard]] bool running() const noexcept { return proc_.running(); }

 private:
  swtpm() = default;
  std::unique_ptr<temp_dir> dir_;
  child_process proc_;
  int port_ = 0;
};

}  // namespace cove::test

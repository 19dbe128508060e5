#pragma once
// A nats-server owned by a test, listening on 127.0.0.1 on a random port.
#include <filesystem>
#include <memory>
#include <string>

#include "cove/expected.hpp"
#include "cove/test/process.hpp"

namespace cove::test {

class nats_server {
 public:
  /// Starts NATS_SERVER_BIN with `-a 127.0.0.1 -p <port>` (port 0 = random, i.e.
  /// `-p -1`) and waits until its ports file names the client URL.
  static expected<nats_server> start(int port = 0, clock::duration timeout = std::chrono::seconds(10));
  /// Same, with `-c config` (e.g. TLS and nkey users; command-line address
  /// and port still win). The URL is tls:// when the config enables TLS.
  static expected<nats_server> start_with_config(const std::filesystem::path& config,
                                                 clock::duration timeout = std::chrono::seconds(10));

  nats_server(nats_server&&) noexcept = default;
  nats_server& operator=(nats_server&&) noexcept = default;
  ~nats_server() = default;  // child_process kills and reaps; temp_dir cleans up

  [[nodiscard]] const std::string& url() const noexcept { return url_; }
  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] pid_t pid() const noexcept { return proc_.pid(); }
  [[nodiscard]] bool running() const noexcept { return proc_.running(); }
  /// SIGHUP: the server reloads its config file (authorization included).
  void reload() const;
  /// The server's log (-l), for checking what it reported.
  [[nodiscard]] std::string log() const;
  /// Graceful stop (SIGTERM, then SIGKILL after a grace period).
  void stop() { proc_.terminate(std::chrono::seconds(5)); }
  /// SIGKILL: the server disappears without closing connections cleanly.
  void kill() { proc_.kill(); }

 private:
  nats_server() = default;
  static expected<nats_server> launch(std::vector<std::string> extra, int port, clock::duration timeout);
  std::unique_ptr<temp_dir> dir_;
  child_process proc_;
  std::string url_;
  int port_ = 0;
};

}  // namespace cove::test

#include "cove/test/nats_server.hpp"

#include <signal.h>

#include <fstream>
#include <iterator>

namespace cove::test {

namespace {
// The ports file is JSON: {"nats":["nats://127.0.0.1:PORT"],...} (2.9; some
// versions say "client"). Returns the first client URL once the file is complete.
std::string client_url(const std::filesystem::path& file) {
  std::ifstream f(file);
  if (!f) return {};
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto key = s.find("\"nats\"");
  if (key == std::string::npos) key = s.find("\"client\"");
  if (key == std::string::npos) return {};
  auto b = s.find("nats://", key);
  if (b == std::string::npos) b = s.find("tls://", key);
  if (b == std::string::npos) return {};
  auto e = s.find('"', b);
  if (e == std::string::npos) return {};
  return s.substr(b, e - b);
}
}  // namespace

expected<nats_server> nats_server::start(int port, clock::duration timeout) {
  return launch({}, port, timeout);
}

expected<nats_server> nats_server::start_with_config(const std::filesystem::path& config,
                                                     clock::duration timeout) {
  return launch({"-c", config.string()}, 0, timeout);
}

void nats_server::reload() const {
  if (proc_.running()) ::kill(proc_.pid(), SIGHUP);
}

std::string nats_server::log() const {
  std::ifstream f(dir_->path() / "nats-server.log");
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

expected<nats_server> nats_server::launch(std::vector<std::string> extra, int port, clock::duration timeout) {
  nats_server srv;
  srv.dir_ = std::make_unique<temp_dir>("cove-nats");
  const auto& dir = srv.dir_->path();
  std::vector<std::string> argv{NATS_SERVER_BIN,
                                "-a",
                                "127.0.0.1",
                                "-p",
                                port > 0 ? std::to_string(port) : "-1",
                                "--ports_file_dir",
                                dir.string(),
                                "-l",
                                (dir / "nats-server.log").string()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto proc = child_process::spawn(argv, {}, dir, "nats-server");
  if (!proc) return proc.error();
  srv.proc_ = std::move(*proc);
  auto exe = std::filesystem::path(NATS_SERVER_BIN).filename().string();
  auto ports = dir / (exe + "_" + std::to_string(srv.proc_.pid()) + ".ports");
  bool up = wait_until(
      [&] {
        if (!srv.proc_.running() || srv.proc_.wait_for_exit(clock::now())) return true;
        srv.url_ = client_url(ports);
        return !srv.url_.empty();
      },
      clock::now() + timeout);
  if (!up || srv.url_.empty()) {
    std::ifstream f(dir / "nats-server.stderr");
    std::string log((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return make_error(errc::unavailable, "nats-server did not start: " + log + srv.log());
  }
  auto colon = srv.url_.rfind(':');
  srv.port_ = std::stoi(srv.url_.substr(colon + 1));
  return srv;
}

}  // namespace cove::test

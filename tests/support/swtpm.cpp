#include "cove/test/swtpm.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

namespace cove::test {

namespace {

// Binds 127.0.0.1:port (0 = any) and returns the bound port, or 0 if it is taken.
int bind_port(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof a;
  int got = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    got = ntohs(a.sin_port);
  }
  ::close(fd);
  return got;
}

// A port P with P+1 also free (at the moment of asking).
int free_port_pair() {
  for (int i = 0; i < 50; ++i) {
    int p = bind_port(0);
    if (p > 0 && p < 65535 && bind_port(p + 1) == p + 1) return p;
  }
  return 0;
}

bool accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

std::string swtpm_binary() {
  if (const char* env = std::getenv("SWTPM_BIN"); env != nullptr && *env != '\0') return env;
  const char* path = std::getenv("PATH");
  std::stringstream ss(path != nullptr ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    auto p = std::filesystem::path(dir.empty() ? "." : dir) / "swtpm";
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "/usr/bin/swtpm";
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace

std::string swtpm::tcti() const {
  return "swtpm:host=127.0.0.1,port=" + std::to_string(port_);
}

expected<swtpm> swtpm::start(clock::duration timeout) {
  auto bin = swtpm_binary();
  auto deadline = clock::now() + timeout;
  std::string last_log;
  for (int attempt = 0; attempt < 5 && clock::now() < deadline; ++attempt) {
    swtpm t;
    t.dir_ = std::make_unique<temp_dir>("cove-swtpm");
    const auto& dir = t.dir_->path();
    std::filesystem::create_directory(dir / "state");
    int port = free_port_pair();
    if (port == 0) return make_error(errc::unavailable, "swtpm: no free port pair");
    std::vector<std::string> argv{bin,
                                  "socket",
                                  "--tpm2",
                                  "--server",
                                  "type=tcp,port=" + std::to_string(port) + ",bindaddr=127.0.0.1",
                                  "--ctrl",
                                  "type=tcp,port=" + std::to_string(port + 1) + ",bindaddr=127.0.0.1",
                                  "--tpmstate",
                                  "dir=" + (dir / "state").string(),
                                  "--flags",
                                  "not-need-init,startup-clear"};
    auto proc = child_process::spawn(argv, {}, dir, "swtpm");
    if (!proc) return proc.error();
    t.proc_ = std::move(*proc);
    t.port_ = port;
    // Ready when the server port accepts; an early exit (e.g. a port taken meanwhile) retries.
    bool exited = false;
    bool up = wait_until(
        [&] {
          if (t.proc_.wait_for_exit(clock::now())) {
            exited = true;
            return true;
          }
          return accepts(port);
        },
        deadline);
    if (up && !exited) return t;
    last_log = read_file(dir / "swtpm.stderr");
  }
  return make_error(errc::unavailable, "swtpm did not start: " + last_log);
}

}  // namespace cove::test

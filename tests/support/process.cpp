#include "cove/test/process.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "cove/spawn.hpp"

extern char** environ;

namespace cove::test {

bool wait_until(const std::function<bool()>& pred, clock::time_point deadline) {
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    if (pred()) return true;
    auto now = clock::now();
    if (now >= deadline) return pred();
    std::this_thread::sleep_for(std::min<clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
}

temp_dir::temp_dir(std::string_view prefix) {
  std::string tmpl = "/tmp/" + std::string(prefix) + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    std::fprintf(stderr, "temp_dir: mkdtemp failed: %s\n", std::strerror(errno));
    std::abort();
  }
  path_ = tmpl;
}

temp_dir::~temp_dir() {
  // COVE_TEST_KEEP=1 leaves every test directory (logs, state) for a post-mortem.
  if (const char* keep = std::getenv("COVE_TEST_KEEP"); keep != nullptr && *keep == '1') return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

child_process::~child_process() {
  reset();
}

child_process::child_process(child_process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), status_(std::exchange(other.status_, std::nullopt)) {}

child_process& child_process::operator=(child_process&& other) noexcept {
  if (this != &other) {
    reset();
    pid_ = std::exchange(other.pid_, -1);
    status_ = std::exchange(other.status_, std::nullopt);
  }
  return *this;
}

void child_process::reset() noexcept {
  if (pid_ > 0 && !status_) kill();
  pid_ = -1;
  status_.reset();
}

expected<child_process> child_process::spawn(const std::vector<std::string>& argv,
                                             const std::vector<std::string>& env,
                                             const std::filesystem::path& log_dir, std::string_view name) {
  if (argv.empty()) return make_error(errc::invalid_request, "spawn: empty argv");
  // Environment: ours, minus keys overridden by `env`, plus `env`.
  std::vector<std::string> envs;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view kv(*e);
    auto key = kv.substr(0, kv.find('='));
    bool overridden = std::any_of(env.begin(), env.end(), [&](const std::string& a) {
      return std::string_view(a).substr(0, a.find('=')) == key;
    });
    if (!overridden) envs.emplace_back(kv);
  }
  envs.insert(envs.end(), env.begin(), env.end());
  std::vector<char*> cenv;
  cenv.reserve(envs.size() + 1);
  for (const auto& e : envs) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);
  auto pid = spawn_in_process_group(argv,
                                    {.out = log_dir / (std::string(name) + ".stdout"),
                                     .err = log_dir / (std::string(name) + ".stderr"),
                                     .mode = 0644},
                                    cenv.data());
  if (!pid) return std::move(pid).error();
  child_process p;
  p.pid_ = *pid;
  return p;
}

std::optional<int> child_process::wait_for_exit(clock::time_point deadline) {
  if (status_ || pid_ <= 0) return status_;
  // pidfd_open + poll: wakes exactly when the child exits, no polling loop.
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  for (;;) {
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = st;
      break;
    }
    if (r < 0 && errno != EINTR) break;  // not our child any more
    auto now = clock::now();
    if (now >= deadline) break;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<long long>(ms, 1000)));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min<long long>(ms, 5)));
    }
  }
  if (fd >= 0) ::close(fd);
  return status_;
}

std::optional<int> child_process::terminate(clock::duration grace) {
  if (status_ || pid_ <= 0) return status_;
  ::kill(pid_, SIGTERM);
  if (auto st = wait_for_exit(clock::now() + grace)) return st;
  return kill();
}

std::optional<int> child_process::kill() {
  if (status_ || pid_ <= 0) return status_;
  ::kill(pid_, SIGKILL);
  // SIGKILL cannot be caught; the child is gone as soon as the kernel reaps it.
  return wait_for_exit(clock::now() + std::chrono::seconds(30));
}

}  // namespace cove::test

#include "cove/manager/process_backend.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>

#include <fmt/format.h>

#include "cove/spawn.hpp"

namespace cove::manager {

process_backend::process_backend(std::function<void(const std::string&, int)> on_exit)
    : on_exit_(std::move(on_exit)) {}

process_backend::~process_backend() {
  shutdown();
}

void process_backend::shutdown() {
  {
    std::lock_guard lock(mu_);
    shut_down_ = true;  // a launch still on its worker starts nothing after this
  }
  kill_all();
  std::vector<std::thread> reapers;
  {
    std::lock_guard lock(mu_);
    reapers.swap(reapers_);
  }
  for (auto& t : reapers)
    if (t.joinable()) t.join();
}

expected<pid_t> process_backend::launch(const agent_launch& l) {
  std::vector<std::string> args = {l.agent_binary.string(),
                                   "--cvm-id",
                                   l.cvm_id,
                                   "--work-dir",
                                   l.work_dir.string(),
                                   "--sim-dir",
                                   l.tee_dir.string(),
                                   "--log-level",
                                   l.log_level,
                                   "--parent-pid",
                                   std::to_string(getpid())};
  if (!l.bridge_address.empty()) {
    args.insert(args.end(), {"--bridge", l.bridge_address, "--bridge-ca", l.bridge_ca.string()});
  } else {
    args.insert(args.end(), {"--nats", l.nats_url});
  }
  if (l.max_upload_bytes > 0) {
    args.emplace_back("--max-upload");
    args.push_back(std::to_string(l.max_upload_bytes));
  }
  if (l.heartbeat_interval_ms > 0) {
    args.emplace_back("--heartbeat-interval");
    args.push_back(std::to_string(l.heartbeat_interval_ms));
  }
  if (!l.vtpm_tcti.empty()) args.insert(args.end(), {"--vtpm", l.vtpm_tcti});
  if (!l.vtpm_tcti.empty() && !l.ima_list.empty()) args.insert(args.end(), {"--ima-list", l.ima_list});
  if (l.cocos_grpc_port != 0)
    args.insert(args.end(), {"--grpc-listen", "127.0.0.1:" + std::to_string(l.cocos_grpc_port), "--grpc-tls",
                             l.cocos_grpc_tls});
  // Under the lock: the reaper below must find the pid in live_.
  std::lock_guard lock(mu_);
  if (shut_down_) return make_error(errc::unavailable, "process backend: shutting down");
  auto spawned = spawn_in_process_group(args, {.out = l.log_file, .append = true});
  if (!spawned) return std::move(spawned).error();
  pid_t pid = *spawned;
  live_.emplace(pid, l.cvm_id);
  reapers_.emplace_back([this, pid, id = l.cvm_id] {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    {
      std::lock_guard lock(mu_);
      live_.erase(pid);
    }
    on_exit_(id, status);
  });
  return pid;
}

void process_backend::signal(pid_t pid, int sig) const {
  std::lock_guard lock(mu_);
  if (live_.count(pid) != 0) ::kill(-pid, sig);
}

void process_backend::stop(const std::string& /*cvm_id*/, pid_t pid, bool force) {
  signal(pid, force ? SIGKILL : SIGTERM);
}

std::string process_backend::describe_exit(const std::string& /*cvm_id*/, int status) const {
  return "agent " + describe_wait_status(status);
}

void process_backend::kill_all() {
  std::lock_guard lock(mu_);
  for (const auto& [pid, id] : live_) ::kill(-pid, SIGKILL);
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return fmt::format("wait status {}", status);
}

}  // namespace cove::manager

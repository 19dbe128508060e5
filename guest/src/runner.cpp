#include "cove/agent/runner.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace cove::agent {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono;

constexpr size_t tail_size = 4096;

error sys_error(errc code, const std::string& what, int err = errno) {
  return make_error(code, what + ": " + std::strerror(err));
}

void close_fd(int& fd) noexcept {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

int pidfd_open(pid_t pid) noexcept {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

// Reads what is available now; closes fd at EOF or error. Keeps the last
// tail_size bytes in `tail` when it is non-null.
void drain(int& fd, std::string* tail) {
  char buf[16384];
  while (fd >= 0) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      close_fd(fd);
      return;
    }
    if (tail != nullptr) {
      tail->append(buf, static_cast<size_t>(n));
      if (tail->size() > 2 * tail_size) tail->erase(0, tail->size() - tail_size);
    }
  }
}

std::string finish_tail(std::string t) {
  if (t.size() > tail_size) {
    t.erase(0, t.size() - tail_size);
    // Do not start in the middle of a UTF-8 sequence.
    size_t skip = 0;
    while (skip < t.size() && skip < 3 && (static_cast<uint8_t>(t[skip]) & 0xC0) == 0x80) ++skip;
    t.erase(0, skip);
  }
  return t;
}

std::string format_duration(milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

// posix_spawn's C structures, destroyed on every path.
struct spawn_setup {
  posix_spawn_file_actions_t actions{};
  posix_spawnattr_t attr{};
  bool actions_ok = false, attr_ok = false;
  ~spawn_setup() {
    if (actions_ok) posix_spawn_file_actions_destroy(&actions);
    if (attr_ok) posix_spawnattr_destroy(&attr);
  }
};

}  // namespace

std::string describe(const run_outcome& o) {
  std::string tail = o.stderr_tail;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r' || tail.back() == ' ')) tail.pop_back();
  if (o.cancelled) return "cancelled";
  if (o.timed_out) return "timed out after " + format_duration(o.timeout);
  std::string s = o.term_signal != 0 ? "killed by signal " + std::to_string(o.term_signal)
                                     : "exit status " + std::to_string(o.exit_code);
  if (!o.succeeded() && !tail.empty()) s += ": " + tail;
  return s;
}

running_algorithm::~running_algorithm() {
  if (pid_ > 0) {
    bool waited = false;
    {
      std::lock_guard lock(wait_mu_);
      waited = result_.has_value();
    }
    if (!waited) {
      cancel();
      (void)wait();
    }
  }
  close_fd(pidfd_);
  close_fd(wake_fd_);
  close_fd(stderr_fd_);
  close_fd(stdout_fd_);
}

void running_algorithm::kill_group_locked(kill_reason why) noexcept {
  if (reaped_ || pid_ <= 0) return;
  // The leader is not reaped yet, so its pid (= the group id) cannot have
  // been reused.
  ::kill(-pid_, SIGKILL);
  if (kill_reason_ == kill_reason::none) kill_reason_ = why;
}

void running_algorithm::cancel() noexcept {
  {
    std::lock_guard lock(mu_);
    kill_group_locked(kill_reason::cancel);
  }
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  }
}

expected<run_outcome> running_algorithm::wait() {
  std::lock_guard wait_lock(wait_mu_);
  if (result_) return *result_;
  const auto deadline = started_ + timeout_;
  bool deadline_passed = false;
  std::string tail;
  for (;;) {
    int poll_ms = -1;
    if (timeout_.count() > 0 && !deadline_passed) {
      auto left = ceil<milliseconds>(deadline - steady_clock::now());
      if (left.count() <= 0) {
        deadline_passed = true;
        std::lock_guard lock(mu_);
        kill_group_locked(kill_reason::timeout);
      } else {
        poll_ms = static_cast<int>(std::min<int64_t>(left.count(), 24 * 3600 * 1000));
      }
    }
    pollfd fds[4] = {
        {pidfd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}, {stderr_fd_, POLLIN, 0}, {stdout_fd_, POLLIN, 0}};
    int n = ::poll(fds, 4, poll_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Should not happen; do not leave the algorithm running.
      std::lock_guard lock(mu_);
      kill_group_locked(kill_reason::cancel);
      break;
    }
    if (fds[2].revents != 0) drain(stderr_fd_, &tail);
    if (fds[3].revents != 0) drain(stdout_fd_, nullptr);
    if (fds[1].revents != 0) {
      uint64_t v = 0;
      [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof v);
    }
    if (fds[0].revents != 0) break;  // the leader exited (a zombie until reaped below)
  }
  int status = 0;
  kill_reason why = kill_reason::none;
  {
    std::lock_guard lock(mu_);
    // Stragglers the algorithm left in its group die with it.
    ::kill(-pid_, SIGKILL);
    pid_t r;
    do r = ::waitpid(pid_, &status, 0);
    while (r < 0 && errno == EINTR);
    reaped_ = true;
    why = kill_reason_;
  }
  const auto elapsed = duration_cast<milliseconds>(steady_clock::now() - started_);
  drain(stderr_fd_, &tail);
  drain(stdout_fd_, nullptr);
  close_fd(stderr_fd_);
  close_fd(stdout_fd_);
  close_fd(pidfd_);

  run_outcome o;
  o.elapsed = elapsed;
  o.timeout = timeout_.count() > 0 ? timeout_ : milliseconds{0};
  o.stderr_tail = finish_tail(std::move(tail));
  if (WIFEXITED(status)) {
    o.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    o.term_signal = WTERMSIG(status);
    // Only a kill of ours counts as timeout/cancel (an exit racing it wins).
    if (o.term_signal == SIGKILL) {
      o.timed_out = why == kill_reason::timeout;
      o.cancelled = why == kill_reason::cancel;
    }
  }
  result_ = o;
  return o;
}

expected<std::shared_ptr<running_algorithm>> runner::start(const run_request& req) {
  if (req.type == algo_type::wasm)
    return make_error(errc::invalid_request, "wasm algorithms are not supported in this build");
  if (req.type != algo_type::bin && req.type != algo_type::python)
    return make_error(errc::invalid_request, "unknown algorithm type");
  std::error_code ec;
  if (!fs::is_directory(req.work_dir, ec))
    return make_error(errc::invalid_request, "work directory does not exist: " + req.work_dir.string());
  const fs::path results = req.work_dir / "results";
  if (!fs::exists(results, ec)) {
    fs::create_directory(results, ec);
    if (!ec) fs::permissions(results, fs::perms(0755), ec);
    if (ec) return make_error(errc::internal, "cannot create results directory: " + ec.message());
  }
  const fs::path algo = fs::absolute(req.algorithm, ec);
  if (ec || !fs::is_regular_file(algo, ec))
    return make_error(errc::invalid_request, "algorithm file does not exist: " + req.algorithm.string());

  std::vector<std::string> argv_s;
  if (req.type == algo_type::python) argv_s.push_back(req.python);
  argv_s.push_back(algo.string());
  argv_s.insert(argv_s.end(), req.args.begin(), req.args.end());
  std::vector<std::string> env_s = req.env;
  if (env_s.empty())
    env_s = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "HOME=" + fs::absolute(req.work_dir, ec).string(), "LANG=C.UTF-8"};
  std::vector<char*> argv, envp;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  for (auto& s : env_s) envp.push_back(s.data());
  envp.push_back(nullptr);

  std::shared_ptr<running_algorithm> h(new running_algorithm());
  int err_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1};
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return sys_error(errc::internal, "pipe");
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    auto e = sys_error(errc::internal, "pipe");
    close_fd(err_pipe[0]);
    close_fd(err_pipe[1]);
    return e;
  }
  h->stderr_fd_ = err_pipe[0];
  h->stdout_fd_ = out_pipe[0];
  struct write_ends {
    int* a;
    int* b;
    ~write_ends() {
      close_fd(*a);
      close_fd(*b);
    }
  } close_write{&err_pipe[1], &out_pipe[1]};
  ::fcntl(h->stderr_fd_, F_SETFL, O_NONBLOCK);
  ::fcntl(h->stdout_fd_, F_SETFL, O_NONBLOCK);
  h->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (h->wake_fd_ < 0) return sys_error(errc::internal, "eventfd");

  spawn_setup ss;
  int rc = posix_spawn_file_actions_init(&ss.actions);
  ss.actions_ok = rc == 0;
  if (rc == 0) rc = posix_spawnattr_init(&ss.attr);
  ss.attr_ok = ss.actions_ok && rc == 0;
  if (rc == 0) rc = posix_spawn_file_actions_addopen(&ss.actions, 0, "/dev/null", O_RDONLY, 0);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&ss.actions, out_pipe[1], 1);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&ss.actions, err_pipe[1], 2);
  if (rc == 0) rc = posix_spawn_file_actions_addchdir_np(&ss.actions, req.work_dir.c_str());
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  if (rc == 0)
    rc = posix_spawnattr_setflags(&ss.attr,
                                  POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  if (rc == 0) rc = posix_spawnattr_setpgroup(&ss.attr, 0);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&ss.attr, &none);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&ss.attr, &all);
  if (rc != 0) return sys_error(errc::internal, "posix_spawn setup", rc);

  pid_t pid = -1;
  h->started_ = steady_clock::now();
  if (req.type == algo_type::python)
    rc = posix_spawnp(&pid, argv[0], &ss.actions, &ss.attr, argv.data(), envp.data());
  else
    rc = posix_spawn(&pid, argv[0], &ss.actions, &ss.attr, argv.data(), envp.data());
  if (rc != 0) return sys_error(errc::invalid_request, "cannot start algorithm", rc);
  h->pid_ = pid;
  h->timeout_ = req.timeout.count() > 0 ? req.timeout : milliseconds{0};
  h->pidfd_ = pidfd_open(pid);
  if (h->pidfd_ < 0) {
    auto e = sys_error(errc::internal, "pidfd_open");
    std::lock_guard lock(h->mu_);
    ::kill(-pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    h->reaped_ = true;
    h->result_ = e;
    return e;
  }
  return h;
}

expected<run_outcome> runner::run(const run_request& req) {
  auto h = start(req);
  if (!h) return std::move(h).error();
  return (*h)->wait();
}

}  // namespace cove::agent

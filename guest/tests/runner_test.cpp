#include <doctest/doctest.h>

#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <thread>

#include "cove/agent/runner.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using cove::agent::run_request;
using cove::agent::runner;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "cove-runner-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

fs::path script(const fs::path& dir, const std::string& body, const std::string& name = "algo") {
  fs::path p = dir / name;
  std::ofstream(p) << body;
  REQUIRE(::chmod(p.c_str(), 0755) == 0);
  return p;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

run_request bin_request(const temp_dir& d, const std::string& body) {
  run_request req;
  req.work_dir = d.path / "work";
  fs::create_directories(req.work_dir);
  req.algorithm = script(d.path, body);
  req.timeout = 30s;
  return req;
}

// True once `pid` has exited (gone or a zombie); waits on a pidfd, no sleeps.
bool exits_within(pid_t pid, int ms) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  pollfd p{fd, POLLIN, 0};
  int n = ::poll(&p, 1, ms);
  ::close(fd);
  return n == 1;
}

}  // namespace

TEST_CASE("a bin algorithm runs in work_dir and writes results") {
  temp_dir d;
  auto req = bin_request(d, "#!/bin/sh\necho \"$1-$2\" > results/out.txt\n[ -z \"$(cat)\" ] || exit 3\n");
  req.args = {"a b", "c"};
  auto o = runner::run(req);
  REQUIRE_MESSAGE(o, (o ? "" : o.error().message));
  CHECK(o->succeeded());
  CHECK(o->exit_code == 0);
  CHECK(cove::agent::describe(*o) == "exit status 0");
  CHECK(slurp(req.work_dir / "results" / "out.txt") == "a b-c\n");
  CHECK(o->elapsed < 30s);
}

TEST_CASE("a failing algorithm reports its exit status and stderr tail") {
  temp_dir d;
  auto o =
      runner::run(bin_request(d, "#!/bin/sh\necho 'lots of output' \necho 'boom: bad input' >&2\nexit 1\n"));
  REQUIRE(o);
  CHECK_FALSE(o->succeeded());
  CHECK(o->exit_code == 1);
  CHECK(o->stderr_tail == "boom: bad input\n");
  CHECK(cove::agent::describe(*o) == "exit status 1: boom: bad input");
}

TEST_CASE("only the last 4 KiB of stderr are kept and a stdout flood does not block") {
  temp_dir d;
  auto o = runner::run(bin_request(d,
                                   "#!/bin/sh\nhead -c 2000000 /dev/zero | tr '\\0' x\nhead -c 10000 "
                                   "/dev/zero | tr '\\0' y >&2\necho END >&2\n"));
  REQUIRE(o);
  CHECK(o->exit_code == 0);
  CHECK(o->stderr_tail.size() == 4096);
  CHECK(o->stderr_tail.ends_with("yyyEND\n"));
}

TEST_CASE("a python algorithm gets its arguments") {
  temp_dir d;
  run_request req;
  req.work_dir = d.path;
  req.type = cove::algo_type::python;
  req.algorithm =
      script(d.path, "import sys\nopen('results/args.txt', 'w').write(','.join(sys.argv[1:]))\n", "algo.py");
  req.args = {"--n", "3"};
  auto o = runner::run(req);
  REQUIRE_MESSAGE(o, (o ? "" : o.error().message));
  CHECK_MESSAGE(o->exit_code == 0, o->stderr_tail);
  CHECK(slurp(d.path / "results" / "args.txt") == "--n,3");
}

TEST_CASE("a timeout kills the algorithm and reports it") {
  temp_dir d;
  auto req = bin_request(d, "#!/bin/sh\nexec sleep 100\n");
  req.timeout = 200ms;
  auto h = runner::start(req);
  REQUIRE(h);
  const pid_t pid = (*h)->pid();
  auto o = (*h)->wait();
  REQUIRE(o);
  CHECK(o->timed_out);
  CHECK(o->term_signal == SIGKILL);
  CHECK(o->elapsed >= 200ms);
  CHECK(o->elapsed < 20s);
  CHECK(cove::agent::describe(*o) == "timed out after 200ms");
  errno = 0;
  CHECK(::kill(pid, 0) == -1);  // reaped: no zombie left
  CHECK(errno == ESRCH);
  // wait() again gives the same outcome.
  auto again = (*h)->wait();
  REQUIRE(again);
  CHECK(again->timed_out);
}

TEST_CASE("cancel() from another thread kills a running algorithm") {
  temp_dir d;
  auto h = runner::start(bin_request(d, "#!/bin/sh\nsleep 100\n"));
  REQUIRE(h);
  auto handle = *h;
  std::thread t([handle] { handle->cancel(); });
  auto o = handle->wait();
  t.join();
  REQUIRE(o);
  CHECK(o->cancelled);
  CHECK_FALSE(o->timed_out);
  CHECK(cove::agent::describe(*o) == "cancelled");
  handle->cancel();  // after the end: harmless
}

TEST_CASE("a crash by signal is reported") {
  temp_dir d;
  auto o = runner::run(bin_request(d, "#!/bin/sh\necho dying >&2\nkill -SEGV $$\n"));
  REQUIRE(o);
  CHECK(o->term_signal == SIGSEGV);
  CHECK(o->exit_code == -1);
  CHECK_FALSE(o->timed_out);
  CHECK(cove::agent::describe(*o) == "killed by signal 11: dying");
}

TEST_CASE("the process group kill takes the algorithm's children too") {
  temp_dir d;
  SUBCASE("on timeout") {
    auto req = bin_request(d, "#!/bin/sh\nsleep 100 &\necho $! > child.pid\nwait\n");
    req.timeout = 300ms;
    auto o = runner::run(req);
    REQUIRE(o);
    CHECK(o->timed_out);
    const pid_t child = std::stoi(slurp(req.work_dir / "child.pid"));
    CHECK(exits_within(child, 10000));
  }
  SUBCASE("when the algorithm exits and leaves a child behind") {
    auto req = bin_request(d, "#!/bin/sh\nsleep 100 &\necho $! > child.pid\nexit 0\n");
    auto o = runner::run(req);
    REQUIRE(o);
    CHECK(o->exit_code == 0);
    const pid_t child = std::stoi(slurp(req.work_dir / "child.pid"));
    CHECK(exits_within(child, 10000));
  }
}

TEST_CASE("a handle destroyed without wait() kills and reaps") {
  temp_dir d;
  pid_t pid = -1;
  {
    auto h = runner::start(bin_request(d, "#!/bin/sh\nexec sleep 100\n"));
    REQUIRE(h);
    pid = (*h)->pid();
  }
  errno = 0;
  CHECK(::kill(pid, 0) == -1);
  CHECK(errno == ESRCH);
}

TEST_CASE("start errors: wasm, missing algorithm, missing work_dir, not executable") {
  temp_dir d;
  auto req = bin_request(d, "#!/bin/sh\nexit 0\n");
  req.type = cove::algo_type::wasm;
  auto r = runner::start(req);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == cove::errc::invalid_request);
  CHECK(r.error().message == "wasm algorithms are not supported in this build");

  req.type = cove::algo_type::bin;
  req.algorithm = d.path / "nope";
  CHECK_FALSE(runner::start(req));

  req = bin_request(d, "#!/bin/sh\nexit 0\n");
  req.work_dir = d.path / "missing";
  CHECK_FALSE(runner::start(req));

  req = bin_request(d, "#!/bin/sh\nexit 0\n");
  REQUIRE(::chmod(req.algorithm.c_str(), 0644) == 0);
  r = runner::start(req);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.starts_with("cannot start algorithm"));
}

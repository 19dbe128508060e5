// tests/support: child_process, temp_dir, wait_until, nats_server.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <cstdlib>

#include <fstream>

#include "cove/test/nats_server.hpp"
#include "cove/test/process.hpp"

using namespace cove::test;
using namespace std::chrono_literals;

TEST_CASE("temp_dir is created and removed") {
  ::unsetenv("COVE_TEST_KEEP");  // the post-mortem switch would keep it
  std::filesystem::path p;
  {
    temp_dir d;
    p = d.path();
    CHECK(std::filesystem::is_directory(p));
    std::ofstream(p / "f") << "x";
  }
  CHECK_FALSE(std::filesystem::exists(p));
}

TEST_CASE("child_process: exit status, env, output redirection") {
  temp_dir d;
  auto p = child_process::spawn({"/bin/sh", "-c", "echo \"$COVE_X\"; echo err >&2; exit 3"}, {"COVE_X=hello"},
                                d.path(), "sh");
  REQUIRE(p.has_value());
  auto st = p->wait_for_exit(deadline_in(10s));
  REQUIRE(st.has_value());
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 3);
  std::ifstream out(d.path() / "sh.stdout");
  std::string line;
  std::getline(out, line);
  CHECK(line == "hello");
  CHECK_FALSE(p->running());
}

TEST_CASE("child_process: own process group, terminate and kill reap by pid") {
  temp_dir d;
  auto p = child_process::spawn({"/bin/sleep", "600"}, {}, d.path(), "sleep");
  REQUIRE(p.has_value());
  pid_t pid = p->pid();
  CHECK(getpgid(pid) == pid);
  CHECK_FALSE(p->wait_for_exit(deadline_in(20ms)).has_value());  // still running
  auto st = p->terminate(5s);
  REQUIRE(st.has_value());
  CHECK(WIFSIGNALED(*st));
  CHECK(WTERMSIG(*st) == SIGTERM);
  CHECK(::kill(pid, 0) == -1);  // reaped: the pid no longer exists for us

  // A child that ignores SIGTERM is SIGKILLed after the grace period.
  auto q = child_process::spawn({"/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"}, {},
                                d.path(), "stubborn");
  REQUIRE(q.has_value());
  REQUIRE(wait_until(
      [&] {
        std::ifstream f(d.path() / "stubborn.stdout");
        std::string l;
        return std::getline(f, l) && l == "ready";
      },
      deadline_in(10s)));
  auto st2 = q->terminate(200ms);
  REQUIRE(st2.has_value());
  CHECK(WIFSIGNALED(*st2));
  CHECK(WTERMSIG(*st2) == SIGKILL);

  // The destructor kills and reaps.
  pid_t pid3 = 0;
  {
    auto r = child_process::spawn({"/bin/sleep", "600"}, {}, d.path(), "sleep3");
    REQUIRE(r.has_value());
    pid3 = r->pid();
  }
  CHECK(::kill(pid3, 0) == -1);
}

TEST_CASE("child_process: spawning a missing binary fails") {
  temp_dir d;
  auto p = child_process::spawn({"/nonexistent/cove-binary"}, {}, d.path(), "x");
  if (p) {  // glibc may report exec failure as exit status 127 instead
    auto st = p->wait_for_exit(deadline_in(10s));
    REQUIRE(st.has_value());
    CHECK(WEXITSTATUS(*st) == 127);
  }
}

TEST_CASE("wait_until honours its deadline") {
  int calls = 0;
  auto t0 = clock::now();
  CHECK_FALSE(wait_until([&] { return ++calls > 1000000; }, t0 + 50ms));
  CHECK(clock::now() - t0 >= 50ms);
  CHECK(wait_until([] { return true; }, t0));
}

TEST_CASE("nats_server starts on a random port and stops") {
  auto a = nats_server::start();
  REQUIRE_MESSAGE(a.has_value(), (a ? "" : a.error().to_string()));
  auto b = nats_server::start();
  REQUIRE(b.has_value());
  CHECK(a->url().starts_with("nats://127.0.0.1:"));
  CHECK(a->port() > 0);
  CHECK(a->port() != b->port());
  pid_t pid = a->pid();
  a->stop();
  CHECK_FALSE(a->running());
  CHECK(::kill(pid, 0) == -1);
}

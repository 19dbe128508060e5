#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <deque>
#include <map>
#include <set>

#include <fmt/format.h>

#include "cove/monitor/stats_source.hpp"

namespace cove::monitor {

namespace {

template <class T>
bool parse_number(std::string_view s, T& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

/// Reads a small /proc file in one go (they are generated on read; no size is known).
bool read_small(const std::string& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out.resize(4096);
  size_t n = 0;
  for (;;) {
    ssize_t r = ::read(fd, out.data() + n, out.size() - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += static_cast<size_t>(r);
    if (n == out.size()) out.resize(out.size() * 2);
    if (out.size() > 65536) break;
  }
  ::close(fd);
  out.resize(n);
  return n > 0;
}

}  // namespace

expected<proc_stat> parse_proc_stat(std::string_view line) {
  // "<pid> (<comm>) <state> <ppid> <pgrp> <session> <tty> <tpgid> <flags> <minflt> <cminflt>
  //  <majflt> <cmajflt> <utime> <stime> <cutime> <cstime> <priority> <nice> <threads>
  //  <itrealvalue> <starttime> <vsize> <rss> ..."
  auto bad = [](std::string_view why) {
    return make_error(errc::invalid_request, "proc stat: " + std::string(why));
  };
  auto open = line.find(" (");
  auto close = line.rfind(')');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open)
    return bad("no command name");
  proc_stat st;
  if (!parse_number(line.substr(0, open), st.pid) || st.pid <= 0) return bad("pid");
  std::string_view rest = line.substr(close + 1);
  // Fields from <state> on; index 0 is the state.
  std::vector<std::string_view> f;
  while (!rest.empty() && f.size() < 22) {
    auto start = rest.find_first_not_of(" \n");
    if (start == std::string_view::npos) break;
    rest.remove_prefix(start);
    auto end = rest.find_first_of(" \n");
    f.push_back(rest.substr(0, end));
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
  }
  if (f.size() < 22) return bad("too few fields");
  if (f[0].size() != 1) return bad("state");
  st.state = f[0][0];
  if (!parse_number(f[1], st.ppid) || !parse_number(f[2], st.pgrp)) return bad("ppid/pgrp");
  if (!parse_number(f[11], st.utime_ticks) || !parse_number(f[12], st.stime_ticks)) return bad("utime/stime");
  if (!parse_number(f[21], st.rss_pages)) return bad("rss");
  return st;
}

std::string proc_state_name(char state) {
  switch (state) {
    case 'R':
      return "running";
    case 'S':
      return "sleeping";
    case 'D':
      return "disk-sleep";
    case 'T':
      return "stopped";
    case 't':
      return "tracing-stop";
    case 'Z':
      return "zombie";
    case 'X':
    case 'x':
      return "dead";
    case 'I':
      return "idle";
    default:
      return fmt::format("state {}", state);
  }
}

process_stats_source::process_stats_source(std::filesystem::path proc_root) : root_(std::move(proc_root)) {
  long hz = ::sysconf(_SC_CLK_TCK);
  long page = ::sysconf(_SC_PAGESIZE);
  ns_per_tick_ = hz > 0 ? 1'000'000'000ull / static_cast<uint64_t>(hz) : 10'000'000ull;
  page_size_ = page > 0 ? static_cast<uint64_t>(page) : 4096;
}

std::vector<expected<cvm_sample>> process_stats_source::sample(const std::vector<stats_target>& targets) {
  // One scan of /proc: every process's stat, and who its children and group members are.
  std::map<pid_t, proc_stat> procs;
  std::multimap<pid_t, pid_t> children;  // ppid -> pid
  std::multimap<pid_t, pid_t> members;   // pgrp -> pid
  if (DIR* d = ::opendir(root_.c_str())) {
    std::string buf;
    while (dirent* e = ::readdir(d)) {
      pid_t pid = 0;
      if (!parse_number(std::string_view(e->d_name), pid)) continue;
      if (!read_small(fmt::format("{}/{}/stat", root_.string(), e->d_name), buf)) continue;  // gone meanwhile
      auto st = parse_proc_stat(buf);
      if (!st || st->pid != pid) continue;
      children.emplace(st->ppid, pid);
      members.emplace(st->pgrp, pid);
      procs.emplace(pid, *st);
    }
    ::closedir(d);
  } else {
    std::vector<expected<cvm_sample>> all;
    for (size_t i = 0; i < targets.size(); ++i)
      all.emplace_back(make_error(errc::unavailable, "cannot read " + root_.string()));
    return all;
  }

  std::vector<expected<cvm_sample>> out;
  out.reserve(targets.size());
  for (const auto& t : targets) {
    auto self = procs.find(t.pid);
    if (t.pid <= 0 || self == procs.end()) {
      out.emplace_back(make_error(errc::not_found, fmt::format("process {} is gone", t.pid)));
      continue;
    }
    // The agent, its process group, and every descendant of either.
    std::set<pid_t> seen;
    std::deque<pid_t> todo = {t.pid};
    for (auto [it, end] = members.equal_range(t.pid); it != end; ++it) todo.push_back(it->second);
    while (!todo.empty() && seen.size() < 100000) {
      pid_t p = todo.front();
      todo.pop_front();
      if (!seen.insert(p).second) continue;
      for (auto [it, end] = children.equal_range(p); it != end; ++it) todo.push_back(it->second);
    }
    cvm_sample s;
    s.run_state = proc_state_name(self->second.state);
    for (pid_t p : seen) {
      auto it = procs.find(p);
      if (it == procs.end()) continue;
      s.cpu_time_ns += (it->second.utime_ticks + it->second.stime_ticks) * ns_per_tick_;
      if (it->second.rss_pages > 0)
        s.memory_bytes += static_cast<uint64_t>(it->second.rss_pages) * page_size_;
      ++s.processes;
    }
    out.emplace_back(std::move(s));
  }
  return out;
}

}  // namespace cove::monitor

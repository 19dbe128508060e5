// cove-bench: end-to-end performance of cove against real components.
//
// Everything runs for real: a nats-server on a random port, a coved child process
// (process backend, simulated SEV-SNP), cove-agent processes, the client library
// the CLI uses, and the `cove` binary itself for its peak RSS. Every comparison is
// a ratio against a reference measured in the same run on the same machine
// (SHA3-256, libsodium secretstream, raw NATS). See docs/performance.md.
//
// Usage: cove-bench [--out DIR]   (default DIR: ./bench; writes DIR/results.json)
// Environment:
//   COVE_BENCH_UPLOAD_MIB  large upload size (default 1024)
//   COVE_BENCH_RESULT_MIB  result size (default 256)
//   COVE_BENCH_CVMS        concurrent CVMs (default 200)
//   COVE_BENCH_RTT         status round trips (default 2000)
//   COVE_BENCH_ONLY        comma-separated sections: crypto,nats,upload,rtt,launch,vm,concurrent,snp,measure
//   COVE_BENCH_EOS         EOS image for the `vm` section (default: <build>/eos, ./cove.sh eos builds it)
#include <fcntl.h>
#include <signal.h>
#include <sodium.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "cove/attest/chain_cache.hpp"
#include "cove/attest/measure.hpp"
#include "cove/attest/policy.hpp"
#include "cove/attest/snp_report.hpp"
#include "cove/attest/verify.hpp"
#include "cove/bus/connection.hpp"
#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/cli/client.hpp"
#include "cove/crypto/hash.hpp"
#include "cove/crypto/keys.hpp"
#include "cove/crypto/seal.hpp"
#include "cove/manifest.hpp"
#include "cove/schemas/envelope_generated.h"
#include "cove/test/nats_server.hpp"
#include "cove/test/process.hpp"

extern char** environ;

namespace {

using namespace cove;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using sclock = std::chrono::steady_clock;
using bytes = std::vector<uint8_t>;

constexpr double mb = 1e6;  // rates are in MB/s = 10^6 bytes per second
constexpr uint64_t mib = 1ull << 20;
constexpr size_t chunk = 768 * 1024;  // cove's upload chunk (agent_config::chunk_size)
constexpr uint32_t window = 16;       // cove's upload window (agent_config::window)

/// A failed step: aborts the current section, which is then reported as an error.
struct bench_failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class T>
T must(expected<T> r, std::string_view what) {
  if (!r) throw bench_failure(fmt::format("{}: {}", what, r.error().to_string()));
  return std::move(*r);
}
inline void must(expected<void> r, std::string_view what) {
  if (!r) throw bench_failure(fmt::format("{}: {}", what, r.error().to_string()));
}

double seconds(sclock::duration d) {
  return std::chrono::duration<double>(d).count();
}

uint64_t env_u64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

// ---- results ----------------------------------------------------------------

struct row {
  std::string name;
  double value = 0;
  std::string unit;
  std::string reference;  // e.g. "sha3_256_MBps 512.3"
  std::string ratio;      // e.g. "0.84 (>= 0.70)"
  std::string verdict;    // PASS, FAIL, ref, info, ERROR
};

class results {
 public:
  void add(row r) {
    std::cout << fmt::format("  {:<28} {:>12} {}", r.name, fmt_value(r.value), r.unit) << std::endl;
    rows_.push_back(std::move(r));
  }
  /// A reference measurement (the denominator of ratios).
  void ref(const std::string& name, double v, const std::string& unit) {
    add({name, v, unit, "-", "-", "ref"});
  }
  void info(const std::string& name, double v, const std::string& unit, std::string note = "-") {
    add({name, v, unit, std::move(note), "-", "info"});
  }
  /// value / reference >= min_ratio.
  void at_least(const std::string& name, double v, const std::string& unit, const std::string& ref_name,
                double min_ratio) {
    double rv = value(ref_name);
    double ratio = rv > 0 ? v / rv : 0;
    add({name, v, unit, fmt::format("{} {}", ref_name, fmt_value(rv)),
         fmt::format("{:.2f} (>= {:.2f})", ratio, min_ratio),
         rv > 0 && ratio >= min_ratio ? "PASS" : "FAIL"});
  }
  /// value / reference <= max_ratio.
  void at_most_ratio(const std::string& name, double v, const std::string& unit, const std::string& ref_name,
                     double max_ratio) {
    double rv = value(ref_name);
    double ratio = rv > 0 ? v / rv : 0;
    add({name, v, unit, fmt::format("{} {}", ref_name, fmt_value(rv)),
         fmt::format("{:.2f}x (<= {:.1f}x)", ratio, max_ratio),
         rv > 0 && ratio <= max_ratio ? "PASS" : "FAIL"});
  }
  /// value / reference, no target.
  void relative(const std::string& name, double v, const std::string& unit, const std::string& ref_name) {
    double rv = value(ref_name);
    add({name, v, unit, fmt::format("{} {}", ref_name, fmt_value(rv)),
         rv > 0 ? fmt::format("{:.2f}x", v / rv) : "-", "info"});
  }
  /// Absolute limit: value < limit.
  void below(const std::string& name, double v, const std::string& unit, double limit) {
    add({name, v, unit, "-", fmt::format("< {}", fmt_value(limit)), v < limit ? "PASS" : "FAIL"});
  }
  void error(const std::string& section, const std::string& what) {
    std::cout << "  ERROR in " << section << ": " << what << std::endl;
    errors_.push_back(section + ": " + what);
    rows_.push_back({section + " (section)", 0, "-", what, "-", "ERROR"});
  }
  void note(const std::string& n) {
    std::cout << "  note: " << n << std::endl;
    notes_.push_back(n);
  }

  double value(const std::string& name) const {
    for (const auto& r : rows_)
      if (r.name == name) return r.value;
    return 0;
  }

  void print() const {
    std::vector<std::array<std::string, 6>> cells;
    cells.push_back({"metric", "value", "unit", "reference", "ratio/target", "verdict"});
    for (const auto& r : rows_)
      cells.push_back(
          {r.name, r.verdict == "ERROR" ? "-" : fmt_value(r.value), r.unit, r.reference, r.ratio, r.verdict});
    std::array<size_t, 6> w{};
    for (const auto& c : cells)
      for (size_t i = 0; i < 6; ++i) w[i] = std::max(w[i], c[i].size());
    auto line = [&](const std::array<std::string, 6>& c) {
      std::string s = "|";
      for (size_t i = 0; i < 6; ++i) s += " " + c[i] + std::string(w[i] - c[i].size(), ' ') + " |";
      return s;
    };
    std::cout << "\n" << line(cells[0]) << "\n|";
    for (size_t i = 0; i < 6; ++i) std::cout << std::string(w[i] + 2, '-') << "|";
    std::cout << "\n";
    for (size_t i = 1; i < cells.size(); ++i) std::cout << line(cells[i]) << "\n";
    for (const auto& n : notes_) std::cout << "note: " << n << "\n";
    std::cout << std::flush;
  }

  void write_json(const fs::path& file, const nlohmann::json& context) const {
    nlohmann::json metrics = nlohmann::json::object();
    for (const auto& r : rows_) {
      if (r.verdict == "ERROR") continue;
      metrics[r.name] = {{"value", r.value},
                         {"unit", r.unit},
                         {"reference", r.reference},
                         {"ratio", r.ratio},
                         {"verdict", r.verdict}};
    }
    nlohmann::json j = {{"metrics", metrics}, {"errors", errors_}, {"notes", notes_}, {"context", context}};
    std::ofstream out(file, std::ios::trunc);
    out << j.dump(2) << "\n";
  }

  [[nodiscard]] bool any_fail() const {
    return std::any_of(rows_.begin(), rows_.end(),
                       [](const row& r) { return r.verdict == "FAIL" || r.verdict == "ERROR"; });
  }

  static std::string fmt_value(double v) {
    if (v != 0 && std::abs(v) < 10) return fmt::format("{:.2f}", v);
    if (std::abs(v) < 1000) return fmt::format("{:.1f}", v);
    return fmt::format("{:.0f}", v);
  }

 private:
  std::vector<row> rows_;
  std::vector<std::string> errors_;
  std::vector<std::string> notes_;
};

// ---- /proc, files, processes ----------------------------------------------------

/// A "Key:   123 kB" field of /proc/<pid>/status, in KiB (or the bare number).
std::optional<uint64_t> proc_status_field(pid_t pid, std::string_view key) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0 && line.size() > key.size() && line[key.size()] == ':')
      return std::strtoull(line.c_str() + key.size() + 1, nullptr, 10);
  return std::nullopt;
}

/// CPU seconds (user + system, all threads) a process has used: /proc/<pid>/stat
/// fields 14 and 15. 0 when it cannot be read.
double cpu_seconds(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = stat.rfind(')');  // the command name may contain spaces
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::strtoull(f.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(f.c_str(), nullptr, 10);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// CPU used by each process of a transfer between two snapshots, in ns per byte: unlike
/// the rates, this hardly depends on what else the machine runs.
struct cpu_meter {
  std::vector<std::pair<std::string, pid_t>> procs;
  std::vector<double> start;
  void begin() {
    start.clear();
    for (const auto& [name, pid] : procs) start.push_back(cpu_seconds(pid));
  }
  /// Total ns/B; `detail` gets "name x.xx" per process.
  double end(uint64_t bytes, std::string& detail) const {
    double total = 0;
    for (size_t i = 0; i < procs.size(); ++i) {
      double ns = (cpu_seconds(procs[i].second) - start[i]) * 1e9 / static_cast<double>(bytes);
      total += ns;
      detail += fmt::format("{}{} {:.2f}", detail.empty() ? "" : ", ", procs[i].first, ns);
    }
    return total;
  }
};

size_t open_fds(pid_t pid) {
  std::error_code ec;
  size_t n = 0;
  for (fs::directory_iterator it(fmt::format("/proc/{}/fd", pid), ec), end; !ec && it != end;
       it.increment(ec))
    ++n;
  return n;
}

std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  std::string s;
  std::getline(in, s);
  return s;
}

/// Writes `size` pseudo-random bytes (ChaCha20 keystream: incompressible, fast).
void write_random_file(const fs::path& p, uint64_t size) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  bytes buf(4 * mib);
  std::array<uint8_t, randombytes_SEEDBYTES> seed{};
  randombytes_buf(seed.data(), seed.size());
  for (uint64_t done = 0, block = 0; done < size; ++block) {
    std::memcpy(seed.data(), &block, sizeof block);
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - done));
    randombytes_buf_deterministic(buf.data(), n, seed.data());
    out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(n));
    done += n;
  }
  if (!out) throw bench_failure("cannot write " + p.string());
}

void write_text(const fs::path& p, std::string_view s, fs::perms perms) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
  out.close();
  fs::permissions(p, perms);
}

/// Runs a program to completion. Peak RSS: the child's VmHWM from /proc, sampled
/// every 5 ms until it exits. wait4()'s ru_maxrss is kept for reference but is
/// misleading here: posix_spawn uses vfork, and exec records the high-water mark of
/// the mm it replaces (ours) in the child's maxrss.
struct child_run {
  int status = -1;
  long maxrss_kib = 0;     // wait4 ru_maxrss (inflated, see above)
  uint64_t vmhwm_kib = 0;  // max sampled VmHWM of the child itself
  sclock::duration elapsed{};
};
child_run run_child(const std::vector<std::string>& argv, const fs::path& log_dir, std::string_view name,
                    std::chrono::seconds limit) {
  // COVE_BENCH_CLI_PREFIX (e.g. "perf record -g -o /tmp/cli.data") wraps the child for profiling;
  // ru_maxrss is then the wrapper's.
  std::vector<std::string> full;
  if (const char* prefix = std::getenv("COVE_BENCH_CLI_PREFIX"); prefix && *prefix) {
    std::stringstream ss(prefix);
    for (std::string w; ss >> w;) full.push_back(w);
  }
  full.insert(full.end(), argv.begin(), argv.end());
  std::vector<char*> args;
  for (const auto& a : full) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  auto out = (log_dir / (std::string(name) + ".log")).string();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  auto start = sclock::now();
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw bench_failure(fmt::format("spawn {}: {}", argv[0], std::strerror(rc)));
  child_run r;
  struct rusage ru {};
  auto deadline = sclock::now() + limit;
  for (;;) {
    pid_t w = wait4(pid, &r.status, WNOHANG, &ru);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) throw bench_failure("wait4 failed");
    if (auto hwm = proc_status_field(pid, "VmHWM")) r.vmhwm_kib = std::max(r.vmhwm_kib, *hwm);
    if (sclock::now() > deadline) {
      ::kill(pid, SIGKILL);
      wait4(pid, &r.status, 0, &ru);
      throw bench_failure(fmt::format("{} did not finish within {} s; log {}", name, limit.count(), out));
    }
    std::this_thread::sleep_for(5ms);  // polling a child's exit, not timing anything
  }
  r.elapsed = sclock::now() - start;
  r.maxrss_kib = ru.ru_maxrss;
  if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0) {
    std::ifstream in(out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    throw bench_failure(fmt::format("{} failed (status {}): {}", name, r.status, text));
  }
  return r;
}

// ---- the cluster: nats-server + coved ---------------------------------------------

fs::path bin_dir() {
  return COVE_BIN_DIR;
}

struct participant {
  crypto::private_key key;
  fs::path key_file;
};

class cluster {
 public:
  /// `direct_agents`: agents dial NATS themselves instead of the attested bridge
  /// (coved --agent-nats), the comparison for the bridge's cost.
  explicit cluster(std::string_view name, bool direct_agents = false, std::vector<std::string> extra = {})
      : dir_(fmt::format("cove-bench-{}", name)) {
    nats_ = must(test::nats_server::start(), "nats-server");
    std::vector<std::string> argv = {(bin_dir() / "coved").string(), "--nats", nats_->url(), "--state-dir",
                                     state_dir().string()};
    if (direct_agents) argv.insert(argv.end(), {"--agent-nats", nats_->url()});
    argv.insert(argv.end(), extra.begin(), extra.end());
    coved_ = must(test::child_process::spawn(argv, {}, dir_.path(), "coved"), "coved");
    bus_ = must(bus::connection::connect({.url = nats_->url(), .name = "bench"}), "connect");
    flatbuffers::FlatBufferBuilder b(64);
    auto payload = bus::finish(b, v1::CreateCvmListRequest(b), {}, "bench");
    bool ready = test::wait_until(
        [&] {
          return coved_.running() && static_cast<bool>(bus::request_typed<v1::CvmList>(
                                         *bus_, bus::subjects::manager_list, payload, 500ms));
        },
        test::deadline_in(30s));
    if (!ready) throw bench_failure("coved did not become ready; logs in " + dir_.path().string());
    policy_ = must(cli::load_policy(state_dir() / "sim" / "policy.json"), "policy");
  }

  ~cluster() {
    // Remove what is left (agents run in their own process groups), then stop coved.
    std::vector<std::string> ids;
    {
      std::lock_guard lock(mu_);
      ids.assign(created_.begin(), created_.end());
    }
    for (const auto& id : ids) (void)remove_cvm(id);
    bus_.reset();
    if (coved_.running()) coved_.terminate(30s);
  }
  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;

  fs::path dir() const { return dir_.path(); }
  fs::path state_dir() const { return dir_.path() / "state"; }
  const std::string& url() const { return nats_->url(); }
  bus::connection& bus() { return *bus_; }
  const attest::snp_policy& policy() const { return policy_; }
  pid_t coved_pid() const { return coved_.pid(); }
  pid_t nats_pid() const { return nats_->pid(); }

  struct cvm {
    std::string id;
    pid_t pid = 0;
  };

  expected<cvm> create_cvm(bus::connection& conn, std::chrono::milliseconds timeout = 60s,
                           v1::Backend backend = v1::Backend::process) {
    flatbuffers::FlatBufferBuilder b(64);
    auto req =
        v1::CreateCvmCreate(b, backend, backend == v1::Backend::libvirt ? v1::Tee::none : v1::Tee::sim, 0);
    auto r = bus::request_typed<v1::CvmInfo>(conn, bus::subjects::manager_create,
                                             bus::finish(b, req, {}, "bench"), timeout);
    if (!r) return r.error();
    if (r->body->id() == nullptr) return make_error(errc::internal, "CvmInfo without id");
    cvm c{r->body->id()->str(), static_cast<pid_t>(r->body->pid())};
    std::lock_guard lock(mu_);
    created_.insert(c.id);
    return c;
  }

  expected<void> remove_cvm(const std::string& id) {
    flatbuffers::FlatBufferBuilder b(64);
    auto req = v1::CreateCvmRef(b, b.CreateString(id));
    auto r = bus::request_typed<v1::CvmInfo>(*bus_, bus::subjects::manager_remove,
                                             bus::finish(b, req, {}, "bench"), 30s);
    std::lock_guard lock(mu_);
    created_.erase(id);
    if (!r) return r.error();
    return ok();
  }

  participant make_participant(const std::string& name) {
    auto key = must(crypto::private_key::generate(crypto::key_type::ed25519), "keygen");
    auto file = dir_.path() / (name + ".key");
    write_text(file, key.to_pem(), fs::perms::owner_read | fs::perms::owner_write);
    return participant{std::move(key), file};
  }

 private:
  test::temp_dir dir_;
  std::optional<test::nats_server> nats_;
  test::child_process coved_;
  std::shared_ptr<bus::connection> bus_;
  attest::snp_policy policy_;
  std::mutex mu_;
  std::set<std::string> created_;
};

expected<std::string> start_computation(bus::connection& conn, const std::string& cvm_id, const manifest& m) {
  flatbuffers::FlatBufferBuilder b(4096);
  auto off = to_fbs(b, m);
  auto req = v1::CreateComputationStart(b, b.CreateString(cvm_id), off);
  auto r = bus::request_typed<v1::ComputationStatus>(conn, bus::subjects::computation_start,
                                                     bus::finish(b, req, {}, "bench"), 10s);
  if (!r) return r.error();
  return std::string(v1::EnumNameAgentState(r->body->state()));
}

expected<void> stop_computation(bus::connection& conn, const std::string& cvm_id) {
  flatbuffers::FlatBufferBuilder b(128);
  auto req = v1::CreateComputationStop(b, b.CreateString(cvm_id));
  auto r = bus::request_typed<v1::ComputationStatus>(conn, bus::subjects::computation_stop,
                                                     bus::finish(b, req, {}, "bench"), 10s);
  if (!r) return r.error();
  return ok();
}

/// Polls the agent until `state` (or Failed); errors name the last state seen.
expected<void> wait_for_state(bus::connection& conn, const std::string& cvm_id, std::string_view state,
                              std::chrono::seconds limit) {
  cli::status last;
  bool reached = test::wait_until(
      [&] {
        auto s = cli::computation_status(conn, cvm_id);
        if (!s) return false;
        last = *s;
        return last.state == state || last.state == "Failed";
      },
      test::deadline_in(limit));
  if (!reached || last.state != state)
    return make_error(errc::timeout, fmt::format("{} did not reach {} (last {}: {})", cvm_id, state,
                                                 last.state, last.message));
  return ok();
}

manifest make_manifest(const std::string& id, const fs::path& algo, const participant& owner,
                       const std::vector<std::pair<fs::path, const participant*>>& datasets,
                       const participant& consumer) {
  manifest m;
  m.id = id;
  m.name = "bench " + id;
  m.algorithm.hash = must(crypto::sha3_256_file(algo), "sha3 algo");
  m.algorithm.user_key = owner.key.public_key().der();
  m.algorithm.type = algo_type::bin;
  for (const auto& [file, p] : datasets)
    m.datasets.push_back(dataset_spec{file.filename().string(),
                                      must(crypto::sha3_256_file(file), "sha3 dataset"),
                                      p->key.public_key().der()});
  m.result_consumers.push_back(consumer.key.public_key().der());
  m.timeout_seconds = 600;
  return m;
}

/// Keeps at most `n` asynchronous requests in flight; records the first failure.
class gate {
 public:
  explicit gate(uint32_t n) : n_(n) {}
  bool acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return failed_ || in_flight_ < n_; });
    if (failed_) return false;
    ++in_flight_;
    return true;
  }
  void release(bool failed) {
    {
      std::lock_guard lock(mu_);
      --in_flight_;
      failed_ = failed_ || failed;
    }
    cv_.notify_all();
  }
  bool drain() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ == 0; });
    return !failed_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint32_t n_;
  uint32_t in_flight_ = 0;
  bool failed_ = false;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto idx = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

// ---- sections ---------------------------------------------------------------------

struct config {
  uint64_t upload_mib = 1024;
  uint64_t result_mib = 256;
  uint64_t cvms = 200;
  uint64_t rtt = 2000;
  uint64_t bridge_mib = 256;
  std::set<std::string> only;
  bool enabled(const std::string& s) const { return only.empty() || only.count(s) != 0; }
};

/// Best of three passes over a 64 MiB buffer: the references describe what one core can do.
void section_crypto(results& res) {
  bytes buf(64 * mib);
  randombytes_buf(buf.data(), buf.size());
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    crypto::sha3_256 h;
    auto t0 = sclock::now();
    h.update(buf);
    (void)h.finish();
    auto t = seconds(sclock::now() - t0);
    best = std::max(best, static_cast<double>(buf.size()) / mb / t);
  }
  res.ref("sha3_256_MBps", best, "MB/s");

  best = 0;
  auto key = crypto::secret_key::generate();
  bytes out;
  for (int pass = 0; pass < 3; ++pass) {
    crypto::seal_header header{};
    auto s = must(crypto::seal_stream::create(key, header), "seal_stream");
    auto t0 = sclock::now();
    for (size_t off = 0; off < buf.size(); off += chunk) {
      size_t n = std::min(chunk, buf.size() - off);
      must(s.push(std::span(buf).subspan(off, n), off + n == buf.size(), out), "push");
    }
    best = std::max(best, static_cast<double>(buf.size()) / mb / seconds(sclock::now() - t0));
  }
  res.ref("secretstream_MBps", best, "MB/s");
}

/// 64 MiB as 768 KiB requests (cove's sealed chunk size plus envelope) to a responder
/// on its own connection that answers at once; at most 16 in flight. Best of three.
void section_raw_nats(results& res) {
  auto nats = must(test::nats_server::start(), "nats-server");
  auto server = must(bus::connection::connect({.url = nats.url(), .name = "bench-sink"}), "connect");
  auto client = must(bus::connection::connect({.url = nats.url(), .name = "bench-source"}), "connect");
  bytes ack(96, 0x5a);  // about the size of a ChunkAck envelope
  auto sink =
      must(server->subscribe("bench.sink", [&](bus::message&& m) { (void)server->publish(m.reply, ack); }),
           "subscribe");
  auto echo =
      must(server->subscribe("bench.echo", [&](bus::message&& m) { (void)server->publish(m.reply, m.data); }),
           "subscribe");
  must(server->flush(5s), "flush");
  bytes payload(chunk + crypto::seal_overhead + 160);  // sealed chunk + Chunk envelope
  randombytes_buf(payload.data(), payload.size());
  const uint64_t total = 64 * mib;
  const uint64_t chunks = total / chunk;
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    gate g(window);
    auto t0 = sclock::now();
    for (uint64_t i = 0; i < chunks; ++i) {
      if (!g.acquire()) break;
      auto sent = client->request_async("bench.sink", payload, 30s,
                                        [&g](expected<bus::message> m) { g.release(!m); });
      if (!sent) {
        g.release(true);
        break;
      }
    }
    if (!g.drain()) throw bench_failure("raw NATS transfer failed");
    best = std::max(best, static_cast<double>(total) / mb / seconds(sclock::now() - t0));
  }
  res.ref("raw_nats_chunked_MBps", best, "MB/s");
}

/// One computation on one CVM: algorithm (writes the result), a 64 MiB dataset and a
/// large one uploaded with the library, the same large one again with the `cove`
/// binary (peak RSS), then the result fetched. Then status round trips and launches.
void section_upload_result_rtt_launch(results& res, const config& cfg) {
  cluster c("upload");
  auto owner = c.make_participant("owner");
  auto data_owner = c.make_participant("data");
  auto consumer = c.make_participant("consumer");
  auto in = c.dir() / "inputs";
  fs::create_directories(in);

  bool do_upload = cfg.enabled("upload");
  if (do_upload) {
    std::cout << "  preparing inputs (" << cfg.upload_mib << " MiB dataset)..." << std::endl;
    auto algo = in / "gen.sh";
    write_text(
        algo,
        fmt::format("#!/bin/sh\nset -e\nhead -c {} /dev/urandom > results/out.bin\n", cfg.result_mib * mib),
        fs::perms::owner_all);
    auto small = in / "small.bin";
    auto big = in / "big.bin";
    auto big_cli = in / "big-cli.bin";
    write_random_file(small, 64 * mib);
    write_random_file(big, cfg.upload_mib * mib);
    fs::create_hard_link(big, big_cli);  // same bytes, another dataset name, no extra disk
    auto m = make_manifest("bench-upload", algo, owner,
                           {{small, &data_owner}, {big, &data_owner}, {big_cli, &data_owner}}, consumer);

    auto manifest_file = in / "manifest.json";
    write_text(manifest_file, to_json(m), fs::perms::owner_read | fs::perms::owner_write);
    auto cvm = must(c.create_cvm(c.bus()), "cvm create");
    must(start_computation(c.bus(), cvm.id, m), "start");
    must(cli::upload(c.bus(), cvm.id, cli::file_role::algorithm, algo, owner.key, c.policy()),
         "algorithm upload");

    auto s64 = must(cli::upload(c.bus(), cvm.id, cli::file_role::dataset, small, data_owner.key, c.policy()),
                    "64 MiB upload");
    res.at_least("upload_sealed_64MiB_MBps", static_cast<double>(s64.bytes) / mb / seconds(s64.elapsed),
                 "MB/s", "sha3_256_MBps", 0.70);
    // The client is this process (its other threads are idle meanwhile); coved relays
    // the bridge.
    cpu_meter cpu{
        {{"client", ::getpid()}, {"agent", cvm.pid}, {"coved", c.coved_pid()}, {"nats", c.nats_pid()}}};
    cpu.begin();
    auto sbig = must(cli::upload(c.bus(), cvm.id, cli::file_role::dataset, big, data_owner.key, c.policy()),
                     "large upload");
    std::string upload_cpu;
    double upload_ns = cpu.end(sbig.bytes, upload_cpu);
    res.at_least(fmt::format("upload_sealed_{}MiB_MBps", cfg.upload_mib),
                 static_cast<double>(sbig.bytes) / mb / seconds(sbig.elapsed), "MB/s", "sha3_256_MBps", 0.70);
    res.relative("upload_vs_raw_nats", static_cast<double>(sbig.bytes) / mb / seconds(sbig.elapsed), "MB/s",
                 "raw_nats_chunked_MBps");
    res.info("upload_cpu_ns_per_byte", upload_ns, "ns/B", upload_cpu);
    auto hwm = proc_status_field(cvm.pid, "VmHWM");
    if (!hwm) throw bench_failure(fmt::format("no /proc/{}/status for the agent", cvm.pid));
    res.below("agent_rss_peak_MiB", static_cast<double>(*hwm) / 1024.0, "MiB", 64);

    auto cli_run =
        run_child({(bin_dir() / "cove").string(), "--nats", c.url(), "data", "--cvm", cvm.id,
                   big_cli.string(), data_owner.key_file.string(), "--policy",
                   (c.state_dir() / "sim" / "policy.json").string(), "--manifest", manifest_file.string()},
                  c.dir(), "cove-data", 600s);
    res.below("cli_rss_peak_MiB", static_cast<double>(cli_run.vmhwm_kib) / 1024.0, "MiB", 64);
    res.note(fmt::format(
        "cove data: VmHWM {:.1f} MiB (sampled every 5 ms); wait4 ru_maxrss {:.1f} MiB includes "
        "cove-bench's own high-water mark (posix_spawn = vfork + exec)",
        static_cast<double>(cli_run.vmhwm_kib) / 1024.0, static_cast<double>(cli_run.maxrss_kib) / 1024.0));
    res.info("cli_upload_MBps", static_cast<double>(cfg.upload_mib * mib) / mb / seconds(cli_run.elapsed),
             "MB/s", "cove data child, incl. process start");
    if (auto h2 = proc_status_field(cvm.pid, "VmHWM"); h2 && *h2 > *hwm)
      res.note(
          fmt::format("agent VmHWM after the CLI upload: {:.1f} MiB", static_cast<double>(*h2) / 1024.0));

    must(wait_for_state(c.bus(), cvm.id, "ConsumingResults", 300s), "run");
    auto out = c.dir() / "result.zip";
    cpu.begin();
    auto r = must(cli::fetch_result(c.bus(), cvm.id, consumer.key, c.policy(), out), "result");
    std::string result_cpu;
    double result_ns = cpu.end(r.bytes, result_cpu);
    res.info("result_cpu_ns_per_byte", result_ns, "ns/B", result_cpu);
    if (r.bytes < cfg.result_mib * mib) throw bench_failure("result smaller than written");
    res.at_least(fmt::format("result_sealed_{}MiB_MBps", cfg.result_mib),
                 static_cast<double>(r.bytes) / mb / seconds(r.elapsed), "MB/s", "sha3_256_MBps", 0.70);
    std::error_code ec;
    fs::remove(out, ec);
    fs::remove(big, ec);
    fs::remove(big_cli, ec);
    must(c.remove_cvm(cvm.id), "remove");
  }

  if (cfg.enabled("rtt")) {
    // Status requests to an agent, interleaved with requests to a trivial responder on
    // the same server so both see the same machine load.
    auto cvm = must(c.create_cvm(c.bus()), "cvm create");
    auto server = must(bus::connection::connect({.url = c.url(), .name = "bench-echo"}), "connect");
    auto sub = must(
        server->subscribe("bench.echo", [&](bus::message&& m) { (void)server->publish(m.reply, m.data); }),
        "subscribe");
    must(server->flush(5s), "flush");
    flatbuffers::FlatBufferBuilder b(128);
    auto probe = bus::finish(b, v1::CreateStatusRequest(b, b.CreateString(cvm.id)), {}, "bench");
    std::vector<double> raw, cove;
    raw.reserve(cfg.rtt);
    cove.reserve(cfg.rtt);
    for (uint64_t i = 0; i < cfg.rtt + 100; ++i) {
      auto t0 = sclock::now();
      must(c.bus().request("bench.echo", probe, 5s), "raw request");
      auto t1 = sclock::now();
      must(cli::computation_status(c.bus(), cvm.id), "status");
      auto t2 = sclock::now();
      if (i < 100) continue;  // warm-up
      raw.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      cove.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
    }
    res.ref("raw_nats_rtt_p50_us", percentile(raw, 0.50), "us");
    res.ref("raw_nats_rtt_p99_us", percentile(raw, 0.99), "us");
    res.at_most_ratio("rtt_cli_agent_p50_us", percentile(cove, 0.50), "us", "raw_nats_rtt_p50_us", 2.0);
    res.relative("rtt_cli_agent_p99_us", percentile(cove, 0.99), "us", "raw_nats_rtt_p99_us");
    must(c.remove_cvm(cvm.id), "remove");
  }

  if (cfg.enabled("launch")) {
    std::vector<double> ms;
    for (int i = 0; i < 10; ++i) {
      auto t0 = sclock::now();
      auto cvm = must(c.create_cvm(c.bus()), "cvm create");
      ms.push_back(std::chrono::duration<double, std::milli>(sclock::now() - t0).count());
      must(c.remove_cvm(cvm.id), "remove");
    }
    res.info("launch_ready_ms", percentile(ms, 0.5), "ms",
             fmt::format("median of 10; max {:.1f}", percentile(ms, 1.0)));
  }
}

/// The libvirt backend: create → agent ready (EOS boots under QEMU TCG here, the agent
/// joins through the bridge) and remove (the domain destroyed), median of 3. Targets
/// (issue 6): ready under 10 s, remove under 2 s.
void section_vm(results& res) {
  fs::path image = bin_dir().parent_path() / "eos";
  if (const char* e = std::getenv("COVE_BENCH_EOS"); e && *e) image = e;
  if (!fs::exists(image / "vmlinuz"))
    throw bench_failure("no EOS image in " + image.string() + " (./cove.sh eos, or set COVE_BENCH_EOS)");
  cluster c("vm", false, {"--eos-dir", image.string()});
  // QEMU runs as libvirt-qemu: it must be able to search down to the CVM's share.
  fs::permissions(c.dir(), fs::perms::owner_all | fs::perms::others_exec | fs::perms::group_exec);
  std::vector<double> ready, removed;
  for (int i = 0; i < 3; ++i) {
    auto t0 = sclock::now();
    auto cvm = must(c.create_cvm(c.bus(), 240s, v1::Backend::libvirt), "libvirt cvm create");
    ready.push_back(std::chrono::duration<double, std::milli>(sclock::now() - t0).count());
    auto t1 = sclock::now();
    must(c.remove_cvm(cvm.id), "remove");
    removed.push_back(std::chrono::duration<double, std::milli>(sclock::now() - t1).count());
  }
  res.below("launch_ready_ms_libvirt", percentile(ready, 0.5), "ms", 10000);
  res.below("remove_ms_libvirt", percentile(removed, 0.5), "ms", 2000);
  res.note(
      fmt::format("libvirt (TCG, tee=none, EOS from {}): ready max {:.0f} ms, remove max {:.0f} ms; "
                  "load average {}",
                  image.string(), percentile(ready, 1.0), percentile(removed, 1.0), loadavg()));
}

/// The same sealed upload to an agent behind the attested bridge and to one connected to
/// NATS directly, alternating, best of three each: what the bridge costs.
void section_bridge(results& res, const config& cfg) {
  cluster bridged("bridge"), direct("direct", /*direct_agents=*/true);
  struct side {
    cluster* c;
    std::string cvm;
    participant owner, data;
    fs::path file;
    double best = 0;
  };
  std::vector<side> sides;
  for (auto* c : {&bridged, &direct}) {
    side s{c, {}, c->make_participant("owner"), c->make_participant("data"), {}, 0};
    auto in = c->dir() / "inputs";
    fs::create_directories(in);
    auto algo = in / "algo.sh";
    write_text(algo, "#!/bin/sh\ntrue\n", fs::perms::owner_all);
    s.cvm = must(c->create_cvm(c->bus()), "cvm create").id;
    std::vector<std::pair<fs::path, const participant*>> files;
    s.file = in / "d0.bin";
    write_random_file(s.file, cfg.bridge_mib * mib);
    for (int i = 1; i < 3; ++i) {
      auto link = in / fmt::format("d{}.bin", i);
      fs::create_hard_link(s.file, link);
    }
    for (int i = 0; i < 3; ++i) files.push_back({in / fmt::format("d{}.bin", i), &s.data});
    auto m = make_manifest("bench-bridge", algo, s.owner, files, s.owner);
    must(start_computation(c->bus(), s.cvm, m), "start");
    must(cli::upload(c->bus(), s.cvm, cli::file_role::algorithm, algo, s.owner.key, c->policy()),
         "algorithm");
    sides.push_back(std::move(s));
  }
  for (int round = 0; round < 3; ++round) {
    for (auto& s : sides) {
      auto f = s.file.parent_path() / fmt::format("d{}.bin", round);
      auto st = must(cli::upload(s.c->bus(), s.cvm, cli::file_role::dataset, f, s.data.key, s.c->policy()),
                     "upload");
      s.best = std::max(s.best, static_cast<double>(st.bytes) / mb / seconds(st.elapsed));
    }
  }
  res.ref(fmt::format("upload_sealed_{}MiB_direct_MBps", cfg.bridge_mib), sides[1].best, "MB/s");
  res.at_least(fmt::format("upload_sealed_{}MiB_bridge_MBps", cfg.bridge_mib), sides[0].best, "MB/s",
               fmt::format("upload_sealed_{}MiB_direct_MBps", cfg.bridge_mib), 0.85);
  for (auto& s : sides) must(s.c->remove_cvm(s.cvm), "remove");
}

/// N CVMs, each running a tiny computation whose result is fetched; then events
/// through coved from start/stop loops on real agents.
void section_concurrent(results& res, const config& cfg) {
  cluster c("concurrent");
  auto owner = c.make_participant("owner");
  auto consumer = c.make_participant("consumer");
  auto algo = c.dir() / "tiny.sh";
  write_text(algo, "#!/bin/sh\necho ok > results/r.txt\n", fs::perms::owner_all);
  auto m = make_manifest("bench-tiny", algo, owner, {}, consumer);

  // Count every event coved publishes while the run goes on.
  std::atomic<uint64_t> events{0}, computation_events{0};
  auto listener = must(bus::connection::connect({.url = c.url(), .name = "bench-events"}), "connect");
  auto sub = must(listener->subscribe(bus::subjects::all_events,
                                      [&](bus::message&& msg) {
                                        ++events;
                                        if (msg.subject == "cove.v1.events.computation") ++computation_events;
                                      }),
                  "subscribe");
  must(listener->flush(5s), "flush");
  uint64_t rss_before = proc_status_field(c.coved_pid(), "VmRSS").value_or(0);

  const size_t n = cfg.cvms;
  const size_t workers = std::min<size_t>(8, n);
  std::vector<std::string> ids(n);
  std::vector<pid_t> pids(n, 0);
  std::vector<std::string> failures;
  std::mutex mu;
  std::atomic<size_t> next{0}, ok_count{0};
  auto t0 = sclock::now();
  std::vector<std::thread> pool;
  for (size_t w = 0; w < workers; ++w) {
    pool.emplace_back([&, w] {
      auto conn = bus::connection::connect({.url = c.url(), .name = fmt::format("bench-worker-{}", w)});
      for (size_t i; (i = next++) < n;) {
        auto one = [&]() -> expected<void> {
          if (!conn) return conn.error();
          auto cvm = c.create_cvm(**conn);
          if (!cvm) return cvm.error();
          ids[i] = cvm->id;
          pids[i] = cvm->pid;
          if (auto s = start_computation(**conn, cvm->id, m); !s) return s.error();
          if (auto u = cli::upload(**conn, cvm->id, cli::file_role::algorithm, algo, owner.key, c.policy());
              !u)
            return u.error();
          if (auto r = wait_for_state(**conn, cvm->id, "ConsumingResults", 120s); !r) return r;
          auto out = c.dir() / fmt::format("result-{}.zip", i);
          if (auto f = cli::fetch_result(**conn, cvm->id, consumer.key, c.policy(), out); !f)
            return f.error();
          std::error_code ec;
          if (fs::file_size(out, ec) == 0 || ec) return make_error(errc::internal, "empty result");
          fs::remove(out, ec);
          return ok();
        };
        auto r = one();
        std::lock_guard lock(mu);
        if (r)
          ++ok_count;
        else
          failures.push_back(fmt::format("#{} {}: {}", i, ids[i], r.error().to_string()));
      }
    });
  }
  for (auto& t : pool) t.join();
  double total = seconds(sclock::now() - t0);
  uint64_t rss = proc_status_field(c.coved_pid(), "VmRSS").value_or(0);
  uint64_t threads = proc_status_field(c.coved_pid(), "Threads").value_or(0);
  size_t fds = open_fds(c.coved_pid());
  uint64_t ev = events.load();
  uint64_t agents_rss = 0, agents_alive = 0;
  for (pid_t p : pids)
    if (auto r = p > 0 ? proc_status_field(p, "VmRSS") : std::nullopt) {
      agents_rss += *r;
      ++agents_alive;
    }

  res.info(fmt::format("concurrent_{}_cvms_s", n), total, "s",
           fmt::format("{} workers; create+start+upload+run+fetch", workers));
  res.add({"concurrent_failures", static_cast<double>(failures.size()), "count", fmt::format("of {}", n),
           "== 0", failures.empty() ? "PASS" : "FAIL"});
  res.info("concurrent_ok", static_cast<double>(ok_count.load()), "CVMs");
  for (size_t i = 0; i < std::min<size_t>(5, failures.size()); ++i)
    res.note("concurrent failure " + failures[i]);
  res.info(
      "coved_rss_per_cvm_KiB", n ? static_cast<double>(rss) / static_cast<double>(n) : 0, "KiB",
      fmt::format(
          "VmRSS {:.1f} MiB / {}; {:.1f} KiB/CVM above idle", static_cast<double>(rss) / 1024.0, n,
          n ? (static_cast<double>(rss) - static_cast<double>(rss_before)) / static_cast<double>(n) : 0));
  res.info(
      "agent_rss_avg_MiB",
      agents_alive ? static_cast<double>(agents_rss) / 1024.0 / static_cast<double>(agents_alive) : 0, "MiB",
      fmt::format("VmRSS of {} idle agents after their run (shared pages counted in each)", agents_alive));
  res.info("coved_threads", static_cast<double>(threads), "threads",
           fmt::format("with {} CVMs; {} open fds", n, fds));
  res.info("events_during_concurrent_per_s", static_cast<double>(ev) / total, "events/s",
           fmt::format("{} events on cove.v1.events.> during the run", ev));

  // Events through coved: start/stop loops on up to 4 real agents for 5 s. Each cycle
  // is stop (agent emits Idle + ReceivingManifest) and start (ReceivingAlgorithm), all
  // relayed by coved from cove.v1.cvm.<id>.events to cove.v1.events.computation.
  std::vector<std::string> live;
  for (const auto& id : ids)
    if (!id.empty() && live.size() < 4) live.push_back(id);
  if (!live.empty()) {
    uint64_t base = computation_events.load();
    std::atomic<uint64_t> cycles{0};
    std::atomic<bool> loop_failed{false};
    auto l0 = sclock::now();
    std::vector<std::thread> loops;
    for (const auto& id : live) {
      loops.emplace_back([&, id] {
        auto conn = bus::connection::connect({.url = c.url(), .name = "bench-loop"});
        if (!conn) {
          loop_failed = true;
          return;
        }
        while (sclock::now() - l0 < 5s) {
          if (!stop_computation(**conn, id) || !start_computation(**conn, id, m)) {
            loop_failed = true;
            return;
          }
          ++cycles;
        }
      });
    }
    for (auto& t : loops) t.join();
    double loop_s = seconds(sclock::now() - l0);
    uint64_t expected_events = cycles * 3;
    test::wait_until([&] { return computation_events.load() - base >= expected_events; },
                     test::deadline_in(5s));
    uint64_t got = computation_events.load() - base;
    res.add({"events_per_s", static_cast<double>(got) / loop_s, "events/s",
             fmt::format("{} start/stop cycles on {} agents; {}/{} delivered", cycles.load(), live.size(),
                         got, expected_events),
             "all delivered", got >= expected_events && !loop_failed ? "PASS" : "FAIL"});
  }

  // Remove in parallel: coved stops agents with SIGTERM and waits for each.
  std::atomic<size_t> rnext{0};
  std::vector<std::thread> removers;
  for (size_t w = 0; w < workers; ++w)
    removers.emplace_back([&] {
      for (size_t i; (i = rnext++) < n;)
        if (!ids[i].empty()) (void)c.remove_cvm(ids[i]);
    });
  for (auto& t : removers) t.join();
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw bench_failure("cannot read " + p.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The recorded Genoa evidence against a policy (measurement, TCB, product, debug off),
/// 2 s each. Cold: the whole verify_snp_evidence (parse, AMD chain = three RSA-4096 PSS
/// signatures, report signature, TCB/chip binding) + check_policy per iteration. Warm:
/// snp_chain_cache, whose chain was verified once; per iteration only the report is
/// parsed, its ECDSA P-384 signature and binding checked, and the policy applied.
void section_snp(results& res) {
  fs::path dir = fs::path(COVE_FIXTURES_DIR) / "snp";
  auto report = read_bytes(dir / "genoa-report.bin");
  auto vcek = read_bytes(dir / "genoa-vcek.der");
  auto bundle_bytes = read_bytes(dir / "ask_ark_genoa.pem");
  std::string bundle(bundle_bytes.begin(), bundle_bytes.end());
  auto policy = must(
      attest::load_policy_json(
          R"({"measurements": ["c57729018b0a6fb90dc17bb138b0aa35e4401004283ff4a2c24d3739ff3750f52384370e77b7032862a08c440a9bc4dc"],
      "allow_debug": false, "minimum_tcb": {"bl": 10, "snp": 25, "microcode": 84}, "product": "Genoa", "vmpl": 0})"),
      "policy");
  policy.trusted_roots = {bundle};  // the ARK is in the bundle; the ASK is never self-issued
  attest::verify_options o = attest::make_verify_options(policy);
  o.now = std::chrono::sys_days{std::chrono::year{2027} / 1 / 1};  // inside the fixture VCEK's validity
  auto once = [&](const attest::snp_report& r) { must(attest::check_policy(r, policy, {}), "policy"); };
  once(must(attest::verify_snp_evidence(report, vcek, bundle, o), "genoa evidence"));
  uint64_t n = 0;
  auto t0 = sclock::now();
  while (sclock::now() - t0 < 2s) {
    once(must(attest::verify_snp_evidence(report, vcek, bundle, o), "verify"));
    ++n;
  }
  double cold = static_cast<double>(n) / seconds(sclock::now() - t0);
  res.info("snp_verify_per_s_cold", cold, "verifs/s", "parse + AMD chain + signature + binding + policy");

  attest::snp_chain_cache cache;
  once(must(cache.verify(report, vcek, bundle, o), "warm-up"));
  n = 0;
  t0 = sclock::now();
  while (sclock::now() - t0 < 2s) {
    once(must(cache.verify(report, vcek, bundle, o), "verify (cached chain)"));
    ++n;
  }
  double warm = static_cast<double>(n) / seconds(sclock::now() - t0);
  if (cache.misses() != 1) throw bench_failure(fmt::format("chain cache missed {} times", cache.misses()));
  res.relative("snp_verify_per_s_warm", warm, "verifs/s", "snp_verify_per_s_cold");
}

/// `cove measure`'s library call for a direct-boot SNP guest with a 10 MiB initrd (random
/// bytes, generated here), the AmdSev OVMF and kernel the sev-snp-measure vectors use,
/// 4 vCPUs: the initrd is hashed into the kernel-hashes page. Best of 5 runs.
void section_measure(results& res) {
  fs::path in = fs::path(COVE_FIXTURES_DIR) / "snp-measure";
  test::temp_dir tmp("cove-bench-measure");
  auto initrd = tmp.path() / "initrd.img";
  {
    bytes data(10 * mib);
    randombytes_buf(data.data(), data.size());
    std::ofstream f(initrd, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    if (!f.flush()) throw bench_failure("cannot write " + initrd.string());
  }
  attest::measure_options m;
  m.mode = attest::sev_mode::snp;
  m.vcpus = 4;
  m.vcpu_type = "EPYC-Genoa";
  m.ovmf = in / "ovmf_AmdSev_suffix.bin";
  m.kernel = in / "inputs" / "kernel_pattern_3000.bin";
  m.initrd = initrd;
  m.append = "console=ttyS0 root=/dev/vda1";
  m.guest_features = 0x1;
  double best = 1e12;
  std::string digest;
  for (int i = 0; i < 5; ++i) {
    auto t0 = sclock::now();
    auto d = must(attest::compute_launch_digest(m), "compute_launch_digest");
    best = std::min(best, seconds(sclock::now() - t0) * 1000);
    auto hex = attest::to_hex(d);
    if (!digest.empty() && hex != digest) throw bench_failure("launch digest differs between runs");
    digest = hex;
  }
  res.info("measure_10MiB_initrd_ms", best, "ms", "snp, 4 vCPUs, OVMF + kernel + 10 MiB initrd + cmdline");
}

}  // namespace

int main(int argc, char** argv) {
  fs::path out_dir = "bench";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--out" && i + 1 < argc) {
      out_dir = argv[++i];
    } else {
      std::cerr << "usage: cove-bench [--out DIR]\n";
      return 2;
    }
  }
  if (sodium_init() < 0) return 1;
  ::signal(SIGPIPE, SIG_IGN);
  config cfg;
  cfg.upload_mib = std::max<uint64_t>(1, env_u64("COVE_BENCH_UPLOAD_MIB", 1024));
  cfg.result_mib = std::max<uint64_t>(1, env_u64("COVE_BENCH_RESULT_MIB", 256));
  cfg.cvms = std::max<uint64_t>(1, env_u64("COVE_BENCH_CVMS", 200));
  cfg.rtt = std::max<uint64_t>(10, env_u64("COVE_BENCH_RTT", 2000));
  cfg.bridge_mib = std::max<uint64_t>(1, env_u64("COVE_BENCH_BRIDGE_MIB", 256));
  if (const char* only = std::getenv("COVE_BENCH_ONLY"); only && *only) {
    std::stringstream ss(only);
    for (std::string s; std::getline(ss, s, ',');) cfg.only.insert(s);
  }

  nlohmann::json context = {{"nproc", std::thread::hardware_concurrency()},
                            {"loadavg_start", loadavg()},
                            {"upload_mib", cfg.upload_mib},
                            {"result_mib", cfg.result_mib},
                            {"cvms", cfg.cvms},
                            {"rtt_requests", cfg.rtt}};
  std::cout << fmt::format("cove-bench: {} cores, load average {}", std::thread::hardware_concurrency(),
                           loadavg())
            << std::endl;
  results res;
  auto t_start = sclock::now();
  auto run = [&](const std::string& name, bool on, const std::function<void()>& f) {
    if (!on) return;
    std::cout << "== " << name << std::endl;
    auto t0 = sclock::now();
    try {
      f();
    } catch (const std::exception& e) {
      res.error(name, e.what());
    }
    std::cout << fmt::format("   ({:.1f} s)", seconds(sclock::now() - t0)) << std::endl;
  };
  run("crypto references", cfg.enabled("crypto") || cfg.enabled("upload"), [&] { section_crypto(res); });
  run("raw NATS", cfg.enabled("nats") || cfg.enabled("upload"), [&] { section_raw_nats(res); });
  run("upload / result / rtt / launch", cfg.enabled("upload") || cfg.enabled("rtt") || cfg.enabled("launch"),
      [&] { section_upload_result_rtt_launch(res, cfg); });
  run("libvirt VMs (launch, remove)", cfg.enabled("vm"), [&] { section_vm(res); });
  run("attested bridge vs direct NATS", cfg.enabled("bridge"), [&] { section_bridge(res, cfg); });
  run("concurrent CVMs and events", cfg.enabled("concurrent"), [&] { section_concurrent(res, cfg); });
  run("SEV-SNP verification", cfg.enabled("snp"), [&] { section_snp(res); });
  run("cove measure", cfg.enabled("measure"), [&] { section_measure(res); });

  context["loadavg_end"] = loadavg();
  context["total_seconds"] = seconds(sclock::now() - t_start);
  res.print();
  std::cout << fmt::format("total {:.0f} s; load average at end {}", seconds(sclock::now() - t_start),
                           loadavg())
            << std::endl;
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  res.write_json(out_dir / "results.json", context);
  return res.any_fail() ? 1 : 0;
}

#include "cove/daemon/daemon.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <caf/all.hpp>
#include <condition_variable>
#include <csignal>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "cove/attest/measure.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/attestation/attestation.hpp"
#include "cove/bridge/admission.hpp"
#include "cove/bridge/server.hpp"
#include "cove/bridge_service/bridge_service.hpp"
#include "cove/bus/actor.hpp"
#include "cove/bus/authz.hpp"
#include "cove/bus/connection.hpp"
#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/computation/computation.hpp"
#include "cove/gateway/cvms_client.hpp"
#include "cove/gateway/manager_gateway.hpp"
#include "cove/log.hpp"
#include "cove/manager/libvirt_backend.hpp"
#include "cove/manager/manager.hpp"
#include "cove/manager/process_backend.hpp"
#include "cove/monitor/monitor.hpp"
#include "cove/paths.hpp"
#include "cove/schemas/envelope_generated.h"

extern char** environ;

namespace cove::daemon {

namespace fs = std::filesystem;

namespace {

const std::set<std::string> implemented_services = {"manager", "computation", "attestation", "bridge",
                                                    "monitor"};
const std::set<std::string> planned_services = {};

fs::path self_dir() {
  std::error_code ec;
  auto exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : exe.parent_path();
}

/// The embedded nats-server: a child process on loopback, killed by PID on exit.
class embedded_nats {
 public:
  ~embedded_nats() { stop(); }

  /// `config`: nats-server.conf (TLS and users) or empty for an open server.
  expected<std::string> start(const fs::path& binary, const std::string& listen, const fs::path& dir,
                              const fs::path& config = {}) {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos) return make_error(errc::invalid_request, "--listen: expected HOST:PORT");
    std::string host = listen.substr(0, colon);
    std::string port = listen.substr(colon + 1);
    if (port == "0") port = "-1";  // nats-server: -1 picks a random free port
    dir_ = dir;
    std::error_code ec;
    fs::create_directories(dir, ec);
    log_start_ = fs::exists(log_path(), ec) ? fs::file_size(log_path(), ec) : 0;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().extension() == ".ports") fs::remove(e.path(), ec);
    std::vector<std::string> args = {
        binary.string(), "-a", host, "-p", port, "--ports_file_dir", dir.string(), "-l", log_path().string()};
    if (!config.empty()) {
      args.push_back("-c");
      args.push_back(config.string());
    }
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    int rc = posix_spawn(&pid_, argv[0], &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      pid_ = 0;
      return make_error(errc::unavailable,
                        fmt::format("cannot start {}: {}", binary.string(), std::strerror(rc)));
    }
    // nats-server writes <exe>_<pid>.ports once it listens.
    auto ports = dir / fmt::format("{}_{}.ports", binary.filename().string(), pid_);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        return make_error(errc::unavailable,
                          "nats-server exited at start (is the port in use?); see " + log_path().string());
      }
      std::ifstream f(ports);
      if (f) {
        try {
          auto j = nlohmann::json::parse(f);
          auto url = j.at("nats").at(0).get<std::string>();
          // With TLS the clients must know to use it.
          if (!config.empty() && url.starts_with("nats://")) url = "tls://" + url.substr(7);
          return url;
        } catch (const std::exception&) {
          // partially written; read again
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    stop();
    return make_error(errc::timeout, "nats-server did not start listening within 10 s");
  }

  /// SIGHUP: nats-server re-reads its config (authorization included) and
  /// applies the new permissions to connected clients. The reload is
  /// asynchronous, so this waits (up to `deadline`) for the server to log that it
  /// is done: a participant told "started" right after a grant must find its key
  /// accepted, and nats-server 2.9 refuses nkeys it meets mid-reload.
  expected<void> reload(std::chrono::milliseconds deadline = std::chrono::seconds(10)) const {
    if (pid_ <= 0) return make_error(errc::unavailable, "nats-server is not running");
    auto log = log_path();
    std::error_code ec;
    auto offset = fs::exists(log, ec) ? fs::file_size(log, ec) : 0;
    if (::kill(pid_, SIGHUP) != 0)
      return make_error(errc::unavailable, fmt::format("SIGHUP nats-server: {}", std::strerror(errno)));
    auto until = std::chrono::steady_clock::now() + deadline;
    std::string seen;
    while (std::chrono::steady_clock::now() < until) {
      auto size = fs::file_size(log, ec);
      if (!ec && size > offset) {
        std::ifstream f(log, std::ios::binary);
        f.seekg(static_cast<std::streamoff>(offset));
        std::string chunk(size - offset, '\0');
        f.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
        chunk.resize(static_cast<size_t>(f.gcount()));
        offset += chunk.size();
        seen += chunk;
        if (seen.find("Reloaded server configuration") != std::string::npos) return {};
        if (auto at = seen.find("[ERR] ");
            at != std::string::npos && seen.find("reload", at) != std::string::npos)
          return make_error(errc::internal, "nats-server refused the new configuration: " +
                                                seen.substr(at, seen.find('\n', at) - at));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return make_error(errc::timeout,
                      fmt::format("nats-server did not confirm the reload within {} ms; see {}",
                                  deadline.count(), log.string()));
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = 0;
  }

  /// The server's log (it appends across restarts) and where this run's lines begin.
  fs::path log_path() const { return dir_ / "nats-server.log"; }
  uintmax_t log_start() const { return log_start_; }

 private:
  fs::path dir_;
  uintmax_t log_start_ = 0;
  pid_t pid_ = 0;
};

struct sim_tee {
  std::shared_ptr<const attest::sim_root> root;
  std::string policy_json;  // accepts this host's simulated CVMs running `agent`
};

/// The monitor's numbers for libvirt CVMs: virDomainGetInfo per domain through the
/// manager's libvirt backend (connecting on first use, like the backend itself).
class libvirt_stats_source final : public monitor::stats_source {
 public:
  explicit libvirt_stats_source(std::shared_ptr<manager::libvirt_backend> vms) : vms_(std::move(vms)) {}
  [[nodiscard]] std::string_view name() const noexcept override { return "libvirt"; }
  std::vector<expected<monitor::cvm_sample>> sample(
      const std::vector<monitor::stats_target>& targets) override {
    std::vector<expected<monitor::cvm_sample>> out;
    out.reserve(targets.size());
    for (const auto& t : targets) {
      auto st = vms_->stats(t.cvm_id);
      if (!st) {
        out.emplace_back(st.error());
        continue;
      }
      out.emplace_back(monitor::cvm_sample{.run_state = st->state,
                                           .cpu_time_ns = st->cpu_time_ns,
                                           .memory_bytes = st->memory_kib * 1024,
                                           .memory_max_bytes = st->max_memory_kib * 1024,
                                           .processes = st->vcpus});
    }
    return out;
  }

 private:
  std::shared_ptr<manager::libvirt_backend> vms_;
};

/// Loads the simulated SEV-SNP root of this host (generated once), and writes the
/// policy a CLI on this host uses by default to accept its simulated CVMs: the
/// agent's measurement, plus that of the EOS image's agent (stripped, so another
/// digest: eos/build.sh writes it to agent.sha384) when the image is there.
expected<sim_tee> prepare_sim_tee(const fs::path& state_dir, const fs::path& agent, const fs::path& eos_dir) {
  auto dir = state_dir / "sim";
  auto root = attest::load_sim_root(dir);
  if (!root) {
    spdlog::info("generating the simulated TEE root in {}", dir.string());
    auto fresh = attest::generate_sim_root();
    if (!fresh) return fresh.error();
    if (auto s = attest::save_sim_root(*fresh, dir); !s) return s.error();
    root = std::move(*fresh);
  }
  auto measurement = attest::sha384_file(agent);
  if (!measurement) return measurement.error();
  auto policy = attest::sim_policy_json(*root, *measurement);
  std::ifstream eos_agent(eos_dir / "agent.sha384");
  std::string eos_hex;
  if (eos_agent >> eos_hex && eos_hex.size() == 96 &&
      eos_hex.find_first_not_of("0123456789abcdef") == std::string::npos) {
    auto j = nlohmann::json::parse(policy);
    if (j["measurements"][0] != eos_hex) j["measurements"].push_back(eos_hex);
    policy = j.dump(2);
  }
  std::ofstream(dir / "policy.json", std::ios::trunc) << policy << '\n';
  return sim_tee{std::make_shared<const attest::sim_root>(std::move(*root)), policy};
}

/// How coved's services reach the bus: the URL, and either the embedded secure
/// bus's key directory or (external server) optional role seeds and a CA.
class bus_access {
 public:
  std::string url;
  std::optional<bus::authz::bus_dir> secure;  // embedded, locked down
  fs::path nkey_dir;                          // external: <role>.seed files
  fs::path ca_file;                           // external: CA of the server's certificate

  /// One connection per service, authenticated as its role.
  /// `relay`: the bridge's connection (no echo, shared delivery threads).
  expected<std::shared_ptr<bus::connection>> connect(bus::authz::role r, bool relay = false) const {
    bus::connect_options o{.url = url, .name = "coved." + std::string(bus::authz::to_string(r))};
    if (secure) {
      o = secure->credentials(r, o);
    } else {
      if (!ca_file.empty()) o.ca_file = ca_file.string();
      if (!nkey_dir.empty()) {
        auto file = nkey_dir / (std::string(bus::authz::to_string(r)) + ".seed");
        auto key = bus::nkeys::user_key::load_file(file);
        if (!key) return key.error();
        o.nkey = std::make_shared<const bus::nkeys::user_key>(std::move(*key));
      }
    }
    o.no_echo = relay;
    o.shared_delivery_threads = relay;
    o.on_permission_violation = [r](const error& e) {
      spdlog::warn("bus refused the {} service: {}", bus::authz::to_string(r), e.message);
    };
    return bus::connection::connect(o);
  }
};

/// Turns the embedded nats-server's refusals (permission violations, failed
/// authentication) into cove events on cove.v1.events.authz, so operators see
/// them next to the lifecycle events. Follows the server's log file from
/// `offset` (where this server run began: refusals logged while coved's services
/// were still starting are reported too); polls it (10 Hz) on its own thread.
class bus_log_watcher {
 public:
  bus_log_watcher(fs::path log, uintmax_t offset, std::shared_ptr<bus::connection> conn)
      : log_(std::move(log)), conn_(std::move(conn)), offset_(offset) {
    thread_ = std::thread([this] { run(); });
  }
  ~bus_log_watcher() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  bus_log_watcher(const bus_log_watcher&) = delete;
  bus_log_watcher& operator=(const bus_log_watcher&) = delete;

  /// The reason carried by a refusal line of the server log, or nullopt.
  static std::optional<std::string> refusal(std::string_view line) {
    auto err = line.find("[ERR] ");
    if (err == std::string_view::npos) return std::nullopt;
    auto text = line.substr(err + 6);
    for (std::string_view what : {"Publish Violation", "Subscription Violation", "authentication error",
                                  "Authorization Error", "TLS handshake error"})
      if (text.find(what) != std::string_view::npos) return std::string(text);
    return std::nullopt;
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stop_; })) {
      lock.unlock();
      scan();
      lock.lock();
    }
  }

  void scan() {
    std::error_code ec;
    auto size = fs::file_size(log_, ec);
    if (ec) return;
    if (size < offset_) offset_ = 0;  // truncated or replaced
    if (size == offset_) return;
    std::ifstream f(log_, std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset_));
    std::string chunk(size - offset_, '\0');
    f.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    chunk.resize(static_cast<size_t>(f.gcount()));
    auto last_nl = chunk.rfind('\n');
    if (last_nl == std::string::npos) return;  // wait for a whole line
    offset_ += last_nl + 1;
    std::string_view rest(chunk.data(), last_nl + 1);
    while (!rest.empty()) {
      auto nl = rest.find('\n');
      auto line = rest.substr(0, nl);
      rest.remove_prefix(nl + 1);
      if (auto reason = refusal(line)) publish(*reason);
    }
  }

  void publish(const std::string& reason) {
    std::string cvm_id;
    if (auto at = reason.find("Subject \"cove.v1.cvm."); at != std::string::npos) {
      auto subject = reason.substr(at + 9);
      subject = subject.substr(0, subject.find('"'));
      if (auto id = bus::cvm_id_of(subject)) cvm_id = *id;
    }
    auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    flatbuffers::FlatBufferBuilder b(256);
    auto ev = v1::CreateEventDirect(b, "authz", cvm_id.c_str(), "", "refused", reason.c_str(), now);
    spdlog::warn("bus refused: {}", reason);
    if (auto r = conn_->publish(*bus::events_subject("authz"), bus::finish(b, ev, {}, "coved.bus")); !r)
      spdlog::warn("publish authz event: {}", r.error().to_string());
  }

  fs::path log_;
  std::shared_ptr<bus::connection> conn_;
  uintmax_t offset_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

bool parse_backend(const std::string& name, v1::Backend& out) {
  for (auto b : v1::EnumValuesBackend())
    if (name == v1::EnumNameBackend(b)) return (out = b), true;
  return false;
}

bool parse_tee(const std::string& name, v1::Tee& out) {
  for (auto t : v1::EnumValuesTee())
    if (name == v1::EnumNameTee(t)) return (out = t), true;
  return false;
}

/// The orchestrator front doors coved runs (docs/operations.md §10).
struct orchestrator_doors {
  std::unique_ptr<gateway::manager_gateway> manager_grpc;
  std::unique_ptr<gateway::cvms_client> cvms;
};

/// Starts what `cfg` asks for (--manager-grpc-listen, --cvms-url) on `conn`;
/// writes <state>/manager-grpc.address.
expected<orchestrator_doors> start_orchestrator_doors(const daemon_config& cfg,
                                                      const std::shared_ptr<bus::connection>& conn) {
  orchestrator_doors d;
  v1::Backend backend{};
  v1::Tee tee{};
  parse_backend(cfg.cvms_backend, backend);  // checked by validate()
  parse_tee(cfg.cvms_tee, tee);
  if (!cfg.manager_grpc_listen.empty()) {
    auto g = gateway::manager_gateway::start({.listen = cfg.manager_grpc_listen,
                                              .cert_file = cfg.manager_grpc_cert.string(),
                                              .key_file = cfg.manager_grpc_key.string(),
                                              .bus = conn,
                                              .backend = backend,
                                              .tee = tee});
    if (!g) return g.error();
    d.manager_grpc = std::move(*g);
    std::ofstream(cfg.state_dir / "manager-grpc.address", std::ios::trunc)
        << d.manager_grpc->address() << '\n';
  }
  if (!cfg.cvms_url.empty()) {
    auto c =
        gateway::cvms_client::start({.url = cfg.cvms_url,
                                     .ca_file = cfg.cvms_ca.string(),
                                     .cert_file = cfg.cvms_cert.string(),
                                     .key_file = cfg.cvms_key.string(),
                                     .bus = conn,
                                     .backend = backend,
                                     .tee = tee,
                                     .cvm_ttl_seconds = cfg.cvms_cvm_ttl,
                                     .backoff_max = std::chrono::milliseconds(cfg.cvms_reconnect_max_ms)});
    if (!c) return c.error();
    d.cvms = std::move(*c);
  }
  return d;
}

/// Prepares <state>/bus (first start: CA, server certificate, role seeds) and
/// writes nats-server.conf for the current grants.
expected<bus::authz::bus_dir> prepare_secure_bus(const fs::path& state_dir, const std::string& listen) {
  std::vector<std::string> hosts;
  auto colon = listen.rfind(':');
  std::string host = colon == std::string::npos ? listen : listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (!host.empty() && host != "0.0.0.0" && host != "::") hosts.push_back(host);
  auto dir = bus::authz::bus_dir::open_or_create(state_dir / "bus", hosts);
  if (!dir) return dir.error();
  if (auto w = dir->write_config(); !w) return w.error();
  return dir;
}

}  // namespace

expected<daemon_config> load_config(int argc, char** argv) {
  daemon_config cfg;
  std::string services;
  CLI::App app{"coved — the cove host daemon: manager, computation and attestation services on the bus"};
  app.add_option("--nats", cfg.nats_url, "Bus URL; default: start an embedded nats-server");
  app.add_option("--listen", cfg.listen, "Embedded nats-server address (port 0 = random)")
      ->capture_default_str();
  app.add_option("--nats-server", cfg.nats_server, "nats-server binary")->capture_default_str();
  app.add_option(
      "--state-dir", cfg.state_dir,
      "State directory (default: $COVE_STATE_DIR, /var/lib/cove as root, else ~/.local/state/cove)");
  app.add_option("--services", services,
                 "Comma-separated services to run (default: manager,computation,attestation,bridge,monitor)");
  app.add_option("--agent", cfg.agent_binary, "cove-agent binary (default: beside coved)");
  app.add_option("--agent-nats", cfg.agent_nats_url,
                 "Development only: agents join the bus directly at this URL instead of through the bridge "
                 "(default when the bridge service is not run: the bus URL)");
  app.add_option("--bridge-listen", cfg.bridge_listen,
                 "The attested bridge's TLS address (port 0 = any free)")
      ->capture_default_str();
  app.add_option(
         "--bridge-evidence-ttl", cfg.bridge_evidence_ttl,
         "Seconds an agent's admission lasts; then the bridge closes its link and the agent re-attests")
      ->capture_default_str()
      ->check(CLI::Range(1u, 86400u * 30));
  app.add_option("--agent-max-upload", cfg.agent_max_upload,
                 "Largest file in bytes that agents accept (cove-agent --max-upload; default: the agent's)");
  app.add_option(
      "--agent-vtpm", cfg.agent_vtpm_tcti,
      "Process backend: agents quote this vTPM (cove-agent --vtpm TCTI, e.g. swtpm:host=H,port=P); "
      "one agent at a time can use a swtpm");
  app.add_option("--agent-ima-list", cfg.agent_ima_list,
                 "Process backend, with --agent-vtpm: agents send this IMA measurement list and quote "
                 "PCR 10 (cove-agent --ima-list FILE)")
      ->needs("--agent-vtpm");
  app.add_option("--log-level", cfg.log_level, "trace|debug|info|warn|error")->capture_default_str();
  app.add_option("--libvirt-uri", cfg.libvirt_uri, "libvirt connection of the libvirt backend")
      ->capture_default_str();
  app.add_option("--eos-dir", cfg.eos_dir,
                 "EOS guest image the libvirt backend boots (vmlinuz, initrd.img, cmdline; ./cove.sh eos "
                 "builds it; default: ../eos beside coved)");
  app.add_option("--vm-vcpus", cfg.vm_vcpus, "vCPUs of each libvirt CVM")
      ->capture_default_str()
      ->check(CLI::Range(1u, 64u));
  app.add_option(
         "--pvh-firmware", cfg.pvh_firmware,
         "qboot ROM with which libvirt CVMs boot the image's PVH vmlinux (seconds faster under TCG "
         "than vmlinuz with SeaBIOS); empty, missing or no vmlinux in the image: vmlinuz with SeaBIOS")
      ->capture_default_str();
  app.add_option("--snp-ovmf", cfg.snp_ovmf,
                 "OVMF (AmdSev build, with the kernel-hashes table) of SEV-SNP CVMs: the manager computes "
                 "their expected launch measurement with it; empty: not computed")
      ->check(CLI::ExistingFile);
  app.add_option("--snp-vcpu-type", cfg.snp_vcpu_type, "QEMU vCPU model of SEV-SNP CVMs (measured)")
      ->capture_default_str()
      ->check(CLI::IsMember(attest::vcpu_type_names()));
  app.add_option("--vm-memory", cfg.vm_memory_mib, "Memory in MiB of each libvirt CVM")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{256}, uint64_t{1048576}));
  app.add_option("--guest-vtpm-tcti", cfg.guest_vtpm_tcti,
                 "Guest agents add vTPM evidence from this TCTI (cove-agent --vtpm; the VM's emulated TPM); "
                 "empty: none")
      ->capture_default_str();
  app.add_option("--cocos-grpc-tls", cfg.cocos_grpc_tls,
                 "Transport of the cocos agent.AgentService front door of CVMs created with it "
                 "(cove cvm create --cocos-grpc): atls (attested TLS, as cocos HEAD) or none (plaintext, "
                 "development)")
      ->check(CLI::IsMember({"none", "atls"}))
      ->capture_default_str();
  app.add_option("--heartbeat-interval", cfg.heartbeat_interval_ms,
                 "Milliseconds between agent heartbeats (given to agents; the monitor's expectation)")
      ->capture_default_str()
      ->check(CLI::Range(10u, 600000u));
  app.add_option("--heartbeat-misses", cfg.heartbeat_misses,
                 "Heartbeats an agent may miss before the monitor reports its CVM unhealthy")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000u));
  app.add_option("--stats-interval", cfg.stats_interval_ms,
                 "Milliseconds between the monitor's resource samples of each CVM (0: off)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 3600000u));
  app.add_flag("--insecure-bus", cfg.insecure_bus,
               "Embedded nats-server without TLS and users: anyone on the host can do anything "
               "(development only)");
  app.add_option("--nkey-dir", cfg.nkey_dir,
                 "With --nats: directory of <role>.seed nkeys the services authenticate with");
  app.add_option("--ca", cfg.ca_file, "With --nats: CA certificate (PEM) of the server; enables TLS");
  app.add_option("--cvms-url", cfg.cvms_url,
                 "Dial this cocos computation-management server (cvms.Service/Process, HOST:PORT) and run "
                 "its computations");
  app.add_option("--cvms-ca", cfg.cvms_ca, "CA (PEM) of the CVMS server; enables TLS");
  app.add_option("--cvms-cert", cfg.cvms_cert, "Client certificate (PEM) for mutual TLS to the CVMS server");
  app.add_option("--cvms-key", cfg.cvms_key, "Key (PEM) of --cvms-cert");
  app.add_option("--cvms-backend", cfg.cvms_backend, "Backend of the CVMs run requests create")
      ->capture_default_str();
  app.add_option("--cvms-tee", cfg.cvms_tee, "TEE of the CVMs run requests create")->capture_default_str();
  app.add_option("--cvms-cvm-ttl", cfg.cvms_cvm_ttl,
                 "TTL in seconds of the CVMs run requests create (0: until StopComputation)")
      ->capture_default_str();
  app.add_option("--cvms-reconnect-max", cfg.cvms_reconnect_max_ms,
                 "Cap in milliseconds of the reconnect backoff to the CVMS server")
      ->capture_default_str()
      ->check(CLI::Range(250u, 3600u * 1000));
  app.add_option("--manager-grpc-listen", cfg.manager_grpc_listen,
                 "Serve cocos's manager.ManagerService (gRPC) here, HOST:PORT (port 0 = any free)");
  app.add_option("--manager-grpc-cert", cfg.manager_grpc_cert,
                 "TLS certificate (PEM) of --manager-grpc-listen");
  app.add_option("--manager-grpc-key", cfg.manager_grpc_key, "Key (PEM) of --manager-grpc-cert");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    if (rc == 0) return make_error(errc::none, "");
    return make_error(errc::invalid_request, e.what());
  }
  if (!services.empty()) {
    cfg.services.clear();
    std::stringstream ss(services);
    for (std::string s; std::getline(ss, s, ',');)
      if (!s.empty()) cfg.services.insert(s);
  }
  if (cfg.state_dir.empty()) cfg.state_dir = default_state_dir();
  if (cfg.agent_binary.empty()) {
    cfg.agent_binary = self_dir() / "cove-agent";
  }
  if (cfg.eos_dir.empty()) cfg.eos_dir = self_dir().parent_path() / "eos";
  if (auto v = validate(cfg); !v) return v.error();
  return cfg;
}

expected<void> validate(const daemon_config& cfg) {
  for (const auto& s : cfg.services) {
    if (implemented_services.count(s)) continue;
    if (planned_services.count(s))
      return make_error(errc::invalid_request,
                        fmt::format("--services: '{}' is not implemented yet in this build", s));
    return make_error(errc::invalid_request, fmt::format("--services: unknown service '{}'", s));
  }
  if (cfg.services.empty()) return make_error(errc::invalid_request, "--services: empty");
  if (cfg.state_dir.empty()) return make_error(errc::invalid_request, "--state-dir: empty");
  if (cfg.nats_url.empty() && (!cfg.nkey_dir.empty() || !cfg.ca_file.empty()))
    return make_error(errc::invalid_request,
                      "--nkey-dir and --ca apply to an external server (--nats); the embedded one "
                      "generates its own in <state>/bus");
  if (!cfg.nats_url.empty() && cfg.insecure_bus)
    return make_error(
        errc::invalid_request,
        "--insecure-bus applies to the embedded server; an external one is configured by its operator");
  if (!cfg.nkey_dir.empty() && !fs::is_directory(cfg.nkey_dir))
    return make_error(errc::invalid_request, "--nkey-dir: " + cfg.nkey_dir.string() + " is not a directory");
  if (!cfg.ca_file.empty() && !fs::is_regular_file(cfg.ca_file))
    return make_error(errc::invalid_request, "--ca: " + cfg.ca_file.string() + " does not exist");
  v1::Backend backend{};
  v1::Tee tee{};
  if (!parse_backend(cfg.cvms_backend, backend))
    return make_error(errc::invalid_request, "--cvms-backend: unknown backend '" + cfg.cvms_backend + "'");
  if (!parse_tee(cfg.cvms_tee, tee))
    return make_error(errc::invalid_request, "--cvms-tee: unknown TEE '" + cfg.cvms_tee + "'");
  if (cfg.cvms_url.empty() && (!cfg.cvms_ca.empty() || !cfg.cvms_cert.empty() || !cfg.cvms_key.empty()))
    return make_error(errc::invalid_request, "--cvms-ca, --cvms-cert and --cvms-key need --cvms-url");
  if (cfg.cvms_cert.empty() != cfg.cvms_key.empty())
    return make_error(errc::invalid_request, "--cvms-cert and --cvms-key go together");
  if (!cfg.cvms_cert.empty() && cfg.cvms_ca.empty())
    return make_error(errc::invalid_request, "--cvms-cert needs --cvms-ca (the server's CA)");
  if (cfg.manager_grpc_cert.empty() != cfg.manager_grpc_key.empty())
    return make_error(errc::invalid_request, "--manager-grpc-cert and --manager-grpc-key go together");
  if (cfg.manager_grpc_listen.empty() && !cfg.manager_grpc_cert.empty())
    return make_error(errc::invalid_request, "--manager-grpc-cert needs --manager-grpc-listen");
  if (cfg.services.count("manager") && !fs::exists(cfg.agent_binary))
    return make_error(errc::invalid_request, "--agent: " + cfg.agent_binary.string() + " does not exist");
  return ok();
}

int run(const daemon_config& cfg) {
  log::init("coved", cfg.log_level);
  // Signals are taken by sigwait in this thread; every other thread inherits the block.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  std::error_code ec;
  fs::create_directories(cfg.state_dir, ec);
  if (ec) {
    spdlog::critical("state dir {}: {}", cfg.state_dir.string(), ec.message());
    return 1;
  }
  fs::permissions(cfg.state_dir, fs::perms::owner_all, ec);

  embedded_nats nats;
  bus_access access;
  access.url = cfg.nats_url;
  access.nkey_dir = cfg.nkey_dir;
  access.ca_file = cfg.ca_file;
  if (access.url.empty()) {
    fs::path config;
    if (!cfg.insecure_bus) {
      auto dir = prepare_secure_bus(cfg.state_dir, cfg.listen);
      if (!dir) {
        spdlog::critical("bus security: {}", dir.error().to_string());
        return 1;
      }
      access.secure = std::move(*dir);
      config = access.secure->config_file();
    } else {
      spdlog::warn("--insecure-bus: the embedded nats-server has no TLS and no users (development only)");
    }
    auto started = nats.start(cfg.nats_server, cfg.listen, cfg.state_dir / "nats", config);
    if (!started) {
      spdlog::critical("embedded nats-server: {}", started.error().to_string());
      return 1;
    }
    access.url = *started;
    std::ofstream(cfg.state_dir / "nats.url", std::ios::trunc) << access.url << '\n';
    spdlog::info("embedded nats-server listening on {}{}", access.url,
                 access.secure ? "; keys and config in " + access.secure->path().string() : "");
  }
  const std::string& url = access.url;
  std::vector<std::shared_ptr<bus::connection>> conns;  // closed after the actors are gone
  auto connect = [&](bus::authz::role r, bool relay = false) -> std::shared_ptr<bus::connection> {
    auto c = access.connect(r, relay);
    if (!c) {
      spdlog::critical("bus {} ({} service): {}", url, bus::authz::to_string(r), c.error().to_string());
      return nullptr;
    }
    conns.push_back(*c);
    return *c;
  };
  // Grants participants their computation's subjects: config rewrite + reload.
  std::mutex grant_mu;
  auto grant = [&](const std::string& cvm_id, const std::vector<bus::nkeys::raw_public>& keys) {
    std::lock_guard lock(grant_mu);
    auto before = access.secure->render();
    access.secure->grant(cvm_id, keys);
    if (access.secure->render() == before) return;  // nothing new: no reload
    if (auto w = access.secure->write_config(); !w) {
      spdlog::error("bus grant for {}: {}", cvm_id, w.error().to_string());
      return;
    }
    if (auto r = nats.reload(); !r) {
      spdlog::error("bus grant for {}: {}", cvm_id, r.error().to_string());
      return;
    }
    spdlog::info("bus: {} participant key(s) may now use CVM {}", keys.size(), cvm_id);
  };
  std::shared_ptr<bridge::server> bridge_front;
  std::shared_ptr<bus::connection> bridge_bus;
  if (cfg.services.count("bridge")) {
    auto identity = bridge::ensure_identity(cfg.state_dir / "bridge");
    if (!identity) {
      spdlog::critical("bridge identity: {}", identity.error().to_string());
      return 1;
    }
    // Its own connection: it must not receive the publishes it relays (no echo), and
    // it holds one subscription per agent subject (shared delivery threads).
    bridge_bus = connect(bus::authz::role::bridge, /*relay=*/true);
    if (!bridge_bus) return 1;
    auto front = bridge::server::start(
        {.listen = cfg.bridge_listen, .identity = *identity, .bus = bridge_bus},
        bridge::make_admission(
            {.bus = bridge_bus, .valid_for = std::chrono::seconds(cfg.bridge_evidence_ttl)}));
    if (!front) {
      spdlog::critical("bridge: {}", front.error().to_string());
      return 1;
    }
    bridge_front = std::move(*front);
    std::ofstream(cfg.state_dir / "bridge" / "address", std::ios::trunc) << bridge_front->address() << '\n';
  }

  caf::actor_system_config sys_cfg;
  bus::add_bus_types(sys_cfg);
  sys_cfg.set("logger.console", caf::atom("none"));
  int rc = 0;
  {
    caf::actor_system sys{sys_cfg};
    std::vector<bus::subscription> subs;
    std::shared_ptr<manager::process_backend> backend;
    std::shared_ptr<manager::libvirt_backend> vms;
    std::shared_ptr<caf::actor> reaper_target;
    caf::actor manager_handle, computation_handle, attestation_handle, bridge_handle, monitor_handle;
    auto subscribe = [&](bus::connection& bus, const caf::actor& target,
                         std::initializer_list<std::string_view> subjects) -> bool {
      for (auto s : subjects) {
        auto sub = bus::subscribe_actor(bus, std::string(s), target);
        if (!sub) {
          spdlog::critical("subscribe {}: {}", s, sub.error().to_string());
          return false;
        }
        subs.push_back(std::move(*sub));
      }
      return true;
    };

    bool ok_start = true;
    if (cfg.services.count("manager")) {
      auto sim = prepare_sim_tee(cfg.state_dir, cfg.agent_binary, cfg.eos_dir);
      auto conn = connect(bus::authz::role::manager);
      if (!conn) {
        ok_start = false;
      } else if (!sim) {
        spdlog::critical("simulated TEE: {}", sim.error().to_string());
        ok_start = false;
      } else {
        // The reaper threads report through a handle set once the actor exists.
        auto target = reaper_target = std::make_shared<caf::actor>();
        auto on_exit = [target](const std::string& id, int status) {
          caf::anon_send(*target, atom::exited::value, id, status);
        };
        backend = std::make_shared<manager::process_backend>(on_exit);
        manager::libvirt_config lc;
        lc.uri = cfg.libvirt_uri;
        lc.state_dir = cfg.state_dir;
        lc.image_dir = cfg.eos_dir;
        lc.vcpus = cfg.vm_vcpus;
        lc.snp_ovmf = cfg.snp_ovmf;
        lc.pvh_firmware = cfg.pvh_firmware;
        lc.snp_vcpu_type = cfg.snp_vcpu_type;
        lc.memory_mib = cfg.vm_memory_mib;
        lc.guest_vtpm_tcti = cfg.guest_vtpm_tcti;
        vms = std::make_shared<manager::libvirt_backend>(lc, on_exit);
        // A coved that died left its VMs running: destroy them (libvirt_backend.hpp says why).
        if (fs::exists(cfg.state_dir / "libvirt.uri")) {
          if (auto gone = vms->reconcile(); !gone)
            spdlog::warn("libvirt: cannot reconcile leftover domains: {}", gone.error().to_string());
          else if (!gone->empty())
            spdlog::warn("libvirt: destroyed {} domain(s) of a previous coved: {}", gone->size(),
                         fmt::join(*gone, ", "));
        }
        manager::manager_config mc;
        mc.state_dir = cfg.state_dir;
        mc.agent_binary = cfg.agent_binary;
        if (bridge_front && cfg.agent_nats_url.empty()) {
          mc.agent_bridge_address = bridge_front->address();
          mc.agent_bridge_ca = cfg.state_dir / "bridge" / "cert.pem";
        } else {
          mc.agent_nats_url = cfg.agent_nats_url.empty() ? url : cfg.agent_nats_url;
        }
        mc.default_policy_json = sim->policy_json;
        mc.agent_log_level = cfg.log_level;
        mc.agent_max_upload = cfg.agent_max_upload;
        mc.agent_heartbeat_interval = std::chrono::milliseconds(cfg.heartbeat_interval_ms);
        mc.agent_vtpm_tcti = cfg.agent_vtpm_tcti;
        mc.agent_ima_list = cfg.agent_ima_list;
        mc.cocos_grpc_tls = cfg.cocos_grpc_tls;
        mc.bus = conn;
        mc.backend = backend;
        mc.libvirt = vms;
        mc.sim_root = sim->root;
        auto h = sys.spawn(manager::manager, std::move(mc));
        manager_handle = caf::actor_cast<caf::actor>(h);
        *target = manager_handle;
        ok_start =
            subscribe(*conn, manager_handle,
                      {bus::subjects::manager_create, bus::subjects::manager_list,
                       bus::subjects::manager_info, bus::subjects::manager_remove,
                       bus::subjects::manager_policy, bus::subjects::bridge_events, "cove.v1.cvm.*.events"});
      }
    }
    if (ok_start && cfg.services.count("computation")) {
      computation::computation_config cc;
      cc.bus = connect(bus::authz::role::computation);
      if (!cc.bus) {
        ok_start = false;
      } else {
        if (access.secure) cc.grant_participants = grant;
        auto conn = cc.bus;
        auto h = sys.spawn(computation::computation, std::move(cc));
        computation_handle = caf::actor_cast<caf::actor>(h);
        ok_start =
            subscribe(*conn, computation_handle,
                      {bus::subjects::computation_start, bus::subjects::computation_stop,
                       bus::subjects::computation_status, bus::subjects::cvm_events, "cove.v1.cvm.*.events"});
      }
    }
    if (ok_start && cfg.services.count("attestation")) {
      attestation::attestation_config ac;
      ac.bus = connect(bus::authz::role::attestation);
      if (!ac.bus) {
        ok_start = false;
      } else {
        auto conn = ac.bus;
        attestation_handle = caf::actor_cast<caf::actor>(sys.spawn(attestation::attestation, std::move(ac)));
        ok_start = subscribe(*conn, attestation_handle, {bus::subjects::attestation_verify});
      }
    }
    if (ok_start && cfg.services.count("monitor")) {
      monitor::monitor_config oc;
      oc.bus = connect(bus::authz::role::monitor);
      if (!oc.bus) {
        ok_start = false;
      } else {
        // The process backend's numbers come from /proc; the libvirt backend registers
        // its own source for v1::Backend::libvirt.
        oc.sources[v1::Backend::process] = std::make_shared<monitor::process_stats_source>();
        if (vms) oc.sources[v1::Backend::libvirt] = std::make_shared<libvirt_stats_source>(vms);
        oc.heartbeat_interval = std::chrono::milliseconds(cfg.heartbeat_interval_ms);
        oc.heartbeat_misses = cfg.heartbeat_misses;
        oc.stats_interval = std::chrono::milliseconds(cfg.stats_interval_ms);
        auto conn = oc.bus;
        monitor_handle = caf::actor_cast<caf::actor>(sys.spawn(monitor::monitor, std::move(oc)));
        ok_start = subscribe(
            *conn, monitor_handle,
            {bus::subjects::monitor_stats, bus::subjects::all_heartbeats, bus::subjects::cvm_events});
      }
    }
    if (ok_start && bridge_front) {
      bridge_handle = caf::actor_cast<caf::actor>(
          sys.spawn(bridge_service::bridge, bridge_service::bridge_config{bridge_front}));
      ok_start = subscribe(*bridge_bus, bridge_handle, {bus::subjects::cvm_events});
    }
    // Every subscription is known to the server before coved reports ready.
    for (auto& c : conns) {
      if (!ok_start) break;
      if (auto f = c->flush(std::chrono::seconds(5)); !f) {
        spdlog::critical("bus flush: {}", f.error().to_string());
        ok_start = false;
      }
    }
    // The orchestrator front doors (gateway/): bus clients with the
    // orchestrator role, started once the services they call are subscribed.
    orchestrator_doors doors;
    if (ok_start && (!cfg.cvms_url.empty() || !cfg.manager_grpc_listen.empty())) {
      auto conn = connect(bus::authz::role::orchestrator);
      auto started = conn ? start_orchestrator_doors(cfg, conn) : make_error(errc::unavailable, "no bus");
      if (!started) {
        if (conn) spdlog::critical("orchestrator front doors: {}", started.error().to_string());
        ok_start = false;
      } else {
        doors = std::move(*started);
      }
    }
    std::unique_ptr<bus_log_watcher> watcher;
    if (ok_start && access.secure) {
      if (auto mon = connect(bus::authz::role::monitor))
        watcher = std::make_unique<bus_log_watcher>(nats.log_path(), nats.log_start(), mon);
      else
        ok_start = false;
    }
    if (ok_start) {
      spdlog::info("coved ready: services {}; state {}", fmt::join(cfg.services, ","),
                   cfg.state_dir.string());
      int sig = 0;
      sigwait(&sigs, &sig);
      spdlog::info("coved: signal {}; shutting down", sig);
    } else {
      rc = 1;
    }
    watcher.reset();
    doors = {};                        // before the services: it may be waiting for one of them
    subs.clear();                      // no more bus traffic into the actors
    if (backend) backend->shutdown();  // joins the reapers while the manager can still receive
    if (vms) vms->shutdown();          // destroys the VMs, joins the libvirt threads
    if (reaper_target) *reaper_target = caf::actor{};
    if (manager_handle) caf::anon_send_exit(manager_handle, caf::exit_reason::user_shutdown);
    if (computation_handle) caf::anon_send_exit(computation_handle, caf::exit_reason::user_shutdown);
    if (attestation_handle) caf::anon_send_exit(attestation_handle, caf::exit_reason::user_shutdown);
    if (bridge_handle) caf::anon_send_exit(bridge_handle, caf::exit_reason::user_shutdown);
    if (monitor_handle) caf::anon_send_exit(monitor_handle, caf::exit_reason::user_shutdown);
  }
  bridge_front.reset();  // closes every agent link
  bridge_bus.reset();
  conns.clear();
  nats.stop();
  if (cfg.nats_url.empty()) fs::remove(cfg.state_dir / "nats.url", ec);
  fs::remove(cfg.state_dir / "manager-grpc.address", ec);
  fs::remove_all(cfg.state_dir / "cvms", ec);
  return rc;
}

}  // namespace cove::daemon

#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "cove/agent/agent.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/log.hpp"

namespace {

/// A mkdtemp directory removed at exit (standalone runs without --work-dir / --sim-dir).
struct scratch_dir {
  std::filesystem::path path;
  ~scratch_dir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
  bool create(const char* prefix) {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) return false;
    path = templ;
    return true;
  }
};

}  // namespace

int main(int argc, char** argv) {
  cove::agent::agent_config cfg;
  std::string sim_dir;
  std::string tee = "sim";
  int64_t timeout_s = cfg.default_timeout.count();
  CLI::App app{"cove-agent — the computation agent inside a confidential VM"};
  app.add_option("--cvm-id", cfg.cvm_id, "This CVM's id (required on the bus; default 'standalone')");
  auto* bridge = app.add_option("--bridge", cfg.bridge_address,
                                "The attested bridge, HOST:PORT: the agent's only way onto the bus");
  app.add_option("--bridge-ca", cfg.bridge_ca, "The bridge certificate to pin (PEM)")->needs(bridge);
  auto* nats = app.add_option("--nats", cfg.nats_url,
                              "Development only: join the bus directly at this URL instead of the bridge");
  bridge->excludes(nats);
  app.add_option("--work-dir", cfg.work_dir, "Scratch directory for the run (default: a temporary one)");
  app.add_option("--tee", tee, "Evidence provider")->check(CLI::IsMember({"sim"}))->capture_default_str();
  app.add_option("--sim-dir", sim_dir,
                 "Simulated TEE identity (VCEK, chain) written by the manager (default: a fresh one)");
  app.add_option("--manifest", cfg.manifest_file, "Load this computation manifest (JSON) at start");
  app.add_option("--grpc-listen", cfg.cocos.listen,
                 "Serve cocos's agent.AgentService on HOST:PORT (port 0: any free port)");
  app.add_option("--grpc-tls", cfg.cocos.tls,
                 "none | tls | atls (attested TLS: TLS 1.3 + Exported Authenticator)")
      ->check(CLI::IsMember({"none", "tls", "atls"}))
      ->capture_default_str();
  app.add_option("--cert", cfg.cocos.cert, "TLS server certificate (PEM) for --grpc-tls tls");
  app.add_option("--key", cfg.cocos.key, "TLS server key (PEM) for --grpc-tls tls");
  app.add_option("--client-ca", cfg.cocos.client_ca,
                 "With --grpc-tls tls: require client certificates issued by this CA (mTLS)");
  app.add_option("--grpc-port-file", cfg.cocos.port_file, "Write the bound gRPC port here once serving");
  auto* vtpm = app.add_option("--vtpm", cfg.vtpm_tcti,
                              "Also quote this vTPM in every evidence (tpm2-tss TCTI: device:/dev/tpmrm0, "
                              "swtpm:host=H,port=P); its attestation key is bound into the TEE report");
  auto* ima =
      app.add_option("--ima-list", cfg.ima_list,
                     "With --vtpm: send this IMA binary measurement list (up to the quote) and "
                     "quote PCR 10; must exist (default: the kernel's, with a device TCTI, if present)");
  ima->needs(vtpm);
  app.add_option("--timeout", timeout_s, "Default algorithm time limit in seconds")->capture_default_str();
  app.add_option("--max-upload", cfg.max_upload_bytes, "Largest accepted file in bytes")
      ->capture_default_str();
  app.add_option("--log-level", cfg.log_level, "trace|debug|info|warn|error")->capture_default_str();
  int64_t heartbeat_ms = cfg.heartbeat_interval.count();
  app.add_option("--heartbeat-interval", heartbeat_ms,
                 "Milliseconds between heartbeats on cove.v1.cvm.<id>.heartbeat (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{600000}));
  int64_t parent_pid = 0;
  app.add_option("--parent-pid", parent_pid,
                 "Exit (SIGTERM) when this process, the launching coved, dies (process backend)");
  CLI11_PARSE(app, argc, argv);
  cfg.ima_list_explicit = ima->count() > 0;
  if (parent_pid > 0) {
    // A process-backend CVM cannot outlive its coved: nothing could adopt it.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != static_cast<pid_t>(parent_pid)) {
      std::cerr << "cove-agent: the launching coved (pid " << parent_pid << ") is gone\n";
      return 1;
    }
  }
  bool on_bus = !cfg.nats_url.empty() || !cfg.bridge_address.empty();
  if (on_bus && (cfg.cvm_id.empty() || cfg.work_dir.empty() || sim_dir.empty())) {
    std::cerr << "cove-agent: --cvm-id, --work-dir and --sim-dir are required on the bus\n";
    return 2;
  }
  if (cfg.cvm_id.empty()) cfg.cvm_id = "standalone";
  cfg.default_timeout = std::chrono::seconds(timeout_s);
  cfg.cocos.max_upload_bytes = cfg.max_upload_bytes;
  cfg.heartbeat_interval = std::chrono::milliseconds(heartbeat_ms);
  cove::log::init("cove-agent", cfg.log_level);

  scratch_dir work_scratch, sim_scratch;
  if (cfg.work_dir.empty()) {
    if (!work_scratch.create("cove-agent-work")) {
      std::cerr << "cove-agent: cannot create a temporary work dir\n";
      return 1;
    }
    cfg.work_dir = work_scratch.path;
  }
  if (sim_dir.empty()) {
    // A fresh simulated chip for a standalone run: the evidence carries its chain.
    auto root = cove::attest::generate_sim_root();
    auto chip =
        root ? cove::attest::issue_sim_vcek(*root) : cove::expected<cove::attest::sim_chip>(root.error());
    if (!chip || !sim_scratch.create("cove-agent-sim") ||
        !cove::attest::save_sim_identity(*chip, *root, sim_scratch.path)) {
      std::cerr << "cove-agent: cannot create a simulated TEE identity\n";
      return 1;
    }
    sim_dir = sim_scratch.path.string();
  }
  cfg.sim.dir = sim_dir;
  return cove::agent::run(cfg);
}

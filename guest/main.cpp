#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>

#include "cove/agent/agent.hpp"
#include "cove/log.hpp"

int main(int argc, char** argv) {
  cove::agent::agent_config cfg;
  std::string sim_dir;
  int64_t timeout_s = cfg.default_timeout.count();
  CLI::App app{"cove-agent — the computation agent inside a confidential VM"};
  app.add_option("--cvm-id", cfg.cvm_id, "This CVM's id")->required();
  auto* bridge = app.add_option("--bridge", cfg.bridge_address,
                                "The attested bridge, HOST:PORT: the agent's only way onto the bus");
  app.add_option("--bridge-ca", cfg.bridge_ca, "The bridge certificate to pin (PEM)")->needs(bridge);
  auto* nats = app.add_option("--nats", cfg.nats_url,
                              "Development only: join the bus directly at this URL instead of the bridge");
  bridge->excludes(nats);
  app.add_option("--work-dir", cfg.work_dir, "Scratch directory for the run")->required();
  app.add_option("--sim-dir", sim_dir, "Simulated TEE identity (VCEK, chain) written by the manager")
      ->required();
  app.add_option("--vtpm", cfg.vtpm_tcti,
                 "Also quote this vTPM in every evidence (tpm2-tss TCTI: device:/dev/tpmrm0, "
                 "swtpm:host=H,port=P); its attestation key is bound into the TEE report");
  app.add_option("--timeout", timeout_s, "Default algorithm time limit in seconds")->capture_default_str();
  app.add_option("--max-upload", cfg.max_upload_bytes, "Largest accepted file in bytes")
      ->capture_default_str();
  app.add_option("--log-level", cfg.log_level, "trace|debug|info|warn|error")->capture_default_str();
  int64_t parent_pid = 0;
  app.add_option("--parent-pid", parent_pid,
                 "Exit (SIGTERM) when this process, the launching coved, dies (process backend)");
  CLI11_PARSE(app, argc, argv);
  if (parent_pid > 0) {
    // A process-backend CVM cannot outlive its coved: nothing could adopt it.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != static_cast<pid_t>(parent_pid)) {
      std::cerr << "cove-agent: the launching coved (pid " << parent_pid << ") is gone\n";
      return 1;
    }
  }
  cfg.sim.dir = sim_dir;
  cfg.default_timeout = std::chrono::seconds(timeout_s);
  cove::log::init("cove-agent", cfg.log_level);
  return cove::agent::run(cfg);
}

// The libvirt backend end to end: coved boots the EOS image in a real QEMU VM
// (libvirt, TCG, tee=none, swtpm), EOS's init starts the agent, the agent joins
// through the attested bridge (10.0.2.2 → host loopback) and a computation runs
// with sealed uploads and a sealed result; a VM whose QEMU is killed mid-run is
// reported crashed with its console tail; a coved restarted after a SIGKILL
// destroys the VM the dead one left. Needs libvirtd (ctest fixture
// `libvirtd`: deploy/libvirtd.sh) and the EOS image (fixture `eos_image`);
// COVE_EOS_IMAGE names it. Labels slow, no-sanitize (the image's agent is the
// normal build's).
#include <sys/stat.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "cli_runner.hpp"
#include "event_log.hpp"
#include "fixture.hpp"

using namespace cove;
using namespace cove::itest;

namespace {

std::string snp_ovmf() {
  return std::string(COVE_FIXTURES_DIR) + "/snp-measure/ovmf_AmdSev_suffix.bin";
}

fs::path eos_image() {
  const char* dir = std::getenv("COVE_EOS_IMAGE");
  REQUIRE_MESSAGE(dir != nullptr, "COVE_EOS_IMAGE is not set (ctest sets it to the eos_image fixture)");
  REQUIRE_MESSAGE(fs::exists(fs::path(dir) / "vmlinuz"), dir << "/vmlinuz missing: run ctest -R eos.image");
  return dir;
}

/// `cmd`'s exit status and output.
std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, out};
  char buf[512];
  while (::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  return {::pclose(p), out};
}

bool domain_exists(const std::string& cvm) {
  return run("virsh -c qemu:///system domstate cove-" + cvm).first == 0;
}

/// Destroys the CVM's domain whatever happens to the test (coved's own shutdown
/// destroys it too; this covers a coved that died).
struct domain_guard {
  std::string cvm;
  ~domain_guard() {
    if (!cvm.empty() && domain_exists(cvm)) run("virsh -c qemu:///system destroy cove-" + cvm);
  }
};

/// A cluster whose coved boots the EOS image; its directory is searchable by QEMU's
/// user (test::temp_dir makes it 0700; coved grants the rest below its state dir).
/// The image is copied into a private (0700) directory first, as a build tree in a
/// private checkout would be: QEMU's user can't reach it, so coved must boot its
/// own staged copy under the state dir.
struct vm_cluster {
  test::temp_dir private_image{"cove-eos-private"};
  std::unique_ptr<cluster> c;
  vm_cluster() {
    auto image = eos_image();
    for (const char* f : {"vmlinuz", "vmlinux", "initrd.img", "cmdline", "agent.sha384"})
      if (fs::exists(image / f)) fs::copy_file(image / f, private_image.path() / f);
    ::chmod(private_image.path().c_str(), 0700);
    // The monitor samples every 500 ms (the stats checks); the AmdSev OVMF fixture lets
    // the manager compute the expected SEV-SNP measurement of the image.
    c = std::make_unique<cluster>(std::vector<std::string>{
        "--eos-dir", private_image.path().string(), "--stats-interval", "500", "--snp-ovmf", snp_ovmf()});
    ::chmod(c->dir().c_str(), 0711);
  }
};

/// `policy_json` empty: the host's default policy.
expected<bus::reply<v1::CvmInfo>> create_vm(cluster& c, const std::string& policy_json = {}) {
  flatbuffers::FlatBufferBuilder b(64);
  auto req = v1::CreateCvmCreate(b, v1::Backend::libvirt, v1::Tee::none, 0,
                                 policy_json.empty() ? 0 : b.CreateString(policy_json));
  return bus::request_typed<v1::CvmInfo>(c.bus(), bus::subjects::manager_create,
                                         bus::finish(b, req, {}, "itest"), 240s);
}

const cli::client_options slow_guest{.request_timeout = 60s, .chunk_timeout = 60s};

}  // namespace

TEST_CASE("libvirt: a CVM boots EOS, its agent joins through the bridge and runs a computation") {
  vm_cluster v;
  auto& c = *v.c;
  event_log events(c.bus());
  // The bridge admits the agent only with a vTPM quote from the VM's emulated TPM
  // (libvirt's swtpm), its AK bound into the report (coved's default --guest-vtpm-tcti),
  // and the guest kernel's IMA list replaying the quoted PCR 10 (EOS has no IMA policy:
  // the list is boot_aggregate, which the empty allowlist lets through).
  auto policy = nlohmann::json::parse(read_file(c.state_dir() / "sim" / "policy.json"));
  policy["vtpm"] = {{"required", true}, {"ima", nlohmann::json::object()}};
  auto t0 = std::chrono::steady_clock::now();
  auto created = create_vm(c, policy.dump());
  REQUIRE_MESSAGE(created, (created ? "" : created.error().to_string()) << "; coved log in " << c.dir());
  auto ready_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  const std::string cvm = created->body->id()->str();
  domain_guard guard{cvm};
  MESSAGE("libvirt create -> agent ready: " << ready_ms << " ms");
  CHECK(created->body->state() == v1::CvmState::running);
  CHECK(created->body->backend() == v1::Backend::libvirt);
  CHECK(created->body->pid() > 0);  // QEMU's
  CHECK(domain_exists(cvm));
  CHECK(events.wait(cvm, "admitted", {}, 1, 30s).find("evidence with vTPM quote verified") !=
        std::string::npos);

  // The share QEMU exports: agent.conf, the bridge certificate (not its key), the sim identity.
  auto share = c.state_dir() / "cvms" / cvm / "config";
  auto conf = read_file(share / "agent.conf");
  CHECK(conf.find("CVM_ID=" + cvm) != std::string::npos);
  CHECK(conf.find("BRIDGE=10.0.2.2:") != std::string::npos);
  CHECK(fs::exists(share / "bridge-ca.pem"));
  CHECK_FALSE(fs::exists(share / "bridge-key.pem"));
  CHECK_FALSE(fs::exists(share / "key.pem"));
  auto console = read_file(c.state_dir() / "cvms" / cvm / "console.log");
  CHECK(console.find("EOS: starting cove-agent --cvm-id " + cvm) != std::string::npos);
  CHECK(conf.find("--vtpm device:/dev/tpmrm0") != std::string::npos);
  // The fast TCG boot (docs/performance.md, launch): the PVH vmlinux with qboot (the image
  // has one), entropy from a virtio-rng, and ACPI tables the initrd did not overwrite.
  auto domain = read_file(c.state_dir() / "cvms" / cvm / "domain.xml");
  CHECK(domain.find("<loader readonly='yes' type='rom'>/usr/share/qemu/qboot.rom</loader>") !=
        std::string::npos);
  CHECK(domain.find("/eos/vmlinux</kernel>") != std::string::npos);
  CHECK(domain.find("<rng model='virtio'>") != std::string::npos);
  CHECK(console.find("ACPI BIOS Error") == std::string::npos);

  auto owner = c.make_participant("owner");
  auto consumer = c.make_participant("consumer");
  auto algo = c.make_file("algo.sh", "#!/bin/sh\ncat datasets/* | wc -l > results/lines\n", true);
  auto data = c.make_file("rows.csv", "1\n2\n3\n");
  auto m = make_manifest("libvirt-1", algo, algo_type::bin, owner, {{data, &owner}}, {&consumer});
  CHECK(must(c.start_computation(cvm, m), "start") == "ReceivingAlgorithm");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, owner.key, c.policy(), nullptr, slow_guest),
       "algo");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, data, owner.key, c.policy(), nullptr, slow_guest),
       "data");
  auto st = c.wait_for_state(cvm, "ConsumingResults", 120s);
  REQUIRE_MESSAGE(st.state == "ConsumingResults", st.message);
  CHECK(c.fetch_result_file(cvm, consumer, "lines", slow_guest) == "3\n");

  // Remove: the domain is destroyed and the CVM's files (share, console) are gone.
  auto r0 = std::chrono::steady_clock::now();
  auto removed = c.remove_cvm(cvm, 30s);
  REQUIRE_MESSAGE(removed, (removed ? "" : removed.error().to_string()));
  auto remove_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - r0).count();
  MESSAGE("libvirt remove: " << remove_ms << " ms");
  CHECK(removed->body->state() == v1::CvmState::removed);
  CHECK_FALSE(domain_exists(cvm));
  CHECK_FALSE(fs::exists(c.state_dir() / "cvms" / cvm));
}

TEST_CASE("libvirt: killing QEMU mid-run gives a crashed event and a clean failure") {
  vm_cluster v;
  auto& c = *v.c;
  event_log events(c.bus());
  auto created = create_vm(c);
  REQUIRE_MESSAGE(created, (created ? "" : created.error().to_string()) << "; coved log in " << c.dir());
  const std::string cvm = created->body->id()->str();
  domain_guard guard{cvm};
  auto qemu = static_cast<pid_t>(created->body->pid());
  REQUIRE(qemu > 0);
  // It is this CVM's QEMU (libvirt names the guest on QEMU's command line).
  auto cmdline = read_file("/proc/" + std::to_string(qemu) + "/cmdline");
  REQUIRE(cmdline.find("guest=cove-" + cvm) != std::string::npos);

  auto owner = c.make_participant("owner");
  auto algo = c.make_file("slow.sh", "#!/bin/sh\nsleep 600\n", true);
  auto data = c.make_file("rows.csv", "1\n");
  auto m = make_manifest("libvirt-crash", algo, algo_type::bin, owner, {{data, &owner}}, {&owner});
  must(c.start_computation(cvm, m), "start");
  must(cli::upload(c.bus(), cvm, cli::file_role::algorithm, algo, owner.key, c.policy(), nullptr, slow_guest),
       "algo");
  must(cli::upload(c.bus(), cvm, cli::file_role::dataset, data, owner.key, c.policy(), nullptr, slow_guest),
       "data");
  c.wait_for_state(cvm, "Running", 60s);

  // The monitor's libvirt source (virDomainGetInfo through the manager's backend):
  // a stats event, the monitor's answer and `cove cvm info` show the running domain.
  auto sampled = events.wait_for("stats", cvm, "running", 0, 30s);
  REQUIRE_MESSAGE(sampled.has_value(), "no stats event for " << cvm);
  CHECK(sampled->message.find("1 vCPUs") != std::string::npos);
  flatbuffers::FlatBufferBuilder rb(64);
  auto ref = bus::finish(rb, v1::CreateCvmRef(rb, rb.CreateString(cvm)), {}, "itest");
  auto stats =
      must(bus::request_typed<v1::CvmStats>(c.bus(), bus::subjects::monitor_stats, ref, 10s), "stats");
  CHECK(stats.body->source()->str() == "libvirt");
  CHECK(stats.body->run_state()->str() == "running");
  CHECK(stats.body->sampled_at_ns() > 0);
  CHECK(stats.body->processes() == 1);                            // vCPUs (coved --vm-vcpus 1)
  CHECK(stats.body->memory_max_bytes() == 512ull * 1024 * 1024);  // --vm-memory 512 MiB
  CHECK(stats.body->memory_bytes() > 0);
  CHECK(stats.body->memory_bytes() <= stats.body->memory_max_bytes());
  CHECK(stats.body->cpu_time_ns() > 1'000'000'000ull);  // booting under TCG alone takes seconds
  cove_cli cli(c);
  auto text = cli.ok({"cvm", "info", cvm});
  CHECK(text.find("stats (libvirt") != std::string::npos);
  CHECK(text.find("1 vCPUs") != std::string::npos);
  CHECK(text.find("of 512 MiB") != std::string::npos);
  auto j = nlohmann::json::parse(cli.ok({"--json", "cvm", "info", cvm}));
  CHECK(j["monitor"]["source"] == "libvirt");
  CHECK(j["monitor"]["run_state"] == "running");
  CHECK(j["monitor"]["processes"] == 1);
  // The simulated measurement the agent reports: the image's (stripped) agent.
  auto agent_sha = read_file(eos_image() / "agent.sha384");
  agent_sha.erase(agent_sha.find_last_not_of('\n') + 1);
  CHECK(j["launch_measurement"] == agent_sha);
  CHECK(text.find("launch measurement (simulated) " + agent_sha) != std::string::npos);

  REQUIRE(::kill(qemu, SIGKILL) == 0);
  auto crashed = events.wait(cvm, "crashed", {}, 1, 60s);
  CHECK(crashed.find("QEMU failed or was killed") != std::string::npos);
  CHECK(crashed.find("last lines:") != std::string::npos);
  CHECK(crashed.find("console.log") != std::string::npos);
  auto info = must(c.cvm_info(cvm), "info");
  CHECK(info.body->state() == v1::CvmState::crashed);
  REQUIRE(info.body->detail() != nullptr);
  CHECK(info.body->detail()->str().find("QEMU failed or was killed") != std::string::npos);
  CHECK_FALSE(domain_exists(cvm));

  // The user asking for the run learns it failed, and why (the computation service).
  auto failed = events.wait(cvm, "Failed", "CVM crashed: QEMU failed or was killed", 1, 10s);
  auto status = must(cli::computation_status(c.bus(), cvm, {.request_timeout = 5s}), "status");
  CHECK(status.state == "Failed");
  CHECK(status.message == failed);
  // A crashed CVM is forgotten at once on remove, its files with it.
  auto removed = c.remove_cvm(cvm, 30s);
  REQUIRE(removed);
  CHECK(removed->body->state() == v1::CvmState::removed);
  CHECK_FALSE(fs::exists(c.state_dir() / "cvms" / cvm));
}

TEST_CASE("libvirt: a coved restarted after a SIGKILL destroys the VMs the dead one left") {
  vm_cluster v;
  auto& c = *v.c;
  auto created = create_vm(c);
  REQUIRE_MESSAGE(created, (created ? "" : created.error().to_string()) << "; coved log in " << c.dir());
  const std::string cvm = created->body->id()->str();
  domain_guard guard{cvm};
  CHECK(fs::exists(c.state_dir() / "libvirt.uri"));
  c.coved().kill();
  CHECK(domain_exists(cvm));  // a dead coved cannot take its VMs along
  // Reconciliation runs before the manager answers, so it is done once coved is ready.
  c.start_coved({"--eos-dir", eos_image().string()});
  CHECK(test::wait_until([&] { return !domain_exists(cvm); }, test::deadline_in(30s)));
  CHECK_FALSE(fs::exists(c.state_dir() / "cvms" / cvm));
  auto info = c.cvm_info(cvm);
  REQUIRE_FALSE(info);
  CHECK(info.error().code == errc::not_found);
}

TEST_CASE("libvirt: tee values this host cannot run are refused") {
  vm_cluster v;
  flatbuffers::FlatBufferBuilder b(64);
  auto req = v1::CreateCvmCreate(b, v1::Backend::libvirt, v1::Tee::sev_snp, 0);
  auto r = bus::request_typed<v1::CvmInfo>(v.c->bus(), bus::subjects::manager_create,
                                           bus::finish(b, req, {}, "itest"), 30s);
  check_error(r, errc::unavailable, "needs SEV-SNP/TDX hardware");
  // The launch plan needs no hardware: the manager says what an SNP host would
  // measure, which is what `cove measure` computes for the image, OVMF and vCPUs.
  auto image = eos_image();
  auto cmdline = read_file(image / "cmdline");
  cmdline.erase(cmdline.find_last_not_of('\n') + 1);
  cove_cli cli(*v.c);
  auto want = cli.ok({"measure", "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--ovmf",
                      snp_ovmf(), "--kernel", (image / "vmlinuz").string(), "--initrd",
                      (image / "initrd.img").string(), "--append", cmdline});
  want.erase(want.find_last_not_of('\n') + 1);
  REQUIRE(want.size() == 96);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("expected launch measurement (SEV-SNP) would be " + want) !=
        std::string::npos);
}

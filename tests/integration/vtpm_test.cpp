// vTPM evidence end to end: a real swtpm, coved --agent-vtpm (process backend: cove-agent
// --vtpm swtpm:...), the bridge admitting the agent only under a policy whose `vtpm` section
// the quote satisfies, and `cove attestation get/validate` checking the same evidence.
// `ctest -R vtpm` selects these.
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "cli_runner.hpp"
#include "fixture.hpp"

#include "cove/attest/sim_store.hpp"
#include "cove/cli/evidence_file.hpp"
#include "cove/test/swtpm.hpp"

using namespace cove;
using namespace cove::itest;
using json = nlohmann::json;

namespace {

/// The host's sim policy plus a `vtpm` section.
std::string policy_with_vtpm(cluster& c, const json& vtpm) {
  auto j = json::parse(read_file(c.state_dir() / "sim" / "policy.json"));
  j["vtpm"] = vtpm;
  return j.dump();
}

expected<bus::reply<v1::CvmInfo>> create_with_policy(cluster& c, const std::string& policy) {
  flatbuffers::FlatBufferBuilder b(8192);
  auto req = v1::CreateCvmCreate(b, v1::Backend::process, v1::Tee::sim, 0, b.CreateString(policy));
  return bus::request_typed<v1::CvmInfo>(c.bus(), bus::subjects::manager_create,
                                         bus::finish(b, req, {}, "itest"), 30s);
}

bool no_cvms(cluster& c) {
  flatbuffers::FlatBufferBuilder b(64);
  auto req = bus::finish(b, v1::CreateCvmListRequest(b), {}, "itest");
  return test::wait_until(
      [&] {
        auto list = bus::request_typed<v1::CvmList>(c.bus(), bus::subjects::manager_list, req, 5s);
        return list && (!list->body->cvms() || list->body->cvms()->size() == 0);
      },
      test::deadline_in(20s));
}

const std::string zero_pcr(64, '0');

}  // namespace

TEST_CASE(
    "vtpm: an agent with --vtpm is admitted under a policy requiring its quote; attestation get verifies "
    "it") {
  auto tpm = must(test::swtpm::start(), "swtpm");
  cluster c({"--agent-vtpm", tpm.tcti()});
  cove_cli cove(c);

  // A PCR the swtpm does not have: the bridge refuses the agent, naming the PCR, and the
  // manager removes the CVM (and so frees the swtpm for the next agent).
  auto wrong = create_with_policy(
      c, policy_with_vtpm(c, {{"required", true}, {"pcrs", {{"16", std::string(64, 'e')}}}}));
  check_error(wrong, errc::attestation_failed, "vtpm.pcrs: pcr[16]: got " + zero_pcr);
  CHECK(no_cvms(c));

  // A fresh swtpm has PCRs 0-9 and 16 at zero.
  auto vtpm_policy = json{{"required", true},
                          {"ak_types", {"ecc-p256"}},
                          {"pcrs", {{"0", zero_pcr}, {"7", zero_pcr}, {"16", zero_pcr}}}};
  auto policy_text = policy_with_vtpm(c, vtpm_policy);
  auto r = must(create_with_policy(c, policy_text), "create with a vtpm policy");
  REQUIRE(r.body->id() != nullptr);
  CHECK(r.body->state() == v1::CvmState::running);
  auto cvm = r.body->id()->str();
  auto log = read_file(c.state_dir() / "cvms" / cvm / "agent.log");
  CHECK(log.find("vtpm: AK ") != std::string::npos);

  // The user's own check, with the same policy: the CLI verifies the quote and its binding.
  auto policy_file = c.dir() / "vtpm-policy.json";
  write_file(policy_file, policy_text);
  auto ev_file = c.dir() / "evidence.json";
  auto got = json::parse(cove.ok({"attestation", "get", "--mode", "vtpm", "--cvm", cvm, "--policy",
                                  policy_file.string(), "-o", ev_file.string(), "--json"}));
  CHECK(got.at("verified") == true);
  CHECK(got.at("vtpm") == true);
  CHECK(got.at("summary").get<std::string>().find(
            "vTPM quote by a bound ecc-p256 AK over PCRs 0,1,2,3,4,5,6,7,8,9,16") != std::string::npos);
  auto ev = must(cli::evidence_from_json(read_file(ev_file)), "saved evidence");
  REQUIRE(ev.vtpm);
  CHECK(ev.vtpm->pcrs.size() == 11);

  auto v = json::parse(cove.ok({"attestation", "validate", "--evidence", ev_file.string(), "--policy",
                                policy_file.string(), "--json"}));
  CHECK(v.at("valid") == true);
  CHECK(v.at("vtpm").at("ak").at("restricted_signing") == true);
  CHECK(v.at("vtpm").at("pcrs").at("16") == zero_pcr);

  // Tampered saved evidence fails offline, naming the field.
  auto tampered = ev;
  tampered.vtpm->pcrs[7][0] ^= 1;
  write_file(c.dir() / "tampered.json", cli::evidence_to_json(tampered));
  auto bad = cove.run({"attestation", "validate", "--evidence", (c.dir() / "tampered.json").string(),
                       "--policy", policy_file.string()});
  CHECK(bad.code == 1);
  CHECK(bad.err.find("vtpm.quote: pcrDigest mismatch") != std::string::npos);
  auto j = json::parse(read_file(ev_file));
  j["vtpm"]["pcrs"]["99"] = zero_pcr;
  write_file(c.dir() / "bad-index.json", j.dump());
  auto idx = cove.run({"attestation", "validate", "--evidence", (c.dir() / "bad-index.json").string(),
                       "--policy", policy_file.string()});
  CHECK(idx.code == 1);
  CHECK(idx.err.find("invalid_request: evidence: vtpm.pcrs: '99' is not a PCR index (0-23)") !=
        std::string::npos);
  // Dropping the section does not help: the report binds the AK.
  auto stripped = ev;
  stripped.vtpm.reset();
  write_file(c.dir() / "stripped.json", cli::evidence_to_json(stripped));
  auto no_policy = c.dir() / "plain-policy.json";
  write_file(no_policy, read_file(c.state_dir() / "sim" / "policy.json"));
  auto strip = cove.run({"attestation", "validate", "--evidence", (c.dir() / "stripped.json").string(),
                         "--policy", no_policy.string()});
  CHECK(strip.code == 1);
  CHECK(strip.err.find("report_data: got ") != std::string::npos);
}

TEST_CASE("vtpm: an agent without --vtpm is refused by a policy requiring vTPM evidence") {
  cluster c;
  cove_cli cove(c);
  auto refused = create_with_policy(c, policy_with_vtpm(c, {{"required", true}}));
  check_error(refused, errc::attestation_failed, "vtpm: the evidence has no vTPM section");
  CHECK(no_cvms(c));
  // Under the host default the same agent runs; `attestation get --mode vtpm` says what is missing.
  auto cvm = c.create_cvm();
  auto r =
      cove.run({"attestation", "get", "--mode", "vtpm", "--cvm", cvm, "-o", (c.dir() / "e.json").string()});
  CHECK(r.code == 1);
  CHECK(r.err.find("without a vTPM section") != std::string::npos);
}

TEST_CASE("vtpm: cove-agent --vtpm with an unreachable TPM exits 1 naming it, before joining the bus") {
  test::temp_dir dir("cove-vtpm-agent");
  auto root = must(attest::generate_sim_root(), "sim root");
  auto chip = must(attest::issue_sim_vcek(root), "sim vcek");
  must(attest::save_sim_identity(chip, root, dir.path() / "tee"), "sim identity");
  // A swtpm that was started and stopped: its port is closed now.
  std::string tcti;
  {
    auto tpm = must(test::swtpm::start(), "swtpm");
    tcti = tpm.tcti();
  }
  auto agent = must(
      test::child_process::spawn({(bin_dir() / "cove-agent").string(), "--cvm-id", "cvm-1", "--work-dir",
                                  (dir.path() / "work").string(), "--sim-dir", (dir.path() / "tee").string(),
                                  "--nats", "nats://127.0.0.1:1", "--vtpm", tcti},
                                 {}, dir.path(), "agent"),
      "spawn cove-agent");
  auto status = agent.wait_for_exit(test::deadline_in(60s));
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 1);
  auto out = read_file(dir.path() / "agent.stdout") + read_file(dir.path() / "agent.stderr");
  INFO(out);
  CHECK(out.find("vtpm " + tcti + ": ") != std::string::npos);
  CHECK(out.find("bus:") == std::string::npos);
}

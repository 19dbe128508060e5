// vTPM evidence end to end: a real swtpm, coved --agent-vtpm (process backend: cove-agent
// --vtpm swtpm:...), the bridge admitting the agent only under a policy whose `vtpm` section
// the quote satisfies, and `cove attestation get/validate` checking the same evidence; with
// coved --agent-ima-list, the agent's IMA list replayed against the quoted PCR 10 (vtpm.ima).
// `ctest -R vtpm` selects these.
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "cli_runner.hpp"
#include "fixture.hpp"

#include "cove/agent/tpm_provider.hpp"
#include "cove/attest/ima.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/cli/evidence_file.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/hash.hpp"
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

using bytes = std::vector<uint8_t>;
using ima_files = std::vector<std::pair<std::string, bytes>>;

/// A stand-in for a measured file's sha256 (any 32 bytes do: nothing hashes the files).
bytes file_digest(std::string_view content) {
  auto d = crypto::sha3_256_of(content);
  return bytes(d.begin(), d.end());
}

/// An ima-ng list of (path, sha256) as the kernel writes it.
bytes ima_list_of(const ima_files& files) {
  bytes out;
  for (const auto& [path, digest] : files) {
    auto e = attest::make_ima_ng_entry(path, digest);
    out.insert(out.end(), e.entry.begin(), e.entry.end());
  }
  return out;
}

/// What the kernel does when it measures `files`: extends SHA-256 of each template into
/// the swtpm's PCR 10 (through its one connection, closed again before an agent needs it).
void extend_ima_pcr(const test::swtpm& tpm, const ima_files& files) {
  auto t = must(agent::tpm_provider::open(tpm.tcti()), "open swtpm");
  for (const auto& [path, digest] : files)
    must(t.extend(attest::ima_default_pcr, attest::make_ima_ng_entry(path, digest).template_data),
         "extend pcr 10");
}

// Runs cove-agent (a simulated TEE under dir/tee, a bus it never reaches) with `extra`
// arguments, expects it to exit 1 before joining the bus and returns what it printed.
std::string output_of_agent_exiting_1(const test::temp_dir& dir, const std::vector<std::string>& extra) {
  auto root = must(attest::generate_sim_root(), "sim root");
  auto chip = must(attest::issue_sim_vcek(root), "sim vcek");
  must(attest::save_sim_identity(chip, root, dir.path() / "tee"), "sim identity");
  std::vector<std::string> args{(bin_dir() / "cove-agent").string(),
                                "--cvm-id",
                                "cvm-1",
                                "--work-dir",
                                (dir.path() / "work").string(),
                                "--sim-dir",
                                (dir.path() / "tee").string(),
                                "--nats",
                                "nats://127.0.0.1:1"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto agent = must(test::child_process::spawn(args, {}, dir.path(), "agent"), "spawn cove-agent");
  auto status = agent.wait_for_exit(test::deadline_in(60s));
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 1);
  auto out = read_file(dir.path() / "agent.stdout") + read_file(dir.path() / "agent.stderr");
  INFO(out);
  CHECK(out.find("bus:") == std::string::npos);
  return out;
}

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
  // A swtpm that was started and stopped: its port is closed now.
  std::string tcti;
  {
    auto tpm = must(test::swtpm::start(), "swtpm");
    tcti = tpm.tcti();
  }
  auto out = output_of_agent_exiting_1(dir, {"--vtpm", tcti});
  INFO(out);
  CHECK(out.find("vtpm " + tcti + ": ") != std::string::npos);
}

TEST_CASE(
    "vtpm: the agent sends its IMA list with a quote of PCR 10; the bridge replays it and applies "
    "vtpm.ima") {
  auto tpm = must(test::swtpm::start(), "swtpm");
  test::temp_dir dir("cove-ima");
  const ima_files files{{"boot_aggregate", file_digest("aggregate")},
                        {"/usr/bin/bash", file_digest("bash")},
                        {"/usr/bin/cove-agent", file_digest("agent")}};
  extend_ima_pcr(tpm, files);
  auto list_file = dir.path() / "binary_runtime_measurements";
  auto list = ima_list_of(files);
  write_file(list_file, std::string(list.begin(), list.end()));
  auto ima_policy = [](bool agent_allowed) {
    json paths = json::object();
    paths["/usr/bin/bash"] = json::array({crypto::to_hex(file_digest("bash"))});
    if (agent_allowed) paths["/usr/bin/cove-agent"] = json::array({crypto::to_hex(file_digest("agent"))});
    return json{{"required", true}, {"ima", {{"allow", paths}}}};
  };
  const auto agent_entry_offset =
      list.size() - attest::make_ima_ng_entry(files[2].first, files[2].second).entry.size();
  {
    cluster c({"--agent-vtpm", tpm.tcti(), "--agent-ima-list", list_file.string()});
    cove_cli cove(c);

    // A measured file the allowlist does not have: refused, naming it.
    auto refused = create_with_policy(c, policy_with_vtpm(c, ima_policy(false)));
    check_error(refused, errc::attestation_failed,
                "vtpm.ima: ima entry 2 (offset " + std::to_string(agent_entry_offset) +
                    "): /usr/bin/cove-agent sha256:" + crypto::to_hex(file_digest("agent")) +
                    " is not allowed");
    CHECK(no_cvms(c));

    // The allowlist has every file: admitted; the quote covers PCR 10 and the list replays it.
    auto policy_text = policy_with_vtpm(c, ima_policy(true));
    auto r = must(create_with_policy(c, policy_text), "create with an IMA policy");
    REQUIRE(r.body->id() != nullptr);
    CHECK(r.body->state() == v1::CvmState::running);
    auto cvm = r.body->id()->str();
    CHECK(read_file(c.state_dir() / "cvms" / cvm / "agent.log").find("IMA list " + list_file.string()) !=
          std::string::npos);
    auto policy_file = c.dir() / "ima-policy.json";
    write_file(policy_file, policy_text);
    auto ev_file = c.dir() / "evidence.json";
    auto got = json::parse(cove.ok({"attestation", "get", "--mode", "vtpm", "--cvm", cvm, "--policy",
                                    policy_file.string(), "-o", ev_file.string(), "--json"}));
    CHECK(got.at("verified") == true);
    CHECK(got.at("summary").get<std::string>().find("over PCRs 0,1,2,3,4,5,6,7,8,9,10,16") !=
          std::string::npos);
    auto ev = must(cli::evidence_from_json(read_file(ev_file)), "saved evidence");
    REQUIRE(ev.vtpm);
    CHECK(ev.vtpm->ima_list == list);
    auto v = json::parse(cove.ok({"attestation", "validate", "--mode", "vtpm", "--evidence", ev_file.string(),
                                  "--policy", policy_file.string(), "--json"}));
    CHECK(v.at("ima").at("entries") == 3);
    must(c.remove_cvm(cvm), "remove the CVM");
    CHECK(no_cvms(c));

    // The list no longer matches what was measured (another digest for the agent, the
    // template digest recomputed so that it still parses): it does not replay PCR 10.
    auto tampered = files;
    tampered[2].second = file_digest("another agent");
    auto bad_list = ima_list_of(tampered);
    write_file(list_file, std::string(bad_list.begin(), bad_list.end()));
    auto replay = create_with_policy(c, policy_with_vtpm(c, ima_policy(true)));
    check_error(replay, errc::attestation_failed, "vtpm.ima: ima list does not replay pcr[10]: list gives ");
    CHECK(no_cvms(c));
  }
  // An agent with a vTPM but no IMA list, under a policy with vtpm.ima: refused. (A fresh
  // swtpm: a refused agent is killed without flushing its AK, and swtpm holds only three
  // transient objects, so a fourth agent on the first one would not get its AK loaded.)
  auto tpm2 = must(test::swtpm::start(), "second swtpm");
  cluster c({"--agent-vtpm", tpm2.tcti()});
  auto none = create_with_policy(c, policy_with_vtpm(c, ima_policy(true)));
  check_error(none, errc::attestation_failed,
              "vtpm.ima: the evidence carries no IMA measurement list, but the policy checks one");
  CHECK(no_cvms(c));
}

TEST_CASE("vtpm: cove-agent --ima-list with a file it cannot read exits 1 naming it") {
  test::temp_dir dir("cove-ima-agent");
  auto tpm = must(test::swtpm::start(), "swtpm");
  auto missing = dir.path() / "no-such-list";
  auto out = output_of_agent_exiting_1(dir, {"--vtpm", tpm.tcti(), "--ima-list", missing.string()});
  INFO(out);
  CHECK(out.find("--ima-list " + missing.string() + ": cannot be read") != std::string::npos);
}

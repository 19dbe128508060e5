// The real `cove` binary against a real coved: keys, CVMs, the whole journey,
// attestation, events, and its exit codes.
#include "cli_runner.hpp"
#include "fixture.hpp"

#include <sys/stat.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "cove/zip.hpp"

using namespace cove;
using namespace cove::itest;
using json = nlohmann::json;

namespace {

participant load_participant(const fs::path& prefix) {
  auto file = fs::path(prefix.string() + ".key");
  return participant{must(crypto::private_key::load_file(file), "load key"), file};
}

}  // namespace

TEST_CASE("the cove binary drives keys, CVMs, a whole computation, attestation and events") {
  cluster c;
  cove_cli cove(c);
  auto keys = c.dir() / "keys";
  fs::create_directories(keys);

  // Keys of every supported type: a 0600 private key and its public key.
  const std::pair<std::string, std::string> kinds[] = {
      {"ed25519", "algo"}, {"ecdsa", "data"}, {"rsa", "consumer"}};
  for (const auto& [type, who] : kinds) {
    auto prefix = (keys / who).string();
    auto out = cove.ok({"keys", "generate", "--type", type, "-o", prefix});
    CHECK(out.find("manifest user_key: ") != std::string::npos);
    struct stat sb {};
    REQUIRE(::stat((prefix + ".key").c_str(), &sb) == 0);
    CHECK((sb.st_mode & 0777) == 0600);
    auto pub = must(crypto::public_key::from_pem(read_file(prefix + ".pub")), "pub");
    auto priv = must(crypto::private_key::load_file(prefix + ".key"), "key");
    CHECK(pub.der() == priv.public_key().der());
  }
  auto algo_owner = load_participant(keys / "algo");
  auto data_owner = load_participant(keys / "data");
  auto consumer = load_participant(keys / "consumer");

  // CVMs.
  auto created = json::parse(cove.ok({"cvm", "create", "--json"}));
  REQUIRE(created.is_object());
  auto id = created.at("id").get<std::string>();
  CHECK(bus::valid_id(id));
  CHECK(created.at("state") == "running");
  auto listed = json::parse(cove.ok({"cvm", "list", "--json"}));
  REQUIRE(listed.is_array());
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].at("id") == id);
  auto info = cove.ok({"cvm", "info", id});
  CHECK(info.find(id) != std::string::npos);
  CHECK(info.find("running") != std::string::npos);

  // The journey, through the binary only.
  auto algo = c.make_file("double.py",
                          "n = int(open('datasets/n.txt').read())\n"
                          "open('results/double.txt', 'w').write(str(2 * n))\n");
  auto data = c.make_file("n.txt", "21");
  auto m = make_manifest("cli-1", algo, algo_type::python, algo_owner, {{data, &data_owner}}, {&consumer});
  auto manifest_file = c.dir() / "manifest.json";
  write_file(manifest_file, to_json(m));
  auto started =
      json::parse(cove.ok({"computation", "start", "--cvm", id, manifest_file.string(), "--json"}));
  CHECK(started.at("state") == "ReceivingAlgorithm");
  // Uploading without the agreed manifest is refused by the CLI itself (usage error).
  CHECK(cove.run({"algo", "--cvm", id, algo.string(), algo_owner.key_file.string()}).code == 2);
  // A manifest that differs from the CVM's: nothing is sent, the CLI says why.
  auto other = m;
  other.description = "not what was agreed";
  auto other_file = c.dir() / "other.json";
  write_file(other_file, to_json(other));
  auto refused = cove.run(
      {"algo", "--cvm", id, "--manifest", other_file.string(), algo.string(), algo_owner.key_file.string()});
  CHECK(refused.code == 1);
  CHECK(refused.err.find("not the agreed manifest") != std::string::npos);
  CHECK(cove.ok({"algo", "--cvm", id, "--manifest", manifest_file.string(), algo.string(),
                 algo_owner.key_file.string()})
            .find("accepted by the attested agent") != std::string::npos);
  CHECK(cove.ok({"data", "--cvm", id, "--manifest", manifest_file.string(), data.string(),
                 data_owner.key_file.string()})
            .find("accepted by the attested agent") != std::string::npos);
  std::string state;
  bool done = test::wait_until(
      [&] {
        state = json::parse(cove.ok({"computation", "status", "--cvm", id, "--json"}))
                    .at("state")
                    .get<std::string>();
        return state == "ConsumingResults" || state == "Failed";
      },
      test::deadline_in(30s));
  REQUIRE(done);
  REQUIRE(state == "ConsumingResults");
  auto out = c.dir() / "out.zip";
  cove.ok({"result", "--cvm", id, "--manifest", manifest_file.string(), consumer.key_file.string(), "-o",
           out.string()});
  must(extract_zip(out, c.dir() / "out"), "unzip");
  CHECK(read_file(c.dir() / "out" / "double.txt") == "42");
  // A key that is no consumer gets nothing (exit 1, the agent's reason on stderr).
  auto denied = cove.run(
      {"result", "--cvm", id, data_owner.key_file.string(), "-o", (c.dir() / "stolen.zip").string()});
  CHECK(denied.code == 1);
  CHECK(denied.err.find("cove: unauthorized: ") != std::string::npos);

  // Attestation: the evidence file, and the raw SEV-SNP-format report.
  auto report = c.dir() / "report.bin";
  CHECK(cove.ok({"attestation", "get", "--cvm", id, "-o", (c.dir() / "evidence.json").string(), "--report",
                 report.string()})
            .find("evidence verified") != std::string::npos);
  CHECK(fs::file_size(report) == 1184);

  // Events: keep publishing one until `cove events` has printed it and exited.
  {
    std::string name;
    auto p = cove.spawn({"events", "--count", "1", "--wait", "10"}, name);
    flatbuffers::FlatBufferBuilder b(128);
    auto ev = v1::CreateEventDirect(b, "cvm", id.c_str(), "", "running", "cli-events-probe", bus::now_ns());
    auto payload = bus::finish(b, ev, {}, "itest");
    test::wait_until(
        [&] {
          must(c.bus().publish("cove.v1.events.cvm", payload), "publish");
          return p.wait_for_exit(test::deadline_in(50ms)).has_value();
        },
        test::deadline_in(15s));
    auto r = cove.collect(p, name, 5s);
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.code == 0);
    CHECK(r.out.find("cli-events-probe") != std::string::npos);
    CHECK(r.out.find(id) != std::string::npos);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
  }

  auto removed = cove.ok({"cvm", "remove", id});
  CHECK(removed.find(id) != std::string::npos);
  CHECK(removed.find("removed") != std::string::npos);
  CHECK(json::parse(cove.ok({"cvm", "list", "--json"})).empty());
}

TEST_CASE("cove exit codes: 1 for failed operations, 2 for bad arguments, 0 for --help") {
  cluster c;
  cove_cli cove(c);

  SUBCASE("an unknown CVM is an operational failure") {
    auto info = cove.run({"cvm", "info", "cvm-nope"});
    CHECK(info.code == 1);
    CHECK(info.err.starts_with("cove: not_found: "));
    auto remove = cove.run({"cvm", "remove", "cvm-nope"});
    CHECK(remove.code == 1);
    CHECK(remove.err.starts_with("cove: not_found: "));
    auto status = cove.run({"computation", "status", "--cvm", "cvm-nope"});
    CHECK(status.code == 1);
    CHECK(status.err.starts_with("cove: unavailable: no agent answers for CVM 'cvm-nope'"));
    auto json_err = cove.run({"cvm", "info", "cvm-nope", "--json"});
    CHECK(json_err.code == 1);
    auto j = json::parse(json_err.err);
    CHECK(j.at("error") == "not_found");
  }

  SUBCASE("bad arguments are usage errors") {
    const std::vector<std::vector<std::string>> bad = {
        {},
        {"frobnicate"},
        {"cvm"},
        {"cvm", "info"},
        {"cvm", "create", "--tee", "sgx"},
        {"cvm", "create", "--no-such-flag"},
        {"computation", "start", "--cvm", "x", "/no/such/manifest.json"},
        {"keys", "generate"},
        {"keys", "generate", "-o", "k", "--type", "dsa"},
        {"events", "--count", "many"},
        {"--timeout", "soon", "cvm", "list"},
    };
    for (const auto& args : bad) {
      auto r = cove.run(args);
      std::string cmd;
      for (const auto& a : args) cmd += a + " ";
      INFO("cove " << cmd << "\nstderr: " << r.err);
      CHECK(r.code == 2);
      CHECK_FALSE(r.err.empty());
    }
  }

  SUBCASE("--help on every command") {
    const std::vector<std::vector<std::string>> cmds = {
        {"cvm", "create"},
        {"cvm", "list"},
        {"cvm", "info"},
        {"cvm", "remove"},
        {"computation", "start"},
        {"computation", "status"},
        {"computation", "stop"},
        {"algo"},
        {"data"},
        {"result"},
        {"attestation", "get"},
        {"attestation", "validate"},
        {"measure"},
        {"igvm", "build"},
        {"policy", "from-measure"},
        {"policy", "show"},
        {"keys", "generate"},
        {"events"},
        {},
    };
    for (auto args : cmds) {
      args.push_back("--help");
      auto r = cove.run(args);
      std::string cmd;
      for (const auto& a : args) cmd += a + " ";
      INFO("cove " << cmd << "\nstdout: " << r.out << "\nstderr: " << r.err);
      CHECK(r.code == 0);
      CHECK(r.out.find("Usage") != std::string::npos);
    }
  }
}

TEST_CASE("cove attestation validate and cove measure work offline on recorded evidence") {
  test::temp_dir dir("cove-offline");
  cove_cli cove(dir.path(), {});
  const fs::path snp = fs::path(COVE_FIXTURES_DIR) / "snp";
  // The ARK to trust is the self-signed certificate of the product's bundle.
  auto bundle = read_file(snp / "ask_ark_genoa.pem");
  auto ark = must(attest::identify_ask_ark(bundle), "ark");
  auto ark_pem = dir.path() / "ark-genoa.pem";
  {
    auto split = bundle.find("-----END CERTIFICATE-----");
    REQUIRE(split != std::string::npos);
    // ask_ark files hold two certificates; write the one identify_ask_ark picked as the ARK.
    auto first = bundle.substr(0, split + 25);
    auto second = bundle.substr(bundle.find("-----BEGIN CERTIFICATE-----", split));
    auto first_der = must(attest::pem_to_der(first), "pem");
    write_file(ark_pem, first_der == ark.ark_der ? first : second);
  }
  std::vector<std::string> genoa = {"attestation", "validate",
                                    "--report",    (snp / "genoa-report.bin").string(),
                                    "--vcek",      (snp / "genoa-vcek.der").string(),
                                    "--chain",     (snp / "ask_ark_genoa.pem").string()};
  auto with = [&](std::vector<std::string> extra) {
    auto a = genoa;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  auto valid = json::parse(cove.ok(with({"--ark", ark_pem.string(), "--json"})));
  CHECK(valid.at("valid") == true);
  CHECK(valid.at("report").at("version") == 5);
  CHECK(valid.at("report").at("product") == "Genoa");
  // Another chip's report, a wrong measurement, no trusted root: exit 1 / 2 with the reason.
  auto cross = cove.run({"attestation", "validate", "--report", (snp / "milan-report.bin").string(), "--vcek",
                         (snp / "genoa-vcek.der").string(), "--chain", (snp / "ask_ark_genoa.pem").string(),
                         "--ark", ark_pem.string()});
  CHECK(cross.code == 1);
  CHECK(cross.err.find("attestation_failed") != std::string::npos);
  auto wrong = cove.run(with({"--ark", ark_pem.string(), "--measurement", std::string(96, '0')}));
  CHECK(wrong.code == 1);
  CHECK(wrong.err.find("measurement") != std::string::npos);
  CHECK(cove.run(genoa).code == 2);

  // cove measure reproduces a sev-snp-measure vector through the binary.
  auto digest = cove.ok({"measure", "--mode", "snp:ovmf-hash", "--ovmf",
                         (fs::path(COVE_FIXTURES_DIR) / "snp-measure" / "ovmf_AmdSev_suffix.bin").string()});
  CHECK(digest.find("086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da"
                    "6d466b74") != std::string::npos);
}

// The `cove` binary's attestation tooling: policy from-measure / show, attestation
// validate in every mode (real SNP fixtures, a real swtpm driven by tpm2-tools, DICE
// chains) and attestation get -> validate against a real coved.
#include <openssl/sha.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli_runner.hpp"
#include "cove/attest/dice.hpp"
#include "cove/attest/sim.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/attest/snp_report.hpp"
#include "cove/attest/verify.hpp"
#include "cove/attest/vtpm_evidence.hpp"
#include "cove/cli/evidence_file.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/statements.hpp"
#include "cove/test/swtpm.hpp"
#include "fixture.hpp"

using namespace cove;
using namespace cove::itest;
using json = nlohmann::json;
using namespace std::chrono_literals;
using bytes = std::vector<uint8_t>;

namespace {

const fs::path snp_dir = fs::path(COVE_FIXTURES_DIR) / "snp";
const fs::path measure_dir = fs::path(COVE_FIXTURES_DIR) / "snp-measure";

/// Writes the ARK (the self-signed certificate) of a fixture ask_ark bundle to `out`.
void write_ark(const std::string& product, const fs::path& out) {
  auto bundle = read_file(snp_dir / ("ask_ark_" + product + ".pem"));
  auto ark = must(attest::identify_ask_ark(bundle), "ark");
  auto split = bundle.find("-----END CERTIFICATE-----");
  REQUIRE(split != std::string::npos);
  auto first = bundle.substr(0, split + 25);
  auto second = bundle.substr(bundle.find("-----BEGIN CERTIFICATE-----", split));
  write_file(out, must(attest::pem_to_der(first), "pem") == ark.ark_der ? first : second);
}

/// The `cove measure` flags of a vectors.json entry, and its expected digest.
std::pair<std::vector<std::string>, std::string> vector_args(const std::string& id) {
  auto doc = json::parse(read_file(measure_dir / "vectors.json"));
  for (const auto* list : {&doc.at("vectors"), &doc.at("derived_vectors")})
    for (const auto& v : *list) {
      if (v.at("id") != id) continue;
      auto path = [&](const json& p) {
        auto s = p.get<std::string>();
        return s == "/dev/null" ? s : (measure_dir / s).string();
      };
      std::vector<std::string> a = {"--mode", v.at("mode"), "--ovmf", path(v.at("ovmf"))};
      if (!v.at("vcpus").is_null()) a.insert(a.end(), {"--vcpus", std::to_string(v.at("vcpus").get<int>())});
      if (!v.at("vcpu_type").is_null()) a.insert(a.end(), {"--vcpu-type", v.at("vcpu_type")});
      if (!v.at("kernel").is_null()) a.insert(a.end(), {"--kernel", path(v.at("kernel"))});
      if (!v.at("initrd").is_null()) a.insert(a.end(), {"--initrd", path(v.at("initrd"))});
      if (!v.at("append").is_null()) a.insert(a.end(), {"--append", v.at("append")});
      a.insert(a.end(), {"--guest-features", v.at("guest_features"), "--vmm-type", v.at("vmm_type")});
      return {a, v.value("expected_digest", "")};
    }
  FAIL("no vector " << id);
  return {};
}

/// `name` looked up in PATH (child_process::spawn does not search it).
std::string in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(ss, dir, ':');) {
    auto p = fs::path(dir) / name;
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  FAIL(name << " is not installed (deploy/install-deps.sh installs tpm2-tools)");
  return name;
}

std::vector<std::string> cat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void write_bytes(const fs::path& p, std::span<const uint8_t> b) {
  write_file(p, std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
}

bytes sha256(std::span<const uint8_t> in) {
  bytes out(32);
  SHA256(in.data(), in.size(), out.data());
  return out;
}

bytes file_bytes(const fs::path& p) {
  auto s = read_file(p);
  return {s.begin(), s.end()};
}

}  // namespace

TEST_CASE("cove policy from-measure writes a loadable policy expecting the computed digest; policy show") {
  test::temp_dir dir("cove-policy");
  cove_cli cove(dir.path(), {});
  auto [measure_args, digest] = vector_args("snp_kernel_cmdline_gf21");
  auto ark = dir.path() / "ark-genoa.pem";
  write_ark("genoa", ark);

  // Secure defaults, the computed digest, the named root.
  auto out = dir.path() / "policy.json";
  auto r = cove.run(cat(cat({"policy", "from-measure"}, measure_args),
                        {"--trusted-root", ark.string(), "-o", out.string()}));
  INFO("stderr: " << r.err);
  REQUIRE(r.code == 0);
  CHECK(r.err.find(digest) != std::string::npos);
  auto p = must(attest::load_policy_file(out), "load from-measure policy");
  REQUIRE(p.measurements.size() == 1);
  CHECK(attest::to_hex(p.measurements[0]) == digest);
  CHECK_FALSE(p.allow_debug);
  CHECK_FALSE(p.allow_migration_agent);
  CHECK(p.minimum_report_version == 2);
  REQUIRE(p.trusted_roots.size() == 1);
  CHECK(p.trusted_roots[0] == read_file(ark));
  // Same digest as `cove measure` with the same flags; stdout without -o.
  CHECK(cove.ok(cat({"measure"}, measure_args)).find(digest) != std::string::npos);
  auto printed = json::parse(cove.ok(cat({"policy", "from-measure"}, measure_args)));
  CHECK(printed.at("measurements") == json::array({digest}));
  CHECK(printed.at("allow_debug") == false);
  CHECK(printed.at("trusted_roots").empty());

  // A real Genoa report against that policy: everything verifies but the measurement.
  std::vector<std::string> genoa = {"attestation", "validate",
                                    "--report",    (snp_dir / "genoa-report.bin").string(),
                                    "--vcek",      (snp_dir / "genoa-vcek.der").string(),
                                    "--chain",     (snp_dir / "ask_ark_genoa.pem").string()};
  cove.ok(cat(genoa, {"--ark", ark.string()}));
  auto refused = cove.run(cat(genoa, {"--policy", out.string()}));
  CHECK(refused.code == 1);
  CHECK_MESSAGE(
      refused.err.find("attestation_failed: measurement: got c57729018b0a6fb9") != std::string::npos,
      refused.err);
  CHECK(refused.err.find(digest) != std::string::npos);

  // --base: its other fields are kept, its relative root path made absolute, its
  // measurements replaced; the result is written in another directory and still loads.
  fs::create_directories(dir.path() / "base");
  fs::copy_file(ark, dir.path() / "base" / "ark.pem");
  write_file(dir.path() / "base" / "base.json",
             R"({"measurements": [")" + std::string(96, 'a') +
                 R"("], "product": "Genoa", "minimum_tcb": {"bl": 10, "snp": 25}, "vmpl": 0,
                 "trusted_roots": ["ark.pem"]})");
  fs::create_directories(dir.path() / "elsewhere");
  auto derived = dir.path() / "elsewhere" / "derived.json";
  cove.ok(cat(cat({"policy", "from-measure"}, measure_args),
              {"--base", (dir.path() / "base" / "base.json").string(), "-o", derived.string()}));
  auto d = must(attest::load_policy_file(derived), "load derived policy");
  REQUIRE(d.measurements.size() == 1);
  CHECK(attest::to_hex(d.measurements[0]) == digest);
  CHECK(d.product == attest::snp_product::genoa);
  CHECK(d.minimum_tcb.bl == 10);
  CHECK(d.minimum_tcb.snp == 25);
  CHECK(d.vmpl == 0u);
  CHECK(d.trusted_roots.size() == 1);
  auto derived_json = json::parse(read_file(derived));
  CHECK(fs::path(derived_json.at("trusted_roots")[0].get<std::string>()).is_absolute());

  // Bad inputs: a broken base names the field; modes without a 48-byte digest are usage errors.
  write_file(dir.path() / "bad.json", R"({"measurements": ["abcd"]})");
  auto bad = cove.run(
      cat(cat({"policy", "from-measure"}, measure_args), {"--base", (dir.path() / "bad.json").string()}));
  CHECK(bad.code == 1);
  CHECK_MESSAGE(bad.err.find("measurements[] must be 48 bytes") != std::string::npos, bad.err);
  auto sev = cove.run({"policy", "from-measure", "--mode", "sev", "--ovmf",
                       (measure_dir / "ovmf_AmdSev_suffix.bin").string()});
  CHECK(sev.code == 2);
  auto no_kernel_hashes = vector_args("snp_ovmfx64_with_kernel_error").first;
  auto err = cove.run(cat({"policy", "from-measure"}, no_kernel_hashes));
  CHECK(err.code == 1);
  CHECK(err.err.find("SNP_KERNEL_HASHES") != std::string::npos);
  CHECK(
      cove.run({"policy", "from-measure", "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4"}).code ==
      2);

  // policy show: every default explicit; a broken policy exits 1 naming the field.
  auto shown = json::parse(cove.ok({"policy", "show", derived.string()}));
  CHECK(shown.at("measurements") == json::array({digest}));
  CHECK(shown.at("allow_smt") == true);
  CHECK(shown.at("minimum_report_version") == 2);
  CHECK(shown.at("product") == "Genoa");
  auto compact = cove.ok({"policy", "show", derived.string(), "--json"});
  CHECK(std::count(compact.begin(), compact.end(), '\n') == 1);
  auto broken = cove.run({"policy", "show", (dir.path() / "bad.json").string()});
  CHECK(broken.code == 1);
  CHECK(broken.err.find("bad.json: policy: measurements[] must be 48 bytes") != std::string::npos);
  write_file(dir.path() / "typo.json", R"({"alow_debug": true})");
  CHECK(cove.run({"policy", "show", (dir.path() / "typo.json").string()})
            .err.find("unknown key 'alow_debug'") != std::string::npos);
  CHECK(cove.run({"policy", "show", (dir.path() / "missing.json").string()}).code == 1);
}

TEST_CASE("cove collateral put, then attestation validate --collateral DIR (no --vcek/--chain)") {
  test::temp_dir dir("cove-collateral");
  cove_cli cove(dir.path(), {});
  auto ark = dir.path() / "ark-genoa.pem";
  write_ark("genoa", ark);
  auto cache = dir.path() / "collateral";
  fs::create_directories(cache);
  std::vector<std::string> validate = {
      "attestation", "validate",   "--report",     (snp_dir / "genoa-report.bin").string(),
      "--ark",       ark.string(), "--collateral", cache.string()};

  // Empty cache: a clear error naming the exact file expected.
  auto missing = cove.run(validate);
  CHECK(missing.code == 1);
  CHECK_MESSAGE(
      missing.err.find("not_found: --collateral: no VCEK for chip d2421d976f95ce0b") != std::string::npos,
      missing.err);
  CHECK_MESSAGE(missing.err.find((cache / "vcek/v1/Genoa/d2421d976f95ce0b").string()) != std::string::npos,
                missing.err);
  CHECK(missing.err.find("-ucode84.der") != std::string::npos);

  auto filed =
      cove.ok({"collateral", "put", "--collateral", cache.string(), "--vcek",
               (snp_dir / "genoa-vcek.der").string(), "--chain", (snp_dir / "ask_ark_genoa.pem").string(),
               "--report", (snp_dir / "genoa-report.bin").string()});
  CHECK(filed.find("vcek/v1/Genoa/") != std::string::npos);
  CHECK(cove.ok(validate).find("valid: SEV-SNP report v5 (Genoa)") != std::string::npos);

  // --collateral with --vcek is a usage error; a VCEK that is not the report's is not filed.
  CHECK(cove.run(cat(validate, {"--vcek", (snp_dir / "genoa-vcek.der").string()})).code == 2);
  auto wrong =
      cove.run({"collateral", "put", "--collateral", cache.string(), "--vcek",
                (snp_dir / "milan-vcek.der").string(), "--chain", (snp_dir / "ask_ark_milan.pem").string(),
                "--report", (snp_dir / "genoa-report.bin").string()});
  CHECK(wrong.code == 1);
  CHECK_MESSAGE(wrong.err.find("vcek does not match the report") != std::string::npos, wrong.err);
}

TEST_CASE("cove attestation validate --mode vtpm / snp-vtpm: a swtpm quote made by tpm2-tools") {
  test::temp_dir dir("cove-vtpm");
  cove_cli cove(dir.path(), {});
  auto tpm = must(test::swtpm::start(), "swtpm");
  const std::vector<std::string> env = {"TPM2TOOLS_TCTI=" + tpm.tcti()};
  int runs = 0;
  auto tool = [&](std::vector<std::string> argv) {
    auto name = "tpm2-" + std::to_string(++runs);
    argv[0] = in_path(argv[0]);
    auto p = must(test::child_process::spawn(argv, env, dir.path(), name), "spawn tpm2-tools");
    auto st = p.wait_for_exit(test::deadline_in(30s));
    REQUIRE_MESSAGE(st, argv[0] << " did not exit");
    INFO(argv[0] << ": " << read_file(dir.path() / (name + ".stderr")));
    REQUIRE((WIFEXITED(*st) && WEXITSTATUS(*st) == 0));
  };
  auto f = [&](const char* n) { return (dir.path() / n).string(); };
  // An EK, an ECC AK under it, PCR 4 extended with one boot event, a quote of PCRs 0, 4, 7.
  const std::string event = "cove boot event";
  auto event_digest = sha256(std::span(reinterpret_cast<const uint8_t*>(event.data()), event.size()));
  bytes nonce(32);
  for (size_t i = 0; i < nonce.size(); ++i) nonce[i] = static_cast<uint8_t>(0xc0 + i);
  tool({"tpm2_createek", "-c", f("ek.ctx"), "-G", "rsa", "-u", f("ek.pub")});
  tool({"tpm2_flushcontext", "-t"});
  tool({"tpm2_createak", "-C", f("ek.ctx"), "-c", f("ak.ctx"), "-G", "ecc", "-g", "sha256", "-s", "ecdsa",
        "-u", f("ak.pub"), "-f", "tss"});
  tool({"tpm2_flushcontext", "-t"});
  tool({"tpm2_flushcontext", "-s"});
  tool({"tpm2_pcrextend", "4:sha256=" + crypto::to_hex(event_digest)});
  tool({"tpm2_quote", "-c", f("ak.ctx"), "-l", "sha256:0,4,7", "-q", crypto::to_hex(nonce), "-m",
        f("quote.msg"), "-s", f("quote.sig"), "-g", "sha256"});

  // The PCR values a verifier expects, and the event log that produces them.
  bytes pcr4(32, 0);
  pcr4.insert(pcr4.end(), event_digest.begin(), event_digest.end());
  auto pcr4_value = sha256(pcr4);
  std::string zero(64, '0');
  write_file(dir.path() / "pcrs.json", R"({"pcrs": {"0": ")" + zero + R"(", "4": ")" +
                                           crypto::to_hex(pcr4_value) + R"(", "7": ")" + zero + R"("}})");
  bytes log;
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) log.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  auto raw = [&](std::span<const uint8_t> b) { log.insert(log.end(), b.begin(), b.end()); };
  {
    const std::string sig("Spec ID Event03\0", 16);
    bytes spec(sig.begin(), sig.end());
    for (uint8_t v : {0, 0, 0, 0, 0, 2, 0, 2, 1, 0, 0, 0, 0x0b, 0, 32, 0, 0}) spec.push_back(v);
    u32(0);
    u32(attest::tcg_ev_no_action);
    raw(bytes(20, 0));
    u32(static_cast<uint32_t>(spec.size()));
    raw(spec);
    u32(4);           // PCR
    u32(0x80000003);  // EV_EFI_BOOT_SERVICES_APPLICATION
    u32(1);           // one digest
    log.push_back(0x0b);
    log.push_back(0x00);  // sha256
    raw(event_digest);
    u32(static_cast<uint32_t>(event.size()));
    raw(std::span(reinterpret_cast<const uint8_t*>(event.data()), event.size()));
  }
  write_bytes(dir.path() / "eventlog.bin", log);

  std::vector<std::string> vtpm = {"attestation", "validate",     "--mode",      "vtpm",
                                   "--quote",     f("quote.msg"), "--signature", f("quote.sig"),
                                   "--ak-public", f("ak.pub"),    "--nonce",     crypto::to_hex(nonce)};
  auto with_pcrs = cat(vtpm, {"--pcrs", f("pcrs.json")});
  CHECK(cove.ok(with_pcrs).find("valid: TPM quote of pcrs [0,4,7] signed by the AK") != std::string::npos);
  auto j = json::parse(cove.ok(cat(with_pcrs, {"--eventlog", f("eventlog.bin"), "--json"})));
  CHECK(j.at("valid") == true);
  CHECK(j.at("vtpm").at("quote").at("extra_data") == crypto::to_hex(nonce));
  CHECK(j.at("vtpm").at("pcrs").at("4") == crypto::to_hex(pcr4_value));
  CHECK(j.at("vtpm").at("ak").at("restricted_signing") == true);
  CHECK(j.at("vtpm").at("event_log").at("events").size() == 1);
  CHECK(j.at("vtpm").at("event_log").at("events")[0].at("pcr") == 4);
  // The log alone is enough: its replay gives the quoted values.
  cove.ok(cat(vtpm, {"--eventlog", f("eventlog.bin")}));
  // A PCR policy: met, then not met.
  write_file(dir.path() / "tpm-policy.json", R"({"pcrs": {"4": ")" + crypto::to_hex(pcr4_value) + R"("}})");
  cove.ok(cat(with_pcrs, {"--tpm-policy", f("tpm-policy.json")}));
  write_file(dir.path() / "tpm-policy-7.json", R"({"pcrs": {"7": ")" + std::string(64, 'a') + R"("}})");
  auto unmet = cove.run(cat(with_pcrs, {"--tpm-policy", f("tpm-policy-7.json")}));
  CHECK(unmet.code == 1);
  CHECK(unmet.err.find("pcr policy: pcr[7]: got ") != std::string::npos);

  // Failures: another nonce, other PCR values, a log that does not replay, a tampered quote.
  auto wrong_nonce =
      cove.run(cat({"attestation", "validate", "--mode", "vtpm", "--quote", f("quote.msg"), "--signature",
                    f("quote.sig"), "--ak-public", f("ak.pub"), "--pcrs", f("pcrs.json")},
                   {"--nonce", std::string(64, '1')}));
  CHECK(wrong_nonce.code == 1);
  CHECK(wrong_nonce.err.find("nonce mismatch") != std::string::npos);
  write_file(dir.path() / "zeros.json",
             R"({"pcrs": {"0": ")" + zero + R"(", "4": ")" + zero + R"(", "7": ")" + zero + R"("}})");
  auto wrong_pcrs = cove.run(cat(vtpm, {"--pcrs", f("zeros.json")}));
  CHECK(wrong_pcrs.code == 1);
  CHECK(wrong_pcrs.err.find("pcrDigest mismatch") != std::string::npos);
  auto tampered_log = log;
  tampered_log[tampered_log.size() - 1] ^= 1;                 // the event data: its digest still replays
  tampered_log[tampered_log.size() - event.size() - 5] ^= 1;  // last digest byte: no longer
  write_bytes(dir.path() / "tampered.bin", tampered_log);
  auto bad_log = cove.run(cat(with_pcrs, {"--eventlog", f("tampered.bin")}));
  CHECK(bad_log.code == 1);
  CHECK_MESSAGE(bad_log.err.find("event log: event log does not replay pcr[4]") != std::string::npos,
                bad_log.err);
  auto quote = file_bytes(dir.path() / "quote.msg");
  quote[quote.size() - 1] ^= 1;
  write_bytes(dir.path() / "quote-tampered.msg", quote);
  auto forged = cove.run({"attestation", "validate", "--mode", "vtpm", "--quote", f("quote-tampered.msg"),
                          "--signature", f("quote.sig"), "--ak-public", f("ak.pub"), "--nonce",
                          crypto::to_hex(nonce), "--pcrs", f("pcrs.json"), "--json"});
  CHECK(forged.code == 1);
  CHECK(json::parse(forged.out).at("valid") == false);
  // Usage: vtpm needs its inputs and refuses SNP ones.
  CHECK(cove.run({"attestation", "validate", "--mode", "vtpm", "--quote", f("quote.msg")}).code == 2);
  CHECK(cove.run(cat(vtpm, {})).code == 2);  // neither --pcrs nor --eventlog
  // --ima-log belongs to --mode vtpm --evidence (the policy's vtpm.ima section).
  auto ima_usage = cove.run(cat(vtpm, {"--pcrs", f("pcrs.json"), "--ima-log", f("pcrs.json")}));
  CHECK(ima_usage.code == 2);
  CHECK(ima_usage.err.find("--ima-log applies to --mode vtpm with --evidence") != std::string::npos);
  CHECK(cove.run(cat(with_pcrs, {"--report", (snp_dir / "genoa-report.bin").string()})).code == 2);

  // snp-vtpm: a (simulated) SEV-SNP report whose REPORT_DATA binds this AK and nonce.
  auto ak = must(attest::parse_tpm_public(file_bytes(dir.path() / "ak.pub")), "ak");
  auto root = must(attest::generate_sim_root(), "sim root");
  auto chip = must(attest::issue_sim_vcek(root), "sim vcek");
  write_file(dir.path() / "sim-chain.pem", root.bundle_pem());
  write_file(dir.path() / "sim-ark.pem", root.ark_pem);
  write_bytes(dir.path() / "sim-vcek.der", chip.vcek_der);
  auto bound =
      must(attest::make_sim_report(chip, attest::snp_vtpm_report_data(ak.name, nonce), {}), "report");
  write_bytes(dir.path() / "bound-report.bin", bound);
  std::vector<std::string> snp_vtpm = {
      "attestation", "validate",        "--mode",      "snp-vtpm",        "--quote", f("quote.msg"),
      "--signature", f("quote.sig"),    "--ak-public", f("ak.pub"),       "--nonce", crypto::to_hex(nonce),
      "--eventlog",  f("eventlog.bin"), "--vcek",      f("sim-vcek.der"), "--chain", f("sim-chain.pem"),
      "--ark",       f("sim-ark.pem")};
  auto both = json::parse(cove.ok(cat(snp_vtpm, {"--report", f("bound-report.bin"), "--json"})));
  CHECK(both.at("valid") == true);
  CHECK(both.at("report").at("report_data") == crypto::to_hex(attest::snp_vtpm_report_data(ak.name, nonce)));
  CHECK(both.at("vtpm").at("ak").at("name") == crypto::to_hex(ak.name));
  CHECK(cove.ok(cat(snp_vtpm, {"--report", f("bound-report.bin")}))
            .find("the SEV-SNP report vouches for the AK") != std::string::npos);
  // A report for another nonce does not vouch for this quote.
  auto stale =
      must(attest::make_sim_report(chip, attest::snp_vtpm_report_data(ak.name, bytes(32, 0)), {}), "report");
  write_bytes(dir.path() / "stale-report.bin", stale);
  auto unbound = cove.run(cat(snp_vtpm, {"--report", f("stale-report.bin")}));
  CHECK(unbound.code == 1);
  CHECK(unbound.err.find("attestation_failed: ak binding: report_data ") != std::string::npos);
  // A real Genoa report verifies as SEV-SNP but vouches for no AK.
  auto ark = dir.path() / "ark-genoa.pem";
  write_ark("genoa", ark);
  auto genoa = cove.run({"attestation", "validate",
                         "--mode",      "snp-vtpm",
                         "--quote",     f("quote.msg"),
                         "--signature", f("quote.sig"),
                         "--ak-public", f("ak.pub"),
                         "--nonce",     crypto::to_hex(nonce),
                         "--pcrs",      f("pcrs.json"),
                         "--report",    (snp_dir / "genoa-report.bin").string(),
                         "--vcek",      (snp_dir / "genoa-vcek.der").string(),
                         "--chain",     (snp_dir / "ask_ark_genoa.pem").string(),
                         "--ark",       ark.string()});
  CHECK(genoa.code == 1);
  CHECK_MESSAGE(genoa.err.find("ak binding: report_data 8100555af0ad8e75") != std::string::npos, genoa.err);
}

TEST_CASE("cove attestation validate --mode dice: a simulated DICE chain against a DICE policy") {
  test::temp_dir dir("cove-dice");
  cove_cli cove(dir.path(), {});
  attest::sim_dice_inputs in;
  in.uds = bytes(32, 0x42);
  in.firmware = {'f', 'w'};
  in.kernel = {'k', 'e', 'r', 'n', 'e', 'l'};
  in.agent = {'a', 'g', 'e', 'n', 't'};
  auto chain = must(attest::make_sim_dice_chain(in), "dice chain");
  write_file(dir.path() / "chain.pem", chain.chain_pem);
  write_file(dir.path() / "root.pem", chain.root_pem);
  auto policy = [&](const bytes& agent_fwid) {
    return R"({"trusted_roots": ["root.pem"], "layers": [{"name": "kernel", "fwids": [")" +
           crypto::to_hex(chain.fwids[1]) + R"("]}, {"name": "agent", "fwids": [")" +
           crypto::to_hex(agent_fwid) + R"("], "min_svn": 1}]})";
  };
  write_file(dir.path() / "policy.json", policy(chain.fwids[2]));
  std::vector<std::string> dice = {"attestation", "validate", "--mode",
                                   "dice",        "--chain",  (dir.path() / "chain.pem").string()};
  auto j = json::parse(cove.ok(cat(dice, {"--policy", (dir.path() / "policy.json").string(), "--json"})));
  CHECK(j.at("valid") == true);
  REQUIRE(j.at("dice").size() == 4);
  CHECK(j.at("dice")[3].at("name") == "agent");
  CHECK(j.at("dice")[3].at("fwids")[0].at("digest") == crypto::to_hex(chain.fwids[2]));
  CHECK(cove.ok(cat(dice, {"--policy", (dir.path() / "policy.json").string()}))
            .find("device -> firmware -> kernel -> agent") != std::string::npos);
  // Another agent binary; another device's chain; no policy.
  write_file(dir.path() / "other-agent.json", policy(chain.fwids[1]));
  auto wrong = cove.run(cat(dice, {"--policy", (dir.path() / "other-agent.json").string()}));
  CHECK(wrong.code == 1);
  CHECK(wrong.err.find("layer 3 (agent) fwid: got ") != std::string::npos);
  in.uds = bytes(32, 0x43);
  auto other = must(attest::make_sim_dice_chain(in), "other device");
  write_file(dir.path() / "other-chain.pem", other.chain_pem);
  auto foreign = cove.run({"attestation", "validate", "--mode", "dice", "--chain",
                           (dir.path() / "other-chain.pem").string(), "--policy",
                           (dir.path() / "policy.json").string()});
  CHECK(foreign.code == 1);
  CHECK(foreign.err.find("root") != std::string::npos);
  CHECK(cove.run(dice).code == 2);
  write_file(dir.path() / "garbage.pem", "not a certificate");
  auto garbage =
      cove.run({"attestation", "validate", "--mode", "dice", "--chain", (dir.path() / "garbage.pem").string(),
                "--policy", (dir.path() / "policy.json").string()});
  CHECK(garbage.code == 1);
  CHECK(garbage.err.find("invalid_request") != std::string::npos);
}

TEST_CASE("cove attestation get saves evidence that attestation validate reads back") {
  cluster c;
  cove_cli cove(c);
  auto id = c.create_cvm();
  auto policy = (c.state_dir() / "sim" / "policy.json").string();
  auto ev_file = c.dir() / "evidence.json";
  bytes nonce(48);
  for (size_t i = 0; i < nonce.size(); ++i) nonce[i] = static_cast<uint8_t>(i * 3);

  auto got = json::parse(
      cove.ok({"attestation", "get", "--mode", "sim", "--cvm", id, "--nonce", crypto::to_hex(nonce), "-o",
               ev_file.string(), "--report", (c.dir() / "report.bin").string(), "--json"}));
  CHECK(got.at("verified") == true);
  CHECK(got.at("kind") == "sim_snp");
  CHECK(got.at("nonce") == crypto::to_hex(nonce));
  auto ev = must(cli::evidence_from_json(read_file(ev_file)), "saved evidence");
  CHECK(ev.nonce == nonce);
  CHECK(ev.cvm_id == id);
  CHECK(file_bytes(c.dir() / "report.bin") == ev.report);

  // Offline, with the host's sim policy: valid, and the key binding is checked.
  auto v = json::parse(
      cove.ok({"attestation", "validate", "--evidence", ev_file.string(), "--policy", policy, "--json"}));
  CHECK(v.at("valid") == true);
  CHECK(v.at("report").at("report_data") ==
        crypto::to_hex(crypto::evidence_report_data(ev.kx_public_key, ev.sign_public_key, nonce)));
  auto swapped = ev;
  swapped.kx_public_key[0] ^= 1;  // another agent key than the report vouches for
  write_file(c.dir() / "swapped.json", cli::evidence_to_json(swapped));
  auto bad = cove.run(
      {"attestation", "validate", "--evidence", (c.dir() / "swapped.json").string(), "--policy", policy});
  CHECK(bad.code == 1);
  CHECK(bad.err.find("report_data: got ") != std::string::npos);
  // Without a policy naming the sim root, nothing is trusted.
  auto ark = c.dir() / "ark-genoa.pem";
  write_ark("genoa", ark);
  auto untrusted =
      cove.run({"attestation", "validate", "--evidence", ev_file.string(), "--ark", ark.string()});
  CHECK(untrusted.code == 1);
  CHECK(untrusted.err.find("cert chain: ARK") != std::string::npos);
  write_file(c.dir() / "truncated.json", read_file(ev_file).substr(0, 40));
  auto trunc = cove.run(
      {"attestation", "validate", "--evidence", (c.dir() / "truncated.json").string(), "--policy", policy});
  CHECK(trunc.code == 1);
  CHECK(trunc.err.find("evidence: not a JSON object") != std::string::npos);

  // Default nonce: 32 random bytes; --no-verify just saves.
  auto plain = cove.ok({"attestation", "get", "--cvm", id, "-o", (c.dir() / "e2.json").string()});
  CHECK(plain.find("evidence verified against the policy") != std::string::npos);
  CHECK(must(cli::evidence_from_json(read_file(c.dir() / "e2.json")), "e2").nonce.size() == 32);
  CHECK(cove.ok({"attestation", "get", "--cvm", id, "--no-verify", "-o", (c.dir() / "e3.json").string()})
            .find("not verified") != std::string::npos);

  // A policy derived from another launch (from-measure on the host's sim policy): the
  // evidence is saved, and get exits 1 naming the measurement.
  auto [measure_args, digest] = vector_args("snp_kernel_cmdline_gf21");
  auto other = c.dir() / "other-launch.json";
  cove.ok(cat(cat({"policy", "from-measure"}, measure_args), {"--base", policy, "-o", other.string()}));
  auto mismatch = cove.run(
      {"attestation", "get", "--cvm", id, "--policy", other.string(), "-o", (c.dir() / "e4.json").string()});
  CHECK(mismatch.code == 1);
  CHECK(mismatch.err.find("does not verify: measurement: got ") != std::string::npos);
  CHECK(mismatch.err.find(digest) != std::string::npos);
  CHECK(must(cli::evidence_from_json(read_file(c.dir() / "e4.json")), "e4").cvm_id == id);

  // Modes this agent (no --vtpm, simulated TEE) cannot serve, and a kind mismatch.
  for (auto [mode, why] :
       {std::pair{"vtpm", "cove: attestation_failed: CVM '" + id +
                              "' sent evidence without a vTPM section (--mode vtpm)"},
        {"snp-vtpm", "cove: attestation_failed: CVM '" + id + "' sent sim_snp evidence, not sev_snp"},
        {"dice", std::string("cove: invalid_request: --mode dice: the policy has no dice section")}}) {
    auto r =
        cove.run({"attestation", "get", "--mode", mode, "--cvm", id, "-o", (c.dir() / "x.json").string()});
    CHECK(r.code == 1);
    INFO(r.err);
    CHECK(r.err.starts_with(why));
  }
  CHECK_FALSE(fs::exists(c.dir() / "x.json"));
  auto hw =
      cove.run({"attestation", "get", "--mode", "snp", "--cvm", id, "-o", (c.dir() / "x.json").string()});
  CHECK(hw.code == 1);
  CHECK(hw.err.find("sent sim_snp evidence, not sev_snp") != std::string::npos);
  auto short_nonce =
      cove.run({"attestation", "get", "--cvm", id, "--nonce", "0102", "-o", (c.dir() / "x.json").string()});
  CHECK(short_nonce.code == 1);
  CHECK(short_nonce.err.find("nonce: 2 bytes") != std::string::npos);
}

TEST_CASE("cove igvm build -> cove measure --igvm equals cove measure --mode snp --ovmf; bad files fail") {
  test::temp_dir dir("cove-igvm");
  cove_cli cove(dir.path(), {});
  struct cs {
    fs::path ovmf;
    std::string vcpus, type, features;
  };
  std::vector<cs> cases = {{measure_dir / "ovmf_AmdSev_suffix.bin", "4", "EPYC-Milan", "0x21"},
                           {measure_dir / "ovmf_OvmfX64_suffix.bin", "2", "EPYC-Genoa", "0x1"}};
  if (fs::exists("/usr/share/ovmf/OVMF.fd"))  // Debian's OVMF carries the SEV metadata too
    cases.push_back({"/usr/share/ovmf/OVMF.fd", "3", "EPYC-v4", "0x1"});
  else
    MESSAGE("no /usr/share/ovmf/OVMF.fd (package ovmf): skipping the full-size firmware case");
  int n = 0;
  for (const auto& c : cases) {
    CAPTURE(c.ovmf);
    auto out = (dir.path() / ("fw" + std::to_string(++n) + ".igvm")).string();
    cove.ok({"igvm", "build", "--ovmf", c.ovmf.string(), "--vcpus", c.vcpus, "--vcpu-type", c.type,
             "--guest-features", c.features, "-o", out});
    auto ovmf_path = cove.ok({"measure", "--mode", "snp", "--ovmf", c.ovmf.string(), "--vcpus", c.vcpus,
                              "--vcpu-type", c.type, "--guest-features", c.features});
    CHECK(cove.ok({"measure", "--igvm", out, "--igvm-native-zero"}) == ovmf_path);
    // QEMU/KVM semantics (the default) measure the metadata's no-data pages as normal
    // zero pages, so the digest differs from the OVMF (-bios) launch.
    auto qemu = cove.ok({"measure", "--igvm", out});
    CHECK(qemu.size() == 97);
    CHECK(qemu != ovmf_path);
    // The same flag set drives policy from-measure.
    auto pol = json::parse(cove.ok({"policy", "from-measure", "--igvm", out}));
    CHECK(pol.at("measurements").at(0).get<std::string>() + "\n" == qemu);
  }
  // policy from-measure carries the file's SNP guest policy (IGVM_VHT_GUEST_POLICY) into
  // allow_debug / allow_migration_agent / allow_smt; a conflicting --guest-policy is refused.
  auto fw1 = (dir.path() / "fw1.igvm").string();  // built with the default policy 0x30000
  auto dflt = json::parse(cove.ok({"policy", "from-measure", "--igvm", fw1}));
  CHECK(dflt.at("allow_debug") == false);
  CHECK(dflt.at("allow_migration_agent") == false);
  CHECK(dflt.at("allow_smt") == true);
  CHECK(cove.ok({"policy", "from-measure", "--igvm", fw1, "--guest-policy", "0x30000"}) ==
        cove.ok({"policy", "from-measure", "--igvm", fw1}));
  auto conflict = cove.run({"policy", "from-measure", "--igvm", fw1, "--guest-policy", "0xb0000"});
  CHECK(conflict.code == 2);
  CHECK_MESSAGE(
      conflict.err.find("--guest-policy 0xb0000 conflicts with the IGVM file's guest policy 0x30000") !=
          std::string::npos,
      conflict.err);
  CHECK(cove.run({"policy", "from-measure", "--igvm", fw1, "--guest-policy", "zz"}).code == 2);
  auto debug_fw = (dir.path() / "debug.igvm").string();
  cove.ok({"igvm", "build", "--ovmf", cases[0].ovmf.string(), "--vcpus", cases[0].vcpus, "--vcpu-type",
           cases[0].type, "--guest-features", cases[0].features, "--policy", "0xa0000", "-o", debug_fw});
  auto dbg = json::parse(cove.ok({"policy", "from-measure", "--igvm", debug_fw}));
  CHECK(dbg.at("allow_debug") == true);
  CHECK(dbg.at("allow_smt") == false);  // bit 16 clear
  CHECK(dbg.at("allow_migration_agent") == false);
  // A base that refuses what the guest policy allows would refuse its own guest.
  write_file(dir.path() / "nodebug.json", R"({"allow_debug": false})");
  auto refused = cove.run(
      {"policy", "from-measure", "--igvm", debug_fw, "--base", (dir.path() / "nodebug.json").string()});
  CHECK(refused.code == 1);
  CHECK_MESSAGE(
      refused.err.find("the base sets allow_debug false, but the guest policy 0xa0000 allows debugging") !=
          std::string::npos,
      refused.err);
  // Without --igvm the flag states the policy.
  auto [measure_args, digest] = vector_args("snp_kernel_cmdline_gf21");
  auto stated =
      json::parse(cove.ok(cat(cat({"policy", "from-measure"}, measure_args), {"--guest-policy", "0x20000"})));
  CHECK(stated.at("allow_smt") == false);
  CHECK(stated.at("measurements").at(0) == digest);

  auto good = read_file(dir.path() / "fw1.igvm");
  auto bad = dir.path() / "bad.igvm";
  write_file(bad, good.substr(0, good.size() - 100));
  auto r = cove.run({"measure", "--igvm", bad.string()});
  CHECK(r.code == 1);
  CHECK(r.err.find("IGVM: offset 0x10: total_file_size") != std::string::npos);
  auto flipped = good;
  flipped[40] = static_cast<char>(flipped[40] ^ 0x40);
  write_file(bad, flipped);
  r = cove.run({"measure", "--igvm", bad.string()});
  CHECK(r.code == 1);
  CHECK(r.err.find("does not match the headers' CRC32") != std::string::npos);
  // Usage errors: OVMF-path flags with --igvm, --igvm-native-zero without --igvm.
  CHECK(cove.run({"measure", "--igvm", bad.string(), "--ovmf", bad.string()}).code == 2);
  CHECK(cove.run({"measure", "--mode", "snp", "--igvm-native-zero"}).code == 2);
  CHECK(cove.run({"measure", "--igvm", bad.string(), "--vmm-type", "ec2"}).code == 2);
  auto zeros = dir.path() / "zeros.fd";
  write_file(zeros, std::string(8192, '\0'));
  r = cove.run({"igvm", "build", "--ovmf", zeros.string(), "--vcpu-type", "EPYC-v4", "-o",
                (dir.path() / "x.igvm").string()});
  CHECK(r.code == 1);
  CHECK(r.err.find("SEV metadata") != std::string::npos);
}

TEST_CASE(
    "cove attestation get --mode dice saves the agent's DICE chain; validate --mode dice reads it back; "
    "--crl") {
  cluster c;
  cove_cli cove(c);
  auto id = c.create_cvm();
  auto tee = must(attest::load_sim_identity(c.state_dir() / "cvms" / id / "tee"), "tee");
  auto measurement = must(attest::sha384_file(bin_dir() / "cove-agent"), "measurement");
  auto dice = must(attest::make_sim_agent_dice_chain(
                       std::span(reinterpret_cast<const uint8_t*>(tee.chip.vcek_key_pem.data()),
                                 tee.chip.vcek_key_pem.size()),
                       measurement),
                   "dice");
  auto dice_policy = [&](const std::string& agent_fwid) {
    return json{{"trusted_roots", {dice.root_pem}},
                {"layers",
                 {{{"name", "firmware"}, {"fwids", {crypto::to_hex(attest::sim_dice_firmware_fwid())}}},
                  {{"name", "kernel"}, {"fwids", {crypto::to_hex(attest::sim_dice_kernel_fwid())}}},
                  {{"name", "agent"}, {"fwids", {agent_fwid}}}}}};
  };
  auto good = c.dir() / "dice-policy.json";
  auto wrong = c.dir() / "dice-wrong.json";
  write_file(good, dice_policy(crypto::to_hex(measurement)).dump());
  write_file(wrong, dice_policy(std::string(96, 'd')).dump());
  auto ev_file = c.dir() / "evidence.json";

  auto got = json::parse(cove.ok({"attestation", "get", "--mode", "dice", "--cvm", id, "--dice-policy",
                                  good.string(), "-o", ev_file.string(), "--json"}));
  CHECK(got.at("verified") == true);
  CHECK(got.at("mode") == "dice");
  CHECK(got.at("dice") == true);
  CHECK(got.at("report").at("measurement") == crypto::to_hex(measurement));
  REQUIRE(got.at("dice_chain").size() == 4);
  CHECK(got.at("dice_chain")[3].at("name") == "agent");
  CHECK(got.at("dice_chain")[3].at("fwids")[0].at("digest") == crypto::to_hex(measurement));
  CHECK(got.at("summary").get<std::string>().find("DICE chain device -> firmware -> kernel -> agent") !=
        std::string::npos);
  auto ev = must(cli::evidence_from_json(read_file(ev_file)), "saved evidence");
  REQUIRE(ev.dice);
  // Same layers as the chain derived here (the certificates' ECDSA signatures differ).
  auto layers = must(attest::parse_dice_chain(ev.dice->chain), "saved chain");
  REQUIRE(layers.size() == 4);
  CHECK(layers[3].fwids.at(0).digest == std::vector<uint8_t>(measurement.begin(), measurement.end()));

  // Read back: DICE only, then DICE and the report together (a policy with a dice section).
  auto v = json::parse(cove.ok({"attestation", "validate", "--mode", "dice", "--evidence", ev_file.string(),
                                "--policy", good.string(), "--json"}));
  CHECK(v.at("valid") == true);
  CHECK(v.at("dice").size() == 4);
  CHECK(v.at("report_data") ==
        crypto::to_hex(crypto::evidence_report_data(ev.kx_public_key, ev.sign_public_key, ev.nonce)));
  CHECK(cove.ok({"attestation", "validate", "--mode", "dice", "--evidence", ev_file.string(), "--policy",
                 good.string()})
            .find("valid: DICE chain of 4 layers (device -> firmware -> kernel -> agent)") !=
        std::string::npos);
  auto full_policy = json::parse(read_file(c.state_dir() / "sim" / "policy.json"));
  full_policy["dice"] = dice_policy(crypto::to_hex(measurement));
  full_policy["dice"]["required"] = true;
  write_file(c.dir() / "full-policy.json", full_policy.dump());
  auto full = json::parse(cove.ok({"attestation", "validate", "--evidence", ev_file.string(), "--policy",
                                   (c.dir() / "full-policy.json").string(), "--json"}));
  CHECK(full.at("valid") == true);
  CHECK(full.at("dice").size() == 4);
  // get with the dice section of --policy (no --dice-policy).
  CHECK(cove.ok({"attestation", "get", "--mode", "dice", "--cvm", id, "--policy",
                 (c.dir() / "full-policy.json").string(), "-o", (c.dir() / "e-full.json").string()})
            .find("DICE chain") != std::string::npos);

  // A wrong agent FWID: get saves and exits 1; validate exits 1; both name the layer.
  auto bad_get = cove.run({"attestation", "get", "--mode", "dice", "--cvm", id, "--dice-policy",
                           wrong.string(), "-o", (c.dir() / "e-wrong.json").string()});
  CHECK(bad_get.code == 1);
  CHECK(bad_get.err.find("does not verify: dice: layer 3 (agent) fwid: got " + crypto::to_hex(measurement)) !=
        std::string::npos);
  CHECK(fs::exists(c.dir() / "e-wrong.json"));
  auto bad = cove.run({"attestation", "validate", "--mode", "dice", "--evidence", ev_file.string(),
                       "--policy", wrong.string()});
  CHECK(bad.code == 1);
  CHECK(bad.err.find("dice: layer 3 (agent) fwid: got ") != std::string::npos);

  // A chain from another session (another nonce's evidence) swapped in: the leaf signed another REPORT_DATA.
  auto other = must(cli::evidence_from_json(read_file(c.dir() / "e-full.json")), "other");
  auto swapped = ev;
  swapped.dice = other.dice;
  write_file(c.dir() / "swapped.json", cli::evidence_to_json(swapped));
  for (const auto& mode : {"dice", "snp"}) {
    auto r = cove.run(
        {"attestation", "validate", "--mode", mode, "--evidence", (c.dir() / "swapped.json").string(),
         "--policy", std::string(mode) == "dice" ? good.string() : (c.dir() / "full-policy.json").string()});
    CHECK(r.code == 1);
    INFO(r.err);
    CHECK(r.err.find("dice.binding: the agent layer's key") != std::string::npos);
  }
  // Another agent key than the report binds: REPORT_DATA is not the nonce construction.
  auto rekeyed = ev;
  rekeyed.kx_public_key[0] ^= 1;
  write_file(c.dir() / "rekeyed.json", cli::evidence_to_json(rekeyed));
  auto rk = cove.run({"attestation", "validate", "--mode", "dice", "--evidence",
                      (c.dir() / "rekeyed.json").string(), "--policy", good.string()});
  CHECK(rk.code == 1);
  CHECK(rk.err.find("report_data: got ") != std::string::npos);

  // Usage: dice needs a DICE policy; vtpm needs a vTPM section; raw flags do not mix with --evidence.
  CHECK(cove.run({"attestation", "validate", "--mode", "dice", "--evidence", ev_file.string()}).code == 2);
  CHECK(cove.run({"attestation", "validate", "--mode", "dice", "--evidence", ev_file.string(), "--policy",
                  good.string(), "--chain", good.string()})
            .code == 2);
  // The raw vTPM flags: refused with --evidence, and by modes without a vTPM part.
  auto raw_nonce = cove.run({"attestation", "validate", "--mode", "vtpm", "--evidence", ev_file.string(),
                             "--policy", good.string(), "--nonce", "00"});
  CHECK(raw_nonce.code == 2);
  CHECK(raw_nonce.err.find("--nonce does not apply with --evidence") != std::string::npos);
  auto raw_tpm_policy = cove.run({"attestation", "validate", "--mode", "dice", "--chain", good.string(),
                                  "--policy", good.string(), "--tpm-policy", good.string()});
  CHECK(raw_tpm_policy.code == 2);
  CHECK(raw_tpm_policy.err.find("--tpm-policy does not apply to --mode dice") != std::string::npos);
  auto no_vtpm = cove.run({"attestation", "validate", "--mode", "vtpm", "--evidence", ev_file.string(),
                           "--policy", (c.dir() / "full-policy.json").string()});
  CHECK(no_vtpm.code == 1);
  CHECK(no_vtpm.err.find("no vTPM section") != std::string::npos);
  CHECK(cove.run({"attestation", "get", "--mode", "sim", "--cvm", id, "--dice-policy", good.string(), "-o",
                  (c.dir() / "x.json").string()})
            .code == 1);

  // Revocation (--crl): CRLs generated here with the host's simulated ARK/ASK keys.
  auto root = must(attest::load_sim_root(c.state_dir() / "sim"), "sim root");
  auto now = std::chrono::system_clock::now();
  auto sim_policy = (c.state_dir() / "sim" / "policy.json").string();
  write_file(c.dir() / "crl-ok.pem", must(attest::make_sim_crl(root, true, {}, now - 1h, now + 24h), "crl"));
  write_file(c.dir() / "crl-revoked.pem",
             must(attest::make_sim_crl(root, true, {tee.chip.vcek_pem}, now - 1h, now + 24h), "crl"));
  write_file(c.dir() / "crl-stale.pem",
             must(attest::make_sim_crl(root, false, {}, now - 48h, now - 24h), "crl"));
  CHECK(cove.ok({"attestation", "validate", "--evidence", ev_file.string(), "--policy", sim_policy, "--crl",
                 (c.dir() / "crl-ok.pem").string()})
            .find("valid: SEV-SNP report") != std::string::npos);
  auto revoked =
      cove.run({"attestation", "validate", "--evidence", ev_file.string(), "--policy", sim_policy, "--crl",
                (c.dir() / "crl-ok.pem").string(), "--crl", (c.dir() / "crl-revoked.pem").string()});
  CHECK(revoked.code == 1);
  CHECK(revoked.err.find("cert chain: VCEK '") != std::string::npos);
  CHECK(revoked.err.find("is revoked (serial 0x") != std::string::npos);
  auto stale = cove.run({"attestation", "validate", "--evidence", ev_file.string(), "--policy", sim_policy,
                         "--crl", (c.dir() / "crl-stale.pem").string()});
  CHECK(stale.code == 1);
  CHECK(stale.err.find("is stale (nextUpdate") != std::string::npos);
  CHECK(cove.run({"attestation", "validate", "--mode", "dice", "--evidence", ev_file.string(), "--policy",
                  good.string(), "--crl", (c.dir() / "crl-ok.pem").string()})
            .code == 2);
}

// AMD KDS collateral fetching, end to end: the real `cove` binary against a local stand-in
// for KDS (kds_server.py, a python http.server on a random port serving the SEV-SNP
// fixtures in the KDS URL layout, with rate limiting, 404s, bad bodies and slowness on
// request). Nothing here talks to AMD.
#include <fmt/format.h>
#include <sys/wait.h>

#include <sstream>

#include "cli_runner.hpp"
#include "cove/attest/collateral.hpp"
#include "cove/attest/snp_report.hpp"
#include "cove/attest/verify.hpp"
#include "fixture.hpp"

using namespace cove;
using namespace cove::itest;
using namespace std::chrono_literals;

namespace {

const fs::path snp_dir = fs::path(COVE_FIXTURES_DIR) / "snp";

/// kds_server.py on a random port; killed (by PID) when destroyed.
class kds_server {
 public:
  kds_server(const fs::path& dir, std::vector<std::string> tls = {}) : dir_(dir) {
    name_ = "kds" + std::to_string(++count_);
    std::vector<std::string> argv = {"/usr/bin/python3", COVE_KDS_SERVER_PY, snp_dir.string()};
    argv.insert(argv.end(), tls.begin(), tls.end());
    proc_ = must(test::child_process::spawn(argv, {}, dir, name_), "kds server");
    REQUIRE_MESSAGE(test::wait_until(
                        [&] {
                          auto out = read_file(dir_ / (name_ + ".stdout"));
                          auto nl = out.find('\n');
                          if (nl == std::string::npos) return false;
                          port_ = out.substr(0, nl);
                          return true;
                        },
                        test::deadline_in(20s)),
                    "the KDS stand-in did not start: " << read_file(dir_ / (name_ + ".stderr")));
  }
  std::string url(const std::string& mode, const std::string& scheme = "http") const {
    return scheme + "://127.0.0.1:" + port_ + "/" + mode;
  }
  /// Requests the server saw whose path contains `part`.
  int requests(const std::string& part = "") const {
    std::stringstream ss(read_file(dir_ / (name_ + ".stdout")));
    std::string line;
    std::getline(ss, line);  // the port
    int n = 0;
    while (std::getline(ss, line))
      if (line.starts_with("GET ") && line.find(part) != std::string::npos) ++n;
    return n;
  }
  void stop() { proc_.kill(); }

 private:
  static inline int count_ = 0;
  fs::path dir_;
  std::string name_, port_;
  test::child_process proc_;
};

std::vector<std::string> cat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

attest::snp_report report_of(const std::string& name) {
  auto text = read_file(snp_dir / (name + "-report.bin"));
  return must(attest::parse_snp_report(std::vector<uint8_t>(text.begin(), text.end())), "report");
}

/// Regular files under `dir` (none when it does not exist).
std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path().string());
  return out;
}

void write_ark(const std::string& product, const fs::path& out) {
  auto bundle = read_file(snp_dir / ("ask_ark_" + product + ".pem"));
  auto ids = must(attest::identify_ask_ark(bundle), "ark");
  auto split = bundle.find("-----END CERTIFICATE-----") + 25;
  auto first = bundle.substr(0, split);
  auto second = bundle.substr(bundle.find("-----BEGIN CERTIFICATE-----", split));
  write_file(out, must(attest::pem_to_der(first), "pem") == ids.ark_der ? first : second);
}

}  // namespace

TEST_CASE("kds: collateral fetch fills the cache; validation then works offline") {
  test::temp_dir dir("cove-kds");
  cove_cli cove(dir.path(), {});
  kds_server kds(dir.path());
  auto cache = dir.path() / "collateral";

  // From a report: chip id, TCB and product derived from it.
  auto out = cove.ok({"collateral", "fetch", "--collateral", cache.string(), "--report",
                      (snp_dir / "genoa-report.bin").string(), "--kds-url", kds.url("ok")});
  CHECK(out.find("filed " + (cache / "vcek/v1/Genoa/d2421d976f95ce0b").string()) == 0);
  CHECK(kds.requests() == 2);
  CHECK(kds.requests("/ok/vcek/v1/Genoa/cert_chain") == 1);
  CHECK(kds.requests("-ucode84.der") == 1);

  // From --product/--chip-id/--tcb (Turin: 8-byte chip id, fmc), in the KDS name form too.
  auto turin = report_of("turin");
  auto tcb = attest::decode_tcb(turin.reported_tcb, attest::snp_product::turin);
  auto chip = attest::to_hex(attest::kds_hwid(turin, attest::snp_product::turin));
  auto spec =
      fmt::format("bl={},tee={},snp={},ucode={},fmc={}", tcb.bl, tcb.tee, tcb.snp, tcb.microcode, tcb.fmc);
  cove.ok({"collateral", "fetch", "--collateral", cache.string(), "--product", "Turin", "--chip-id", chip,
           "--tcb", spec, "--kds-url", kds.url("ok")});
  CHECK(kds.requests() == 4);
  // Already filed: nothing is fetched again.
  cove.ok({"collateral", "fetch", "--collateral", cache.string(), "--product", "Turin", "--chip-id", chip,
           "--tcb",
           fmt::format("bl{}-tee{}-snp{}-ucode{}-fmc{}", tcb.bl, tcb.tee, tcb.snp, tcb.microcode, tcb.fmc),
           "--kds-url", kds.url("ok")});
  CHECK(kds.requests() == 4);

  // Offline: the server is gone, and validation uses the cache without --kds.
  kds.stop();
  for (const std::string product : {"genoa", "turin"}) {
    auto ark = dir.path() / ("ark-" + product + ".pem");
    write_ark(product, ark);
    auto v = cove.ok({"attestation", "validate", "--report", (snp_dir / (product + "-report.bin")).string(),
                      "--ark", ark.string(), "--collateral", cache.string()});
    CHECK(v.find("valid: SEV-SNP report") == 0);
  }

  // Bad flag sets are usage errors.
  CHECK(cove.run({"collateral", "fetch", "--collateral", cache.string(), "--product", "Genoa"}).code == 2);
  auto bad_tcb = cove.run({"collateral", "fetch", "--collateral", cache.string(), "--product", "Genoa",
                           "--chip-id", std::string(128, 'a'), "--tcb", "bl=1,tee=2,snp=3"});
  CHECK(bad_tcb.code == 2);
  CHECK_MESSAGE(bad_tcb.err.find("--tcb: give each of bl, tee, snp, ucode once") != std::string::npos,
                bad_tcb.err);
  CHECK(cove.run({"collateral", "fetch", "--collateral", cache.string(), "--report",
                  (snp_dir / "genoa-report.bin").string(), "--kds-url", "ftp://example.invalid"})
            .code == 1);
}

TEST_CASE("kds: validate --kds fetches what the cache lacks; off by default") {
  test::temp_dir dir("cove-kds-validate");
  cove_cli cove(dir.path(), {});
  kds_server kds(dir.path());
  auto cache = dir.path() / "collateral";
  fs::create_directories(cache);
  auto ark = dir.path() / "ark-genoa.pem";
  write_ark("genoa", ark);
  std::vector<std::string> validate = {
      "attestation", "validate",   "--report",     (snp_dir / "genoa-report.bin").string(),
      "--ark",       ark.string(), "--collateral", cache.string()};

  // Default: the cache only. No request reaches the server, even with its URL given
  // (--kds-url without --kds is a usage error).
  auto offline = cove.run(validate);
  CHECK(offline.code == 1);
  CHECK(offline.err.find("not_found: --collateral: no VCEK for chip d2421d976f95ce0b") != std::string::npos);
  CHECK(cove.run(cat(validate, {"--kds-url", kds.url("ok")})).code == 2);
  CHECK(kds.requests() == 0);

  // Rate limited: two 429s with Retry-After: 1 per file, then the file.
  auto v = cove.ok(cat(validate, {"--kds", "--kds-url", kds.url("429x2")}));
  CHECK(v.find("valid: SEV-SNP report v5 (Genoa)") == 0);
  CHECK(kds.requests("/cert_chain") == 3);
  CHECK(kds.requests(".der") == 3);
  CHECK(files_in(cache).size() == 2);
  // Filed: the next run does not ask.
  cove.ok(cat(validate, {"--kds", "--kds-url", kds.url("429x2")}));
  CHECK(kds.requests() == 6);
}

TEST_CASE("kds: refusals — Retry-After past the deadline, 404, bad bodies, slowness, TLS") {
  test::temp_dir dir("cove-kds-errors");
  cove_cli cove(dir.path(), {});
  kds_server kds(dir.path());
  auto cache = dir.path() / "collateral";
  auto fetch = [&](const std::string& mode, std::vector<std::string> extra = {}) {
    std::vector<std::string> a = {"collateral",   "fetch",      "--collateral",
                                  cache.string(), "--report",   (snp_dir / "genoa-report.bin").string(),
                                  "--kds-url",    kds.url(mode)};
    return cove.run(cat(a, extra));
  };

  // 429 asking for an hour, with a 30 s deadline: one request, then a clear refusal.
  auto limited = fetch("429long", {"--kds-deadline", "30"});
  CHECK(limited.code == 1);
  CHECK_MESSAGE(limited.err.find("the server asks to retry after 3600000 ms") != std::string::npos,
                limited.err);
  CHECK(kds.requests("/429long/") == 1);

  // 503 without Retry-After: backoff (with jitter) and a bounded number of attempts.
  auto unavailable = fetch("503", {"--kds-attempts", "2"});
  CHECK(unavailable.code == 1);
  CHECK_MESSAGE(unavailable.err.find("gave up after 2 attempts (HTTP 503)") != std::string::npos,
                unavailable.err);
  CHECK(kds.requests("/503/") == 2);

  // 404: KDS has no VCEK for this chip at this TCB; permanent, not retried.
  auto genoa = report_of("genoa");
  auto chip = attest::to_hex(attest::kds_hwid(genoa, attest::snp_product::genoa));
  auto missing =
      cove.run({"collateral", "fetch", "--collateral", cache.string(), "--product", "Genoa", "--chip-id",
                chip, "--tcb", "bl=1,tee=0,snp=1,ucode=1", "--kds-url", kds.url("ok")});
  CHECK(missing.code == 1);
  CHECK_MESSAGE(missing.err.find("not_found: KDS has no VCEK for chip " + chip +
                                 " TCB bl=1 tee=0 snp=1 microcode=1") != std::string::npos,
                missing.err);
  CHECK(missing.err.find("answered HTTP 404") != std::string::npos);
  CHECK(kds.requests("/bl1-tee0-snp1-ucode1.der") == 1);

  // A body that is no certificate, a truncated certificate: rejected, nothing filed.
  for (const std::string mode : {"garbage", "truncated"}) {
    auto r = fetch(mode);
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.err.find("rejected, nothing filed") != std::string::npos, mode << ": " << r.err);
  }
  // A Content-Length that is not kept: a transport error, retried, then given up.
  auto shorted = fetch("short", {"--kds-attempts", "2"});
  CHECK(shorted.code == 1);
  CHECK_MESSAGE(shorted.err.find("truncated response: 10 of") != std::string::npos, shorted.err);
  CHECK(kds.requests("/short/") == 2);

  // Slower than --kds-timeout.
  auto slow = fetch("slow", {"--kds-timeout", "1", "--kds-attempts", "1"});
  CHECK(slow.code == 1);
  CHECK_MESSAGE(slow.err.find("timed out after 1 s") != std::string::npos, slow.err);

  // https: a server whose certificate is not in the system CA store is refused before any request.
  auto key = dir.path() / "key.pem", cert = dir.path() / "cert.pem";
  auto openssl = must(test::child_process::spawn({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec",
                                                  "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                                                  key.string(), "-out", cert.string(), "-days", "1", "-subj",
                                                  "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"},
                                                 {}, dir.path(), "openssl"),
                      "openssl");
  auto st = openssl.wait_for_exit(test::deadline_in(30s));
  REQUIRE((st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0));
  kds_server tls(dir.path(), {cert.string(), key.string()});
  auto untrusted = cove.run({"collateral", "fetch", "--collateral", cache.string(), "--report",
                             (snp_dir / "genoa-report.bin").string(), "--kds-url", tls.url("ok", "https")});
  CHECK(untrusted.code == 1);
  CHECK_MESSAGE(untrusted.err.find("crypto_failed:") != std::string::npos, untrusted.err);
  CHECK(untrusted.err.find("does not verify against the system CA store") != std::string::npos);
  CHECK(tls.requests() == 0);
  CHECK(files_in(cache).empty());

  // The same server trusted (OpenSSL's SSL_CERT_FILE replaces the system store): fetched over
  // TLS — but only under the name its certificate carries (IP 127.0.0.1, not "localhost").
  cove_cli trusting(dir.path(), {"SSL_CERT_FILE=" + cert.string()});
  auto tls_cache = dir.path() / "tls-collateral";
  auto wrong_name = trusting.run({"collateral", "fetch", "--collateral", tls_cache.string(), "--report",
                                  (snp_dir / "genoa-report.bin").string(), "--kds-url",
                                  "https://localhost:" + tls.url("ok").substr(tls.url("ok").rfind(':') + 1),
                                  "--kds-attempts", "1"});
  CHECK(wrong_name.code == 1);
  CHECK_MESSAGE(wrong_name.err.find("crypto_failed:") != std::string::npos, wrong_name.err);
  CHECK(tls.requests() == 0);
  trusting.ok({"collateral", "fetch", "--collateral", tls_cache.string(), "--report",
               (snp_dir / "genoa-report.bin").string(), "--kds-url", tls.url("ok", "https")});
  CHECK(tls.requests() == 2);
  CHECK(files_in(tls_cache).size() == 2);
}

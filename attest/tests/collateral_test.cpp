#include "cove/attest/collateral.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <deque>
#include <filesystem>
#include <fstream>

#include "cove/attest/verify.hpp"
#include "test_util.hpp"

using namespace cove::attest;
using cove::errc;
namespace t = cove::attest::test;
namespace fs = std::filesystem;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "cove-collateral-XXXXXX").string();
    path = mkdtemp(tmpl.data());
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

struct fixture {
  const char* name;
  const char* bundle;
  snp_product product;
};
const fixture fixtures[] = {{"milan", "ask_ark_milan.pem", snp_product::milan},
                            {"milan2", "ask_ark_milan.pem", snp_product::milan},
                            {"genoa", "ask_ark_genoa.pem", snp_product::genoa},
                            {"turin", "ask_ark_turin.pem", snp_product::turin}};

snp_report report_of(const std::string& name) {
  auto r = parse_snp_report(t::read_bytes(name + "-report.bin"));
  REQUIRE(r);
  return *r;
}

}  // namespace

TEST_CASE("collateral store: every fixture report finds its VCEK and chain after put") {
  temp_dir d;
  collateral_store store(d.path);
  for (const auto& f : fixtures) {
    CAPTURE(f.name);
    auto rep = report_of(f.name);
    auto put = store.put(t::read_bytes(std::string(f.name) + "-vcek.der"), t::read_text(f.bundle),
                         std::nullopt, &rep);
    if (!put) MESSAGE(put.error().message);
    REQUIRE(put);
    CHECK(put->string().find(std::string("/vcek/v1/") + std::string(kds_product_dir(f.product)) + "/") !=
          std::string::npos);
  }
  for (const auto& f : fixtures) {
    CAPTURE(f.name);
    auto rep = report_of(f.name);
    auto c = store.lookup(rep);
    if (!c) MESSAGE(c.error().message);
    REQUIRE(c);
    CHECK(c->product == f.product);
    CHECK(c->vcek_der == t::read_bytes(std::string(f.name) + "-vcek.der"));
    CHECK_FALSE(c->crl);
    auto v = verify_snp_evidence(t::read_bytes(std::string(f.name) + "-report.bin"), c->vcek_der,
                                 c->chain_pem, t::real_amd_options());
    if (!v) MESSAGE(v.error().message);
    CHECK(v);
  }
}

TEST_CASE("collateral store: layout names follow KDS") {
  auto rep = report_of("turin");
  auto tcb = decode_tcb(rep.reported_tcb, snp_product::turin);
  auto rel = kds_vcek_path(snp_product::turin, kds_hwid(rep, snp_product::turin), tcb);
  CHECK(rel.starts_with("vcek/v1/Turin/3b42092f69c656d3/bl"));
  CHECK(rel.ends_with(fmt::format("-fmc{}.der", tcb.fmc)));
  CHECK(kds_chain_path(snp_product::genoa) == "vcek/v1/Genoa/cert_chain");
  CHECK(kds_crl_path(snp_product::milan) == "vcek/v1/Milan/crl");
  CHECK(kds_hwid(report_of("genoa"), snp_product::genoa).size() == 64);
}

TEST_CASE("collateral store: a missing VCEK names the exact file") {
  temp_dir d;
  collateral_store store(d.path);
  auto rep = report_of("genoa");
  auto c = store.lookup(rep);
  REQUIRE_FALSE(c);
  CHECK(c.error().code == errc::not_found);
  auto want = (d.path / kds_vcek_path(snp_product::genoa, kds_hwid(rep, snp_product::genoa),
                                      decode_tcb(rep.reported_tcb, snp_product::genoa)))
                  .string();
  CHECK(c.error().message.find(want) != std::string::npos);
  CHECK(c.error().message.starts_with("no VCEK for chip " + to_hex(std::span(rep.chip_id).first(8))));
  CHECK(c.error().message.find("bl=") != std::string::npos);

  // A v2 (no CPUID) report names both candidate product paths.
  auto m = store.lookup(report_of("milan"));
  REQUIRE_FALSE(m);
  CHECK(m.error().message.find("/vcek/v1/Milan/") != std::string::npos);
  CHECK(m.error().message.find("/vcek/v1/Genoa/") != std::string::npos);
}

TEST_CASE("collateral store: VCEK present but chain missing names the chain file") {
  temp_dir d;
  collateral_store store(d.path);
  auto rep = report_of("genoa");
  REQUIRE(store.put(t::read_bytes("genoa-vcek.der"), t::read_text("ask_ark_genoa.pem")));
  fs::remove(d.path / kds_chain_path(snp_product::genoa));
  auto c = store.lookup(rep);
  REQUIRE_FALSE(c);
  CHECK(c.error().code == errc::not_found);
  CHECK(c.error().message.find((d.path / "vcek/v1/Genoa/cert_chain").string()) != std::string::npos);
}

TEST_CASE("collateral store: a wrong-product chain fails in verification") {
  temp_dir d;
  collateral_store store(d.path);
  REQUIRE(store.put(t::read_bytes("genoa-vcek.der"), t::read_text("ask_ark_genoa.pem")));
  // Overwrite the Genoa chain with Milan's: the lookup still succeeds, verification must not.
  std::ofstream(d.path / kds_chain_path(snp_product::genoa), std::ios::trunc)
      << t::read_text("ask_ark_milan.pem");
  auto rep = report_of("genoa");
  auto c = store.lookup(rep);
  REQUIRE(c);
  auto v = verify_snp_evidence(t::read_bytes("genoa-report.bin"), c->vcek_der, c->chain_pem,
                               t::real_amd_options());
  REQUIRE_FALSE(v);
  CHECK(v.error().code == errc::attestation_failed);
  CHECK(v.error().message.starts_with("cert chain: "));
}

TEST_CASE("collateral store: put rejects a VCEK that is not the report's, and garbage") {
  temp_dir d;
  collateral_store store(d.path);
  auto rep = report_of("genoa");
  auto r = store.put(t::read_bytes("milan-vcek.der"), t::read_text("ask_ark_milan.pem"), std::nullopt, &rep);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::invalid_request);
  CHECK(r.error().message.starts_with("vcek does not match the report: "));
  std::vector<uint8_t> junk{1, 2, 3};
  auto g = store.put(junk, t::read_text("ask_ark_genoa.pem"));
  REQUIRE_FALSE(g);
  CHECK(g.error().message.starts_with("vcek: "));
  auto b = store.put(t::read_bytes("genoa-vcek.der"), "not a chain");
  REQUIRE_FALSE(b);
  CHECK(b.error().message.starts_with("chain: "));
  CHECK_FALSE(fs::exists(d.path / "vcek"));
}

namespace {

struct fake_provider : collateral_provider {
  std::deque<cove::expected<fetch_response>> answers;
  std::vector<std::string> asked;
  cove::expected<fetch_response> fetch(std::string_view path) override {
    asked.emplace_back(path);
    if (answers.empty()) return fetch_response{404, {}, {}};
    auto a = std::move(answers.front());
    answers.pop_front();
    return a;
  }
};

retry_policy recording(std::vector<std::chrono::milliseconds>& waits, int attempts = 4) {
  retry_policy p;
  p.max_attempts = attempts;
  p.initial_backoff = std::chrono::milliseconds(100);
  p.max_backoff = std::chrono::milliseconds(5000);
  p.sleep = [&waits](std::chrono::milliseconds d) { waits.push_back(d); };
  return p;
}

}  // namespace

TEST_CASE("fetch_with_retries honours Retry-After on 429, backs off exponentially, caps") {
  fake_provider p;
  std::vector<std::chrono::milliseconds> waits;
  p.answers.emplace_back(fetch_response{429, {}, std::chrono::seconds(2)});
  p.answers.emplace_back(fetch_response{503, {}, {}});
  p.answers.emplace_back(fetch_response{429, {}, std::chrono::seconds(600)});
  p.answers.emplace_back(fetch_response{200, "body", {}});
  auto r = fetch_with_retries(p, "vcek/v1/Genoa/cert_chain", recording(waits));
  REQUIRE(r);
  CHECK(r->body == "body");
  using ms = std::chrono::milliseconds;
  CHECK(waits == std::vector<ms>{ms(2000), ms(200), ms(5000)});
  CHECK(p.asked.size() == 4);
}

TEST_CASE("fetch_with_retries gives up, and does not retry 404 or a missing transport") {
  fake_provider p;
  std::vector<std::chrono::milliseconds> waits;
  for (int i = 0; i < 3; ++i) p.answers.emplace_back(fetch_response{429, {}, {}});
  auto r = fetch_with_retries(p, "x", recording(waits, 3));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::unavailable);
  CHECK(r.error().message == "fetch x: gave up after 3 attempts (HTTP 429)");
  CHECK(waits.size() == 2);

  fake_provider q;
  waits.clear();
  auto n = fetch_with_retries(q, "y", recording(waits));
  REQUIRE(n);
  CHECK(n->status == 404);
  CHECK(waits.empty());

  kds_provider kds;
  auto k = fetch_with_retries(kds, "vcek/v1/Genoa/cert_chain", recording(waits));
  REQUIRE_FALSE(k);
  CHECK(k.error().code == errc::unavailable);
  CHECK(k.error().message.find("no HTTP client") != std::string::npos);
  CHECK(waits.empty());
}

TEST_CASE("collateral store: a provider fills the cache; off by default") {
  temp_dir d;
  auto rep = report_of("genoa");
  auto vcek_rel = kds_vcek_path(snp_product::genoa, kds_hwid(rep, snp_product::genoa),
                                decode_tcb(rep.reported_tcb, snp_product::genoa));
  auto p = std::make_shared<fake_provider>();
  auto vcek = t::read_text("genoa-vcek.der");
  p->answers.emplace_back(fetch_response{429, {}, std::chrono::seconds(1)});
  p->answers.emplace_back(fetch_response{200, vcek, {}});
  p->answers.emplace_back(fetch_response{200, t::read_text("ask_ark_genoa.pem"), {}});
  // crl: no answer left -> 404 -> optional, absent.
  collateral_store store(d.path);
  std::vector<std::chrono::milliseconds> waits;
  store.set_provider(p, recording(waits));
  auto c = store.lookup(rep);
  if (!c) MESSAGE(c.error().message);
  REQUIRE(c);
  CHECK(p->asked ==
        std::vector<std::string>{vcek_rel, vcek_rel, "vcek/v1/Genoa/cert_chain", "vcek/v1/Genoa/crl"});
  CHECK(waits.size() == 1);
  CHECK(fs::exists(d.path / vcek_rel));
  // Offline afterwards: a store without a provider finds the filed copies.
  collateral_store offline(d.path);
  CHECK(offline.lookup(rep));
}

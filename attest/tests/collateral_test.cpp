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
  p.jitter = 0;
  p.sleep = [&waits](std::chrono::milliseconds d) { waits.push_back(d); };
  return p;
}

using ms = std::chrono::milliseconds;

}  // namespace

TEST_CASE("fetch_with_retries honours Retry-After on 429, backs off exponentially, caps the backoff") {
  fake_provider p;
  std::vector<ms> waits;
  p.answers.emplace_back(fetch_response{429, {}, std::chrono::seconds(2)});
  p.answers.emplace_back(fetch_response{503, {}, {}});
  p.answers.emplace_back(fetch_response{503, {}, {}});
  p.answers.emplace_back(fetch_response{200, "body", {}});
  auto r = fetch_with_retries(p, "vcek/v1/Genoa/cert_chain", recording(waits));
  REQUIRE(r);
  CHECK(r->body == "body");
  CHECK(waits == std::vector<ms>{ms(2000), ms(200), ms(400)});
  CHECK(p.asked.size() == 4);

  fake_provider q;
  waits.clear();
  for (int i = 0; i < 5; ++i) q.answers.emplace_back(fetch_response{503, {}, {}});
  auto policy = recording(waits, 5);
  policy.max_backoff = ms(250);
  CHECK_FALSE(fetch_with_retries(q, "x", policy));
  CHECK(waits == std::vector<ms>{ms(100), ms(200), ms(250), ms(250)});
}

TEST_CASE("fetch_with_retries: a wait past the deadline gives up at once; backoff has jitter") {
  fake_provider p;
  std::vector<ms> waits;
  p.answers.emplace_back(fetch_response{429, {}, std::chrono::seconds(600)});
  auto policy = recording(waits);
  policy.deadline = ms(60000);
  auto r = fetch_with_retries(p, "x", policy);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::unavailable);
  CHECK(
      r.error().message ==
      "fetch x: gave up after 1 attempt (HTTP 429): the server asks to retry after 600000 ms would pass the "
      "60000 ms deadline");
  CHECK(waits.empty());
  CHECK(p.asked.size() == 1);

  // Backoff waits count against the deadline too: 100 + 200 + 400 > 500.
  fake_provider q;
  for (int i = 0; i < 4; ++i) q.answers.emplace_back(fetch_response{503, {}, {}});
  policy = recording(waits, 10);
  policy.deadline = ms(500);
  auto d = fetch_with_retries(q, "y", policy);
  REQUIRE_FALSE(d);
  CHECK(d.error().message.find("backing off 400 ms would pass the 500 ms deadline") != std::string::npos);
  CHECK(waits == std::vector<ms>{ms(100), ms(200)});

  fake_provider j;
  waits.clear();
  for (int i = 0; i < 7; ++i) j.answers.emplace_back(fetch_response{503, {}, {}});
  policy = recording(waits, 7);
  policy.jitter = 0.5;
  CHECK_FALSE(fetch_with_retries(j, "z", policy));
  REQUIRE(waits.size() == 6);
  ms b(100);
  for (auto w : waits) {
    CHECK(w >= b / 2);
    CHECK(w <= b);
    b = std::min(b * 2, ms(5000));
  }
}

TEST_CASE("fetch_with_retries gives up, and does not retry 404 or permanent errors") {
  fake_provider p;
  std::vector<ms> waits;
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

  fake_provider t;
  t.answers.emplace_back(cove::make_error(errc::crypto_failed, "tls"));
  auto k = fetch_with_retries(t, "z", recording(waits));
  REQUIRE_FALSE(k);
  CHECK(k.error().code == errc::crypto_failed);
  CHECK(waits.empty());
}

TEST_CASE("kds_provider: URLs are checked; a refused connection is a retried transport error") {
  for (const char* bad : {"ftp://kds.example", "http://kdsintf.amd.com?x=1", "https://user@kdsintf.amd.com",
                          "kdsintf.amd.com", "https://"}) {
    kds_options o;
    o.base_url = bad;
    auto k = kds_provider::make(o);
    CHECK_MESSAGE(!k, bad);
    if (!k) CHECK(k.error().code == errc::invalid_request);
  }
  auto def = kds_provider::make();
  REQUIRE(def);
  CHECK((*def)->url_of("vcek/v1/Genoa/cert_chain") == "https://kdsintf.amd.com/vcek/v1/Genoa/cert_chain");
  kds_options o;
  o.base_url = "http://127.0.0.1:1/mirror/";  // nothing listens on port 1
  // OpenSSL 3.0's OSSL_HTTP_open retries a refused connect until the request timeout
  // (BIO_do_connect_retry), so a refused connection costs the whole timeout: keep it short.
  o.timeout = std::chrono::seconds(1);
  auto k = kds_provider::make(o);
  REQUIRE(k);
  CHECK((*k)->url_of("a") == "http://127.0.0.1:1/mirror/a");
  std::vector<ms> waits;
  auto r = fetch_with_retries(**k, "vcek/v1/Genoa/cert_chain", recording(waits, 2));
  REQUIRE_FALSE(r);
  CHECK((r.error().code == errc::unavailable || r.error().code == errc::timeout));
  CHECK(r.error().message.find("http://127.0.0.1:1/mirror/vcek/v1/Genoa/cert_chain") != std::string::npos);
  CHECK(waits.size() == 1);
}

TEST_CASE("parse_http_response: status, Retry-After, Content-Length, refusals") {
  auto ok = parse_http_response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", 100);
  REQUIRE(ok);
  CHECK(ok->status == 200);
  CHECK(ok->body == "abc");
  auto limited = parse_http_response("HTTP/1.0 429 Too Many Requests\r\nretry-after:  7 \r\n\r\n", 100);
  REQUIRE(limited);
  CHECK(limited->status == 429);
  CHECK(limited->retry_after == std::chrono::seconds(7));
  auto date =
      parse_http_response("HTTP/1.1 503 x\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n", 100);
  REQUIRE(date);
  CHECK_FALSE(date->retry_after);
  auto eof = parse_http_response("HTTP/1.0 200\r\n\r\nbody to the end", 100);
  REQUIRE(eof);
  CHECK(eof->body == "body to the end");

  auto code = [](std::string_view raw, std::size_t cap = 100) {
    auto r = parse_http_response(raw, cap);
    return r ? errc::none : r.error().code;
  };
  CHECK(code("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc") == errc::unavailable);  // truncated
  CHECK(code("HTTP/1.1 200 OK\r\nContent-Length: 3") == errc::unavailable);              // no blank line
  CHECK(code("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n") == errc::too_large);
  CHECK(code("HTTP/1.1 200 OK\r\n\r\n0123456789", 5) == errc::too_large);
  CHECK(code("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n") ==
        errc::invalid_request);
  CHECK(code("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab") == errc::invalid_request);
  CHECK(code("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n") == errc::invalid_request);
  CHECK(code("HTTP/2 200\r\n\r\n") == errc::invalid_request);
  CHECK(code("HTTP/1.1 2x0 OK\r\n\r\n") == errc::invalid_request);
  CHECK(code("HTTP/1.1 200 OK\r\nno colon\r\n\r\n") == errc::invalid_request);
  CHECK(code("<html>\r\n\r\n") == errc::invalid_request);
  CHECK(code(std::string(70000, 'a')) == errc::invalid_request);
}

TEST_CASE("collateral store: a provider fills the cache, validated first; off by default") {
  temp_dir d;
  auto rep = report_of("genoa");
  auto hwid = kds_hwid(rep, snp_product::genoa);
  auto tcb = decode_tcb(rep.reported_tcb, snp_product::genoa);
  auto vcek_rel = kds_vcek_path(snp_product::genoa, hwid, tcb);
  const std::string chain_rel = "vcek/v1/Genoa/cert_chain";
  auto vcek = t::read_text("genoa-vcek.der");
  auto chain = t::read_text("ask_ark_genoa.pem");
  std::vector<ms> waits;

  // Garbage, a certificate of another chip, a chain that did not sign the VCEK: rejected
  // before anything is written.
  struct bad_case {
    std::string vcek, chain, message;
  };
  for (const auto& b :
       {bad_case{"<html>not a certificate</html>", chain, "VCEK: VCEK is not a DER certificate"},
        bad_case{vcek.substr(0, vcek.size() / 2), chain, "VCEK: VCEK is not a DER certificate"},
        bad_case{t::read_text("milan-vcek.der"), chain, "VCEK: product 'Milan-B0', asked for Genoa"},
        bad_case{vcek, t::read_text("ask_ark_milan.pem"), "rejected, nothing filed"},
        bad_case{vcek, "garbage", "cert_chain: "}}) {
    auto p = std::make_shared<fake_provider>();
    p->answers.emplace_back(fetch_response{200, b.chain, {}});
    p->answers.emplace_back(fetch_response{200, b.vcek, {}});
    collateral_store store(d.path);
    store.set_provider(p, recording(waits));
    auto c = store.lookup(rep);
    REQUIRE_FALSE(c);
    CHECK(c.error().code == errc::invalid_request);
    CHECK_MESSAGE(c.error().message.find(b.message) != std::string::npos, c.error().message);
    CHECK(c.error().message.find("rejected, nothing filed") != std::string::npos);
    CHECK(fs::is_empty(d.path));
  }

  // 404: a clear, permanent "KDS has no VCEK".
  {
    auto p = std::make_shared<fake_provider>();
    p->answers.emplace_back(fetch_response{200, chain, {}});
    collateral_store store(d.path);
    store.set_provider(p, recording(waits));
    auto c = store.lookup(rep);
    REQUIRE_FALSE(c);
    CHECK(c.error().code == errc::not_found);
    CHECK(c.error().message.starts_with("KDS has no VCEK for chip " + to_hex(hwid) + " TCB " +
                                        to_string(tcb, snp_product::genoa) + " (" + vcek_rel +
                                        " answered HTTP 404)"));
    CHECK(fs::is_empty(d.path));
  }

  auto p = std::make_shared<fake_provider>();
  p->answers.emplace_back(fetch_response{200, chain, {}});
  p->answers.emplace_back(fetch_response{429, {}, std::chrono::seconds(1)});
  p->answers.emplace_back(fetch_response{200, vcek, {}});
  collateral_store store(d.path);
  waits.clear();
  store.set_provider(p, recording(waits));
  auto c = store.lookup(rep);
  if (!c) MESSAGE(c.error().message);
  REQUIRE(c);
  CHECK(p->asked == std::vector<std::string>{chain_rel, vcek_rel, vcek_rel});  // the CRL is never fetched
  CHECK(waits == std::vector<ms>{ms(1000)});
  CHECK(fs::exists(d.path / vcek_rel));
  CHECK(fs::exists(d.path / chain_rel));
  // Offline afterwards: a store without a provider finds the filed copies; with one, it
  // asks nothing more.
  collateral_store offline(d.path);
  CHECK(offline.lookup(rep));
  CHECK(store.lookup(rep));
  CHECK(p->asked.size() == 3);
}

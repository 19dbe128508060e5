#include "cove/attest/collateral.hpp"

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <system_error>
#include <thread>

#include "cove/attest/verify.hpp"

namespace cove::attest {

namespace fs = std::filesystem;

std::string_view kds_product_dir(snp_product p) noexcept {
  return p == snp_product::unknown ? std::string_view() : to_string(p);
}

std::span<const uint8_t> kds_hwid(const snp_report& r, snp_product p) noexcept {
  return std::span<const uint8_t>(r.chip_id).first(p == snp_product::turin ? 8 : 64);
}

std::string kds_chain_path(snp_product p) {
  return fmt::format("vcek/v1/{}/cert_chain", kds_product_dir(p));
}
std::string kds_crl_path(snp_product p) {
  return fmt::format("vcek/v1/{}/crl", kds_product_dir(p));
}
std::string kds_vcek_path(snp_product p, std::span<const uint8_t> hwid, const tcb_version& tcb) {
  auto name = fmt::format("bl{}-tee{}-snp{}-ucode{}", tcb.bl, tcb.tee, tcb.snp, tcb.microcode);
  if (p == snp_product::turin) name += fmt::format("-fmc{}", tcb.fmc);
  return fmt::format("vcek/v1/{}/{}/{}.der", kds_product_dir(p), to_hex(hwid), name);
}

expected<fetch_response> fetch_with_retries(collateral_provider& p, std::string_view path,
                                            const retry_policy& policy) {
  using ms = std::chrono::milliseconds;
  auto sleep = policy.sleep ? policy.sleep : [](ms d) { std::this_thread::sleep_for(d); };
  std::mt19937_64 rng{std::random_device{}()};
  auto backoff = policy.initial_backoff;
  std::string last;
  const int attempts = std::max(1, policy.max_attempts);
  ms spent{0};  // fetching plus waiting (waits counted as asked, so recorded sleeps count too)
  for (int i = 1; i <= attempts; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = p.fetch(path);
    spent += std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - t0);
    std::optional<ms> retry_after;
    if (!r) {
      if (r.error().code != errc::unavailable && r.error().code != errc::timeout) return r;
      last = r.error().message;
    } else if (r->status == 429 || r->status == 503) {
      last = fmt::format("HTTP {}", r->status);
      if (r->retry_after) retry_after = std::chrono::duration_cast<ms>(*r->retry_after);
    } else {
      return r;
    }
    if (i == attempts) break;
    ms wait = backoff;
    if (retry_after) {
      wait = *retry_after;
    } else if (policy.jitter > 0) {
      const double j = std::clamp(policy.jitter, 0.0, 1.0);
      std::uniform_real_distribution<double> u(1.0 - j, 1.0);
      wait = ms(static_cast<ms::rep>(static_cast<double>(backoff.count()) * u(rng)));
    }
    if (spent + wait > policy.deadline)
      return make_error(
          errc::unavailable,
          fmt::format("fetch {}: gave up after {} attempt{} ({}): {} {} ms would pass the {} ms deadline",
                      p.url_of(path), i, i == 1 ? "" : "s", last,
                      retry_after ? "the server asks to retry after" : "backing off", wait.count(),
                      policy.deadline.count()));
    sleep(wait);
    spent += wait;
    backoff = std::min(backoff * 2, policy.max_backoff);
  }
  return make_error(errc::unavailable,
                    fmt::format("fetch {}: gave up after {} attempts ({})", p.url_of(path), attempts, last));
}

void collateral_store::set_provider(std::shared_ptr<collateral_provider> p, retry_policy policy) {
  provider_ = std::move(p);
  retry_ = std::move(policy);
}

namespace {

std::optional<std::string> read_whole(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return std::nullopt;
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

expected<void> write_whole(const fs::path& p, std::string_view data) {
  std::error_code ec;
  fs::create_directories(p.parent_path(), ec);
  if (ec) return make_error(errc::internal, fmt::format("{}: {}", p.parent_path().string(), ec.message()));
  static std::atomic<unsigned> seq{0};
  auto tmp = p;
  tmp += fmt::format(".tmp.{}.{}", ::getpid(), seq++);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) {
      fs::remove(tmp, ec);
      return make_error(errc::internal, fmt::format("{}: cannot write", tmp.string()));
    }
  }
  fs::rename(tmp, p, ec);
  if (ec) {
    auto msg = fmt::format("{}: {}", p.string(), ec.message());
    fs::remove(tmp, ec);
    return make_error(errc::internal, msg);
  }
  return {};
}

}  // namespace

expected<std::string> collateral_store::download(const std::string& rel,
                                                 const std::string& what_missing) const {
  auto r = fetch_with_retries(*provider_, rel, retry_);
  if (!r) return std::move(r).error();
  if (r->status == 200) return std::move(r->body);
  if (r->status == 404)
    return make_error(errc::not_found,
                      fmt::format("{} ({} answered HTTP 404)", what_missing, provider_->url_of(rel)));
  return make_error(errc::unavailable, fmt::format("{} answered HTTP {}", provider_->url_of(rel), r->status));
}

namespace {

/// `rel`'s VCEK (DER, or PEM as filed by hand) as DER.
expected<std::vector<uint8_t>> vcek_der_of(const std::string& text, const fs::path& file) {
  if (text.find("-----BEGIN") == std::string::npos) return std::vector<uint8_t>(text.begin(), text.end());
  auto der = pem_to_der(text);
  if (!der)
    return make_error(errc::invalid_request, fmt::format("{}: {}", file.string(), der.error().message));
  return der;
}

/// A fetched VCEK must be the one asked for, and ARK -> ASK -> VCEK must verify.
expected<void> check_fetched(snp_product p, std::span<const uint8_t> hwid, const tcb_version& tcb,
                             std::span<const uint8_t> vcek, const std::string& chain_pem) {
  auto info = parse_vcek_extensions(vcek);
  if (!info) return make_error(errc::invalid_request, "VCEK: " + info.error().message);
  if (product_from_name(info->product_name) != p)
    return make_error(errc::invalid_request, fmt::format("VCEK: product '{}', asked for {}",
                                                         info->product_name, kds_product_dir(p)));
  if (!info->hwid || !std::ranges::equal(*info->hwid, hwid))
    return make_error(errc::invalid_request, "VCEK: its hwID is not the chip asked for");
  const tcb_version got{info->bl.value_or(0), info->tee.value_or(0), info->snp.value_or(0),
                        info->microcode.value_or(0), info->fmc.value_or(0)};
  if (!info->bl || !info->tee || !info->snp || !info->microcode || (p == snp_product::turin && !info->fmc) ||
      got.bl != tcb.bl || got.tee != tcb.tee || got.snp != tcb.snp || got.microcode != tcb.microcode ||
      (p == snp_product::turin && got.fmc != tcb.fmc))
    return make_error(errc::invalid_request,
                      fmt::format("VCEK: its TCB is {}, asked for {}", to_string(got, p), to_string(tcb, p)));
  auto ids = identify_ask_ark(chain_pem);
  if (!ids) return make_error(errc::invalid_request, "cert_chain: " + ids.error().message);
  verify_options o;
  o.trusted_ark_pems = {chain_pem};  // structure only; the policy's roots decide trust later
  if (auto v = verify_cert_chain(vcek, ids->ask_der, ids->ark_der, o); !v)
    return make_error(errc::invalid_request, v.error().message);
  return {};
}

}  // namespace

expected<snp_collateral> collateral_store::fetch(snp_product p, std::span<const uint8_t> hwid,
                                                 const tcb_version& tcb) const {
  if (kds_product_dir(p).empty())
    return make_error(errc::invalid_request, "collateral: the product must be Milan, Genoa or Turin");
  if (hwid.size() != (p == snp_product::turin ? 8u : 64u))
    return make_error(errc::invalid_request,
                      fmt::format("collateral: a {} chip id is {} bytes, got {}", kds_product_dir(p),
                                  p == snp_product::turin ? 8 : 64, hwid.size()));
  const auto vcek_rel = kds_vcek_path(p, hwid, tcb);
  const auto chain_rel = kds_chain_path(p);
  snp_collateral c;
  c.product = p;
  c.vcek_file = dir_ / vcek_rel;
  auto vcek_text = read_whole(c.vcek_file);
  auto chain_text = read_whole(dir_ / chain_rel);
  const bool fetch_vcek = !vcek_text && provider_;
  const bool fetch_chain = !chain_text && provider_;
  auto short_id = to_hex(hwid.first(std::min<std::size_t>(hwid.size(), 8)));
  if (!vcek_text && !provider_)
    return make_error(errc::not_found, fmt::format("no VCEK for chip {}… TCB {} in {}: expected {}", short_id,
                                                   to_string(tcb, p), dir_.string(), c.vcek_file.string()));
  if (fetch_chain) {
    auto body = download(chain_rel, fmt::format("KDS has no ASK/ARK chain for {}", kds_product_dir(p)));
    if (!body) return std::move(body).error();
    chain_text = std::move(*body);
  }
  if (!chain_text)
    return make_error(errc::not_found,
                      fmt::format("no ASK/ARK chain for {} in {}: expected {}", kds_product_dir(p),
                                  dir_.string(), (dir_ / chain_rel).string()));
  if (fetch_vcek) {
    auto body = download(vcek_rel,
                         fmt::format("KDS has no VCEK for chip {} TCB {}", to_hex(hwid), to_string(tcb, p)));
    if (!body) return std::move(body).error();
    vcek_text = std::move(*body);
    if (vcek_text->find("-----BEGIN") != std::string::npos)  // KDS serves DER
      return make_error(errc::invalid_request, fmt::format("{}: rejected, nothing filed: VCEK: not DER",
                                                           provider_->url_of(vcek_rel)));
  }
  auto der = vcek_der_of(*vcek_text, c.vcek_file);
  if (!der) return std::move(der).error();
  c.vcek_der = std::move(*der);
  c.chain_pem = std::move(*chain_text);
  if (fetch_vcek || fetch_chain) {
    if (auto ok = check_fetched(p, hwid, tcb, c.vcek_der, c.chain_pem); !ok)
      return make_error(ok.error().code, fmt::format("{}: rejected, nothing filed: {}",
                                                     provider_->url_of(fetch_vcek ? vcek_rel : chain_rel),
                                                     ok.error().message));
    if (fetch_chain)
      if (auto w = write_whole(dir_ / chain_rel, c.chain_pem); !w) return w.error();
    if (fetch_vcek)
      if (auto w = write_whole(c.vcek_file, *vcek_text); !w) return w.error();
  }
  if (auto crl = read_whole(dir_ / kds_crl_path(p))) c.crl = std::move(*crl);
  return c;
}

expected<snp_collateral> collateral_store::lookup(const snp_report& report) const {
  std::vector<snp_product> candidates;
  if (report.product != snp_product::unknown)
    candidates = {report.product};
  else
    candidates = {snp_product::milan, snp_product::genoa};  // pre-v3: no CPUID; same TCB layout
  std::vector<std::string> misses;
  for (auto p : candidates) {
    auto tcb = decode_tcb(report.reported_tcb, p);
    auto c = fetch(p, kds_hwid(report, p), tcb);
    if (c) return c;
    if (c.error().code != errc::not_found || candidates.size() == 1) return std::move(c).error();
    misses.push_back(std::move(c.error().message));
  }
  return make_error(errc::not_found, fmt::format("{}", fmt::join(misses, "; ")));
}

expected<fs::path> collateral_store::put(std::span<const uint8_t> vcek, std::string_view chain_pem,
                                         std::optional<std::string_view> crl,
                                         const snp_report* report) const {
  std::vector<uint8_t> der(vcek.begin(), vcek.end());
  std::string_view text(reinterpret_cast<const char*>(vcek.data()), vcek.size());
  if (text.find("-----BEGIN") != std::string_view::npos) {
    auto d = pem_to_der(text);
    if (!d) return make_error(errc::invalid_request, "vcek: " + d.error().message);
    der = std::move(*d);
  }
  auto info = parse_vcek_extensions(der);
  if (!info) return make_error(errc::invalid_request, "vcek: " + info.error().message);
  auto p = product_from_name(info->product_name);
  if (p == snp_product::unknown)
    return make_error(errc::invalid_request,
                      fmt::format("vcek: product '{}' is not Milan, Genoa or Turin", info->product_name));
  if (!info->hwid || !info->bl || !info->tee || !info->snp || !info->microcode ||
      (p == snp_product::turin && !info->fmc))
    return make_error(errc::invalid_request, "vcek: missing the hwID or TCB (SPL) extensions");
  auto ids = identify_ask_ark(chain_pem);
  if (!ids) return make_error(errc::invalid_request, "chain: " + ids.error().message);
  if (report != nullptr) {
    auto r = *report;
    if (auto b = check_vcek_binding(r, *info); !b)
      return make_error(errc::invalid_request, "vcek does not match the report: " + b.error().message);
  }
  tcb_version tcb{*info->bl, *info->tee, *info->snp, *info->microcode, info->fmc.value_or(0)};
  auto rel = kds_vcek_path(p, *info->hwid, tcb);
  auto path = dir_ / rel;
  if (auto w = write_whole(path, std::string_view(reinterpret_cast<const char*>(der.data()), der.size())); !w)
    return w.error();
  if (auto w = write_whole(dir_ / kds_chain_path(p), chain_pem); !w) return w.error();
  if (crl)
    if (auto w = write_whole(dir_ / kds_crl_path(p), *crl); !w) return w.error();
  return path;
}

}  // namespace cove::attest

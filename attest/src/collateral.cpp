#include "cove/attest/collateral.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <iterator>
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

expected<fetch_response> kds_provider::fetch(std::string_view path) {
  return make_error(errc::unavailable,
                    fmt::format("kds: cannot fetch {}/{}: this build has no HTTP client; seed the collateral "
                                "directory with 'cove collateral put'",
                                base_, path));
}

expected<fetch_response> fetch_with_retries(collateral_provider& p, std::string_view path,
                                            const retry_policy& policy) {
  auto sleep =
      policy.sleep ? policy.sleep : [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); };
  auto backoff = policy.initial_backoff;
  std::string last;
  const int attempts = std::max(1, policy.max_attempts);
  for (int i = 1; i <= attempts; ++i) {
    auto r = p.fetch(path);
    std::optional<std::chrono::milliseconds> wait;
    if (!r) {
      if (r.error().code == errc::unavailable) return r;  // no transport at all: retrying cannot help
      last = r.error().message;
    } else if (r->status == 429 || r->status == 503) {
      last = fmt::format("HTTP {}", r->status);
      if (r->retry_after) wait = std::chrono::duration_cast<std::chrono::milliseconds>(*r->retry_after);
    } else {
      return r;
    }
    if (i == attempts) break;
    auto d = std::min(wait.value_or(backoff), policy.max_backoff);
    sleep(d);
    backoff = std::min(backoff * 2, policy.max_backoff);
  }
  return make_error(errc::unavailable,
                    fmt::format("fetch {}: gave up after {} attempts ({})", path, attempts, last));
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
  auto tmp = p;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out) return make_error(errc::internal, fmt::format("{}: cannot write", tmp.string()));
  }
  fs::rename(tmp, p, ec);
  if (ec) return make_error(errc::internal, fmt::format("{}: {}", p.string(), ec.message()));
  return {};
}

}  // namespace

expected<std::string> collateral_store::get(const std::string& rel) const {
  auto path = dir_ / rel;
  if (auto s = read_whole(path)) return std::move(*s);
  if (provider_) {
    auto r = fetch_with_retries(*provider_, rel, retry_);
    if (!r) return make_error(r.error().code, fmt::format("{}: {}", path.string(), r.error().message));
    if (r->status == 200) {
      if (auto w = write_whole(path, r->body); !w) return w.error();
      return std::move(r->body);
    }
    if (r->status != 404)
      return make_error(errc::unavailable,
                        fmt::format("{}: fetch answered HTTP {}", path.string(), r->status));
  }
  return make_error(errc::not_found, path.string());
}

expected<snp_collateral> collateral_store::lookup(const snp_report& report) const {
  std::vector<snp_product> candidates;
  if (report.product != snp_product::unknown)
    candidates = {report.product};
  else
    candidates = {snp_product::milan, snp_product::genoa};  // pre-v3: no CPUID; same TCB layout
  std::vector<std::string> expected_paths;
  for (auto p : candidates) {
    auto tcb = decode_tcb(report.reported_tcb, p);
    auto rel = kds_vcek_path(p, kds_hwid(report, p), tcb);
    auto vcek = get(rel);
    if (!vcek) {
      if (vcek.error().code != errc::not_found) return vcek.error();
      expected_paths.push_back((dir_ / rel).string());
      continue;
    }
    snp_collateral c;
    c.product = p;
    c.vcek_file = dir_ / rel;
    c.vcek_der.assign(vcek->begin(), vcek->end());
    if (vcek->find("-----BEGIN") != std::string::npos) {
      auto der = pem_to_der(*vcek);
      if (!der)
        return make_error(errc::invalid_request,
                          fmt::format("{}: {}", c.vcek_file.string(), der.error().message));
      c.vcek_der = std::move(*der);
    }
    auto chain = get(kds_chain_path(p));
    if (!chain) {
      if (chain.error().code != errc::not_found) return chain.error();
      return make_error(errc::not_found,
                        fmt::format("no ASK/ARK chain for {} in {}: expected {}", kds_product_dir(p),
                                    dir_.string(), chain.error().message));
    }
    c.chain_pem = std::move(*chain);
    if (auto crl = get(kds_crl_path(p)))
      c.crl = std::move(*crl);
    else if (crl.error().code != errc::not_found)
      return crl.error();
    return c;
  }
  auto p0 = candidates.front();
  return make_error(errc::not_found, fmt::format("no VCEK for chip {}… TCB {} in {}: expected {}",
                                                 to_hex(std::span(report.chip_id).first(8)),
                                                 to_string(decode_tcb(report.reported_tcb, p0), p0),
                                                 dir_.string(), fmt::join(expected_paths, " or ")));
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

#include "cove/attest/chain_cache.hpp"

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <algorithm>
#include <ctime>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <string>

#include "ossl.hpp"

namespace cove::attest {

namespace {

struct entry {
  ossl::x509 vcek;
  vcek_info info;
  std::time_t not_before = 0;  // latest notBefore of ARK, ASK, VCEK
  std::time_t not_after = 0;   // earliest notAfter
};

std::string cache_key(std::span<const uint8_t> vcek_der, std::string_view bundle,
                      const verify_options& opts) {
  ossl::evp_md_ctx ctx{EVP_MD_CTX_new()};
  auto add = [&](const void* p, std::size_t n) {
    uint64_t len = n;
    EVP_DigestUpdate(ctx.get(), &len, sizeof len);
    EVP_DigestUpdate(ctx.get(), p, n);
  };
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  add(vcek_der.data(), vcek_der.size());
  add(bundle.data(), bundle.size());
  for (const auto& r : opts.trusted_ark_pems) add(r.data(), r.size());
  add("crls", 4);
  for (const auto& c : opts.crls) add(c.data(), c.size());
  std::string out(32, '\0');
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &n);
  return out;
}

bool to_time(const ASN1_TIME* t, std::time_t& out) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return false;
  out = timegm(&tm);
  return true;
}

}  // namespace

struct snp_chain_cache::impl {
  std::size_t capacity;
  mutable std::mutex mu;
  std::map<std::string, std::shared_ptr<const entry>> entries;
  std::deque<std::string> order;  // insertion order, for eviction
  uint64_t hits = 0, misses = 0;
};

snp_chain_cache::snp_chain_cache(std::size_t capacity) : impl_(std::make_unique<impl>()) {
  impl_->capacity = std::max<std::size_t>(1, capacity);
}
snp_chain_cache::~snp_chain_cache() = default;

expected<snp_report> snp_chain_cache::verify(std::span<const uint8_t> report,
                                             std::span<const uint8_t> vcek_der, std::string_view bundle,
                                             const verify_options& opts) {
  auto fail = [](std::string_view step, const error& e) {
    return make_error(errc::attestation_failed, std::string(step) + ": " + e.message);
  };
  auto parsed = parse_snp_report(report);
  if (!parsed) return fail("report", parsed.error());
  if (parsed->signing_key() != 0)
    return make_error(errc::attestation_failed, "report: not signed by a VCEK (SIGNING_KEY=" +
                                                    std::to_string(parsed->signing_key()) + ")");
  const std::time_t now =
      std::chrono::system_clock::to_time_t(opts.now.value_or(std::chrono::system_clock::now()));
  auto key = cache_key(vcek_der, bundle, opts);
  std::shared_ptr<const entry> e;
  {
    std::lock_guard lock(impl_->mu);
    if (auto it = impl_->entries.find(key);
        it != impl_->entries.end() && now >= it->second->not_before && now <= it->second->not_after) {
      e = it->second;
      ++impl_->hits;
    } else {
      ++impl_->misses;
    }
  }
  if (!e) {
    if (auto r = verify_cert_chain(vcek_der, bundle, opts); !r) return fail("cert chain", r.error());
    auto fresh = std::make_shared<entry>();
    fresh->vcek = ossl::parse_der(vcek_der);
    if (!fresh->vcek)
      return fail("cert chain", make_error(errc::attestation_failed, "VCEK is not a DER certificate"));
    auto info = parse_vcek_extensions(vcek_der);
    if (!info) return fail("vcek binding", info.error());
    fresh->info = std::move(*info);
    auto chain = identify_ask_ark(bundle);
    if (!chain) return fail("cert chain", chain.error());
    fresh->not_before = 0;
    fresh->not_after = std::numeric_limits<std::time_t>::max();
    bool windows_ok = true;
    for (std::span<const uint8_t> der :
         {vcek_der, std::span<const uint8_t>(chain->ask_der), std::span<const uint8_t>(chain->ark_der)}) {
      auto c = ossl::parse_der(der);
      std::time_t nb = 0, na = 0;
      if (!c || !to_time(X509_get0_notBefore(c.get()), nb) || !to_time(X509_get0_notAfter(c.get()), na)) {
        windows_ok = false;
        break;
      }
      fresh->not_before = std::max(fresh->not_before, nb);
      fresh->not_after = std::min(fresh->not_after, na);
    }
    e = fresh;
    // A chain checked against CRLs is not cached: a CRL goes stale (nextUpdate) on its own clock.
    if (windows_ok && opts.crls.empty()) {
      std::lock_guard lock(impl_->mu);
      if (impl_->entries.emplace(key, e).second) {
        impl_->order.push_back(key);
        while (impl_->entries.size() > impl_->capacity) {
          impl_->entries.erase(impl_->order.front());
          impl_->order.pop_front();
        }
      }
    }
  }
  if (auto r = verify_snp_signature(*parsed, e->vcek.get()); !r) return fail("signature", r.error());
  if (auto r = check_vcek_binding(*parsed, e->info); !r) return fail("vcek binding", r.error());
  return parsed;
}

std::size_t snp_chain_cache::size() const {
  std::lock_guard lock(impl_->mu);
  return impl_->entries.size();
}
uint64_t snp_chain_cache::hits() const {
  std::lock_guard lock(impl_->mu);
  return impl_->hits;
}
uint64_t snp_chain_cache::misses() const {
  std::lock_guard lock(impl_->mu);
  return impl_->misses;
}
void snp_chain_cache::clear() {
  std::lock_guard lock(impl_->mu);
  impl_->entries.clear();
  impl_->order.clear();
}

}  // namespace cove::attest

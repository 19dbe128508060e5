#pragma once
// SEV-SNP collateral (VCEK, ASK+ARK chain, CRL) from an offline-first cache directory laid
// out like AMD KDS URLs, with an optional pluggable fetcher (off by default):
//
//   DIR/vcek/v1/<Product>/cert_chain                         ASK + ARK, PEM
//   DIR/vcek/v1/<Product>/crl                                optional, PEM or DER
//   DIR/vcek/v1/<Product>/<hwid hex>/bl<B>-tee<T>-snp<S>-ucode<U>[-fmc<F>].der
//
// <Product> is Milan, Genoa or Turin; <hwid hex> is the report's CHIP_ID in lowercase hex
// (64 bytes; the first 8 on Turin, as KDS names Turin chips); the SPLs are decimal, from the
// report's REPORTED_TCB decoded for the product. Nothing here trusts what it reads: the
// collateral still goes through verify_snp_evidence.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/attest/snp_report.hpp"
#include "cove/expected.hpp"

namespace cove::attest {

/// "Milan", "Genoa", "Turin"; empty for unknown.
std::string_view kds_product_dir(snp_product p) noexcept;

/// The CHIP_ID bytes KDS names a chip by: all 64, or the first 8 on Turin.
std::span<const uint8_t> kds_hwid(const snp_report& r, snp_product p) noexcept;

/// Relative paths (forward slashes) inside a collateral directory.
std::string kds_chain_path(snp_product p);
std::string kds_crl_path(snp_product p);
std::string kds_vcek_path(snp_product p, std::span<const uint8_t> hwid, const tcb_version& tcb);

/// One answer from a collateral_provider. `status` follows HTTP: 200 = body is the file,
/// 404 = no such file, 429/503 = try later (after `retry_after` when given); anything else
/// is a failure.
struct fetch_response {
  int status = 0;
  std::string body;
  std::optional<std::chrono::seconds> retry_after;
};

/// Where missing collateral can come from (e.g. AMD KDS). fetch() gets the relative path
/// ("vcek/v1/Genoa/cert_chain", ...); an error result means the transport failed.
class collateral_provider {
 public:
  virtual ~collateral_provider() = default;
  virtual expected<fetch_response> fetch(std::string_view path) = 0;
};

/// AMD KDS (https://kdsintf.amd.com). Not implemented: cove's Debian dependencies carry
/// no HTTP(S) client; every fetch fails errc::unavailable saying so. Kept so the wiring
/// (and retry policy) exists for the day a client is added.
class kds_provider final : public collateral_provider {
 public:
  explicit kds_provider(std::string base_url = "https://kdsintf.amd.com") : base_(std::move(base_url)) {}
  expected<fetch_response> fetch(std::string_view path) override;

 private:
  std::string base_;
};

struct retry_policy {
  int max_attempts = 5;                             // including the first
  std::chrono::milliseconds initial_backoff{1000};  // doubles per retry
  std::chrono::milliseconds max_backoff{60000};     // also caps Retry-After
  /// Waits; std::this_thread::sleep_for when unset (tests record instead).
  std::function<void(std::chrono::milliseconds)> sleep;
};

/// fetch() with retries on 429/503 and transport errors (except errc::unavailable, which
/// means there is no transport at all): waits Retry-After when the
/// response gives it (capped at max_backoff), else exponential backoff. 404 and other
/// statuses are returned at once. After max_attempts, errc::unavailable naming the path,
/// the attempts and the last status.
expected<fetch_response> fetch_with_retries(collateral_provider& p, std::string_view path,
                                            const retry_policy& policy = {});

/// Collateral for one report.
struct snp_collateral {
  snp_product product = snp_product::unknown;
  std::vector<uint8_t> vcek_der;
  std::string chain_pem;
  std::optional<std::string> crl;  // as read (PEM or DER)
  std::filesystem::path vcek_file;
};

class collateral_store {
 public:
  explicit collateral_store(std::filesystem::path dir) : dir_(std::move(dir)) {}
  /// Enables fetching missing files (and filing them into the directory). Off by default.
  void set_provider(std::shared_ptr<collateral_provider> p, retry_policy policy = {});

  [[nodiscard]] const std::filesystem::path& dir() const noexcept { return dir_; }

  /// The VCEK for the report's chip and REPORTED_TCB, its product's chain and CRL. The
  /// product comes from the report (CPUID, v3+); for older reports every product directory
  /// whose TCB layout fits is tried. errc::not_found naming the exact missing file.
  expected<snp_collateral> lookup(const snp_report& report) const;

  /// Files a VCEK (DER or PEM) and its chain (PEM) into the layout, the path derived from
  /// the VCEK's own extensions (product, hwID, SPLs); with `report`, first checks that the
  /// VCEK's chip and TCB are the report's. `crl` (optional) is filed as-is. Returns the
  /// VCEK's path.
  expected<std::filesystem::path> put(std::span<const uint8_t> vcek, std::string_view chain_pem,
                                      std::optional<std::string_view> crl = std::nullopt,
                                      const snp_report* report = nullptr) const;

 private:
  /// The file at `rel`, else the provider's 200 (filed), else errc::not_found (the path).
  expected<std::string> get(const std::string& rel) const;
  std::filesystem::path dir_;
  std::shared_ptr<collateral_provider> provider_;
  retry_policy retry_;
};

}  // namespace cove::attest

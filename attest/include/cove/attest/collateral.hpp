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
  /// Where `path` comes from, for messages (default: the path).
  [[nodiscard]] virtual std::string url_of(std::string_view path) const { return std::string(path); }
};

/// AMD's Key Distribution Service.
inline constexpr std::string_view kds_default_url = "https://kdsintf.amd.com";

struct kds_options {
  /// https://host[:port][/prefix]; plain http:// only when set explicitly to something other
  /// than kds_default_url (tests, a local mirror). No proxy is used (http(s)_proxy ignored).
  std::string base_url{kds_default_url};
  std::chrono::seconds timeout{30};     // one request: connect, TLS handshake, send, receive
  std::size_t max_response = 1u << 20;  // body bytes; more fails errc::too_large
};

/// AMD KDS over OpenSSL's HTTP client (OSSL_HTTP_open; TLS pushed by its bio_update
/// callback, the server verified against the system CA store and its host name). The
/// request is an HTTP/1.0 GET; the response is read by parse_http_response, so 429/503 keep
/// their Retry-After. Transport failures are errc::unavailable / errc::timeout (retried by
/// fetch_with_retries); a TLS verification failure is errc::crypto_failed (not retried).
class kds_provider final : public collateral_provider {
 public:
  /// Checks the URL (scheme, host, port); invalid_request naming the problem.
  static expected<std::shared_ptr<kds_provider>> make(kds_options o = {});
  expected<fetch_response> fetch(std::string_view path) override;
  [[nodiscard]] std::string url_of(std::string_view path) const override;
  ~kds_provider() override;

  struct impl;

 private:
  explicit kds_provider(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

/// An HTTP/1.x response as read from a connection: status line, headers, body.
struct http_response_head {
  int status = 0;
  std::size_t header_size = 0;                      // bytes up to and including the blank line
  std::optional<std::size_t> content_length;        // Content-Length, when given
  std::optional<std::chrono::seconds> retry_after;  // Retry-After in seconds (dates ignored)
};
/// Parses the head of `raw` (which must contain the blank line ending the headers; else
/// errc::unavailable "incomplete"). Malformed status lines/headers, chunked transfer coding
/// and header blocks over 64 KiB are errc::invalid_request.
expected<http_response_head> parse_http_head(std::string_view raw);
/// The whole response once the connection is closed: the head, and a body of exactly
/// Content-Length bytes (fewer: errc::unavailable "truncated"), at most `max_body` bytes
/// (errc::too_large).
expected<fetch_response> parse_http_response(std::string_view raw, std::size_t max_body);

struct retry_policy {
  int max_attempts = 5;                             // including the first
  std::chrono::milliseconds initial_backoff{1000};  // doubles per retry
  std::chrono::milliseconds max_backoff{60000};     // caps the exponential backoff
  /// Total budget of one fetch_with_retries call (time spent fetching plus waiting): a wait
  /// (Retry-After or backoff) that would end past it gives up at once.
  std::chrono::milliseconds deadline{120000};
  /// Backoff waits are drawn uniformly from [(1 - jitter) * b, b]; 0 = exact. Retry-After
  /// is waited exactly.
  double jitter = 0.5;
  /// Waits; std::this_thread::sleep_for when unset (tests record instead).
  std::function<void(std::chrono::milliseconds)> sleep;
};

/// fetch() with retries on 429/503 and retryable transport errors (errc::unavailable,
/// errc::timeout): waits Retry-After when the response gives it, else exponential backoff
/// with jitter; a wait past `deadline` gives up at once. 404, other statuses and other
/// errors (bad URL, TLS verification, too large) are returned at once. After max_attempts,
/// errc::unavailable naming the path, the attempts and the last status.
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
  /// Enables fetching a missing VCEK or chain (and filing them into the directory). Off by
  /// default: without a provider nothing leaves the machine.
  void set_provider(std::shared_ptr<collateral_provider> p, retry_policy policy = {});

  [[nodiscard]] const std::filesystem::path& dir() const noexcept { return dir_; }

  /// The VCEK for the report's chip and REPORTED_TCB, its product's chain and CRL. The
  /// product comes from the report (CPUID, v3+); for older reports every product directory
  /// whose TCB layout fits is tried. errc::not_found naming the exact missing file. With a
  /// provider, a missing VCEK or chain is fetched (as `fetch`); the CRL is never fetched.
  expected<snp_collateral> lookup(const snp_report& report) const;

  /// The VCEK of chip `hwid` (64 bytes; 8 on Turin) at `tcb` and the product's ASK+ARK
  /// chain, from the directory or, for what is missing, from the provider. Fetched files are
  /// validated before anything is written: the VCEK parses as DER, its product, hwID and SPL
  /// extensions are the ones asked for, and ARK -> ASK -> VCEK verifies (signatures, validity;
  /// the ARK is not trusted by this — verify_snp_evidence still checks it against the
  /// policy's roots); then each file is written atomically (temporary file + rename). A 404
  /// is errc::not_found "KDS has no VCEK for chip … TCB …"; a rejected file is
  /// errc::invalid_request and nothing is filed. Without a provider, as lookup.
  expected<snp_collateral> fetch(snp_product p, std::span<const uint8_t> hwid, const tcb_version& tcb) const;

  /// Files a VCEK (DER or PEM) and its chain (PEM) into the layout, the path derived from
  /// the VCEK's own extensions (product, hwID, SPLs); with `report`, first checks that the
  /// VCEK's chip and TCB are the report's. `crl` (optional) is filed as-is. Returns the
  /// VCEK's path.
  expected<std::filesystem::path> put(std::span<const uint8_t> vcek, std::string_view chain_pem,
                                      std::optional<std::string_view> crl = std::nullopt,
                                      const snp_report* report = nullptr) const;

 private:
  /// A provider's 200 for `rel`; 404 is errc::not_found `what_missing`.
  expected<std::string> download(const std::string& rel, const std::string& what_missing) const;
  std::filesystem::path dir_;
  std::shared_ptr<collateral_provider> provider_;
  retry_policy retry_;
};

}  // namespace cove::attest

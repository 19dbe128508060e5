#pragma once
// A cache of verified VCEK chains. Verifying the AMD chain (three RSA-4096 PSS signatures)
// dominates SEV-SNP verification; reports signed by the same VCEK only need their own
// signature and TCB/chip binding checked. The cache keys on the exact VCEK bytes, the
// ASK/ARK bundle bytes and the trusted roots, and re-checks the chain's validity window
// against the verification clock on every hit.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "cove/attest/snp_report.hpp"
#include "cove/attest/verify.hpp"
#include "cove/expected.hpp"

namespace cove::attest {

class snp_chain_cache {
 public:
  /// At most `capacity` chains (>= 1) are kept; the oldest is evicted first.
  explicit snp_chain_cache(std::size_t capacity = 64);
  ~snp_chain_cache();
  snp_chain_cache(const snp_chain_cache&) = delete;
  snp_chain_cache& operator=(const snp_chain_cache&) = delete;

  /// Same checks, order and error messages as verify_snp_evidence. The chain check
  /// (verify_cert_chain) runs only on a miss, or when opts.now lies outside the cached
  /// chain's validity window (then the full check reports why). Thread-safe.
  expected<snp_report> verify(std::span<const uint8_t> report, std::span<const uint8_t> vcek_der,
                              std::string_view ask_ark_pem_bundle, const verify_options& opts);

  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] uint64_t hits() const;
  [[nodiscard]] uint64_t misses() const;
  void clear();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace cove::attest

#pragma once
// The attestation service: verifies SEV-SNP / simulated SEV-SNP evidence on request
// (cove.v1.attestation.verify: VerifyRequest -> VerifyResult) and caches verdicts.
// Verification runs in detached verifier workers; the service actor never blocks.
#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "cove/actors.hpp"
#include "cove/bus/connection.hpp"
#include "cove/crypto/hash.hpp"
#include "cove/expected.hpp"

namespace cove::attestation {

/// The outcome of verifying one request's evidence (valid=false is a verdict, not an error).
struct verdict {
  bool valid = false;
  std::string reason;  // empty when valid; else the failing step/field
  std::vector<uint8_t> measurement;
  uint32_t report_version = 0;
  std::string product;
  bool vtpm = false;  // the evidence carried a vTPM quote and it verified
  bool dice = false;  // the policy has a dice section and the evidence's DICE chain verified
};

/// Checks a VerifyRequest envelope's fields without verifying anything: evidence present,
/// policy_json a valid policy whose trusted_roots are inline PEMs (the service never reads
/// files named by a request). Errors are errc::invalid_request.
expected<void> check_request(std::span<const uint8_t> verify_request_envelope);

/// Verifies the evidence of a VerifyRequest envelope (blocking CPU work: chain and report
/// signatures, the vTPM quote). Uses attest::verify_agent_evidence, like `cove attest`.
expected<verdict> verify_request(std::span<const uint8_t> verify_request_envelope);

/// SHA3-256 over lp(kind) lp(report) lp(cert_chain) lp(kx) lp(sign) lp(SHA3-256(policy_json))
/// lp(nonce) lp(binding) lp(cvm_id) and, with a vTPM section, lp("vtpm") lp(ak_public)
/// lp(ak_spki) lp(quote) lp(signature) lp(event_log) and lp(index || value) per PCR, and with
/// a DICE section lp("dice") lp(chain) lp(binding_signature), of a
/// VerifyRequest envelope (lp = 8-byte length prefix); nullopt when malformed.
std::optional<crypto::sha3_digest> cache_key(std::span<const uint8_t> verify_request_envelope);

/// A bounded LRU of verdicts with a time to live.
class verdict_cache {
 public:
  using clock = std::chrono::steady_clock;
  verdict_cache(std::size_t capacity, clock::duration ttl) : capacity_(capacity), ttl_(ttl) {}

  /// The verdict stored under `key` if it is younger than the TTL (and marks it used).
  std::optional<verdict> get(const crypto::sha3_digest& key, clock::time_point now = clock::now());
  /// Stores (or replaces) `key`, evicting the least recently used entry when full.
  void put(const crypto::sha3_digest& key, verdict v, clock::time_point now = clock::now());
  [[nodiscard]] std::size_t size() const noexcept { return index_.size(); }

 private:
  struct entry {
    std::string key;
    verdict value;
    clock::time_point stored;
  };
  std::size_t capacity_;
  clock::duration ttl_;
  std::list<entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<entry>::iterator> index_;
};

struct attestation_config {
  std::shared_ptr<bus::connection> bus;
  std::size_t cache_capacity = 4096;
  std::chrono::seconds cache_ttl{600};
  std::size_t workers = 2;           // detached verifier actors
  std::size_t max_in_flight = 1024;  // distinct verifications queued; beyond: Error unavailable
};

struct attestation_state {
  static inline const char* name = "cove.attestation";
  attestation_config cfg;
  std::unique_ptr<verdict_cache> cache;
  std::vector<attestation_verifier_actor> workers;
  std::size_t next_worker = 0;
  /// Reply subjects waiting for a verification in flight, by cache key (identical
  /// concurrent requests are verified once).
  std::map<std::string, std::vector<std::string>> waiting;
};

/// A verifier worker (number `index`, for logs); spawn detached. (It takes an argument on
/// purpose: CAF 0.17 dereferences a null argument tuple for argument-less spawns, which
/// UBSan reports.)
attestation_verifier_actor::behavior_type verifier(attestation_verifier_actor::pointer self,
                                                   std::size_t index);

attestation_actor::behavior_type attestation(attestation_actor::stateful_pointer<attestation_state> self,
                                             attestation_config cfg);

}  // namespace cove::attestation

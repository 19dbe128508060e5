#pragma once
// The payload of the cocos front door's Attestation rpc: an EAT token in CBOR,
// wrapped in COSE_Sign1 (tag 18, ES256), as cocos's attestation-service emits it
// (cocos-interfaces.md §4.3). The signing key is per-process and never published,
// as upstream: verifiers rely on the hardware report in `raw_report`, not on it.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cove/crypto/keys.hpp"
#include "cove/expected.hpp"

namespace cove::agent {

struct eat_claims {
  std::string issuer;                                  // 1 iss
  int64_t issued_at = 0;                               // 6 iat (Unix seconds)
  int64_t expires = 0;                                 // 4 exp
  std::vector<uint8_t> nonce;                          // 10 eat_nonce
  std::vector<uint8_t> ueid;                           // 256 ueid (SNP: chip id)
  int64_t oem_id = 0;                                  // 258 oemid (AMD 3704); 0 = omitted
  std::vector<uint8_t> hw_model;                       // 259 hwmodel; empty = omitted
  int64_t debug_status = 2;                            // 263 dbgstat (2 = disabled since boot)
  std::vector<uint8_t> measurements;                   // 265 measurements (SNP launch measurement)
  std::string platform_type;                           // "platform_type": "SNP", "vTPM", ...
  std::vector<uint8_t> raw_report;                     // "raw_report": the hardware evidence
  std::map<std::string, std::string> text_extensions;  // extra text-keyed text claims (cove: "x-cove-*")
};

/// The claims as a CBOR map in a fixed order (integer keys ascending, then text keys).
std::vector<uint8_t> eat_payload_cbor(const eat_claims& c);

/// COSE_Sign1 (tag 18): protected {1: -7}, unprotected {4: issuer}, payload, ES256 r||s.
/// `key` must be ECDSA P-256 (errc::invalid_request otherwise).
expected<std::vector<uint8_t>> make_eat_token(const eat_claims& c, const crypto::private_key& key);

}  // namespace cove::agent

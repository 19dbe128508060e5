#pragma once
// The byte strings users sign and the agent's evidence binds. Each is a fixed
// ASCII domain tag followed by fields, every field prefixed with its length
// as a big-endian u32, so no two field lists encode to the same bytes.
#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "cove/crypto/hash.hpp"

namespace cove::crypto {

inline constexpr std::string_view upload_statement_tag = "cove-upload-v1";
inline constexpr std::string_view result_statement_tag = "cove-result-v1";
inline constexpr std::string_view evidence_tag = "cove-evidence-v1";
inline constexpr std::string_view bridge_binding_tag = "cove-bridge-v1";

/// "cove-upload-v1" || lp(computation_id) || lp(manifest_digest) || lp(role) || lp(filename)
///   || lp(plaintext_hash) || lp(agent_kx_public_key) || lp(uploader_kx_public_key).
/// role is "algorithm" or "dataset"; filename is "algo" for the algorithm. Signed by the
/// participant the manifest declares for this file and sent with the stream's last chunk.
/// The manifest digest (cove::manifest_digest) ties the upload to the exact computation
/// the participant agreed to; the two kx keys tie it to this attested agent and this stream.
std::vector<uint8_t> upload_statement(std::string_view computation_id, const sha3_digest& manifest_digest,
                                      std::string_view role, std::string_view filename,
                                      const sha3_digest& plaintext_hash,
                                      std::span<const uint8_t> agent_kx_public_key,
                                      std::span<const uint8_t> uploader_kx_public_key);

/// "cove-result-v1" || lp(computation_id) || lp(manifest_digest) || lp(consumer_key_der)
///   || lp(agent_kx_public_key). Signed by a result consumer to request the results.
std::vector<uint8_t> result_statement(std::string_view computation_id, const sha3_digest& manifest_digest,
                                      std::span<const uint8_t> consumer_key_der,
                                      std::span<const uint8_t> agent_kx_public_key);

/// SHA-512("cove-evidence-v1" || lp(kx_pk) || lp(sign_pk) || lp(nonce)):
/// the 64 bytes an agent puts in its attestation report's report_data.
std::array<uint8_t, 64> evidence_report_data(std::span<const uint8_t> kx_pk, std::span<const uint8_t> sign_pk,
                                             std::span<const uint8_t> nonce);

/// SHA-512("cove-bridge-v1" || lp(kx_pk) || lp(sign_pk) || lp(cvm_id) || lp(exporter)):
/// the report_data of the evidence an agent presents to the bridge. `exporter` is the
/// TLS session's RFC 9266 channel binding (EXPORTER-Channel-Binding, 32 bytes), so the
/// evidence is worthless on any other TLS session. The distinct tag means no evidence an
/// agent produces for a verifier's nonce (cove.v1.cvm.<id>.attest) can pass as a bridge
/// binding, whatever nonce that verifier chose.
std::array<uint8_t, 64> bridge_report_data(std::span<const uint8_t> kx_pk, std::span<const uint8_t> sign_pk,
                                           std::string_view cvm_id, std::span<const uint8_t> exporter);

}  // namespace cove::crypto

#pragma once
// cocos's upload/download authentication (cocos-interfaces.md §2.3, §3.5): the client
// signs a constant role string with the key the manifest declares for it and sends the
// signature as gRPC metadata `signature` (base64). There is no nonce and no hash of the
// content in the signed message, so a signature is replayable; cove accepts it only on
// the cocos front door (guest/README.md, docs/security.md).
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "cove/crypto/keys.hpp"
#include "cove/expected.hpp"

namespace cove::agent::cocos {

enum class role { algorithm_provider, data_provider, consumer };

/// "algorithm-provider", "data-provider", "consumer": the signed message.
std::string_view role_string(role r) noexcept;

/// Verifies `signature` over role_string(r) under `key`: RSA PKCS#1 v1.5 with
/// SHA-256, ECDSA P-256 with SHA-256 (ASN.1 DER), or Ed25519 over the raw bytes.
/// errc::unauthorized if it does not verify.
expected<void> verify_role_signature(const crypto::public_key& key, role r,
                                     std::span<const uint8_t> signature);

/// The signature a cocos client sends (same schemes as verify_role_signature).
expected<std::vector<uint8_t>> sign_role(const crypto::private_key& key, role r);

/// Decodes the metadata value: standard base64 with padding (what Go's
/// base64.StdEncoding writes); errc::unauthorized with a clear text otherwise.
expected<std::vector<uint8_t>> decode_signature(std::string_view value);

}  // namespace cove::agent::cocos

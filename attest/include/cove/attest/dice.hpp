#pragma once
// DICE evidence: X.509 certificate chains carrying the TCG DiceTcbInfo extension
// (OID 2.23.133.5.4.1, TCG "DICE Attestation Architecture"), layered as in the Open
// Profile for DICE: the root certificate is the device identity derived from the UDS,
// and each layer's certificate is issued by the previous layer's key.
//
//   DiceTcbInfo ::= SEQUENCE {            -- module uses IMPLICIT TAGS
//     vendor [0] UTF8String OPTIONAL, model [1] UTF8String OPTIONAL,
//     version [2] UTF8String OPTIONAL, svn [3] INTEGER OPTIONAL,
//     layer [4] INTEGER OPTIONAL, index [5] INTEGER OPTIONAL,
//     fwids [6] SEQUENCE OF FWID OPTIONAL, flags [7] OperationalFlags OPTIONAL,
//     vendorInfo [8] OCTET STRING OPTIONAL, type [9] OCTET STRING OPTIONAL,
//     flagsMask [10] OperationalFlags OPTIONAL }      -- v1.1; applied to flags
//   FWID ::= SEQUENCE { hashAlg OBJECT IDENTIFIER, digest OCTET STRING }
//   OperationalFlags ::= BIT STRING { notConfigured(0), notSecure(1), recovery(2), debug(3), ... }
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/expected.hpp"

namespace cove::attest {

inline constexpr const char* dice_tcb_info_oid = "2.23.133.5.4.1";
inline constexpr const char* oid_sha256 = "2.16.840.1.101.3.4.2.1";
inline constexpr const char* oid_sha384 = "2.16.840.1.101.3.4.2.2";

/// OperationalFlags: BIT STRING bit n (n < 32) is `1u << n` here.
enum dice_flag : uint32_t {
  dice_flag_not_configured = 1u << 0,
  dice_flag_not_secure = 1u << 1,
  dice_flag_recovery = 1u << 2,
  dice_flag_debug = 1u << 3,
};
/// "not_configured", "not_secure", "recovery", "debug"; nullopt for other names.
std::optional<uint32_t> dice_flag_from_name(std::string_view name);
/// Comma-separated flag names ("debug,recovery"), bits >= 4 as "bit<n>".
std::string dice_flags_to_string(uint32_t flags);

struct fwid {
  std::string hash_alg;  // dotted OID, e.g. oid_sha384
  std::vector<uint8_t> digest;
};

struct dice_tcb_info {
  std::optional<std::string> vendor, model, version;
  std::optional<int64_t> svn, layer, index;
  std::vector<fwid> fwids;
  std::optional<uint32_t> flags;  // after applying flagsMask when present
  std::vector<uint8_t> vendor_info, type;
};

/// Parses the DER DiceTcbInfo (the extnValue contents). Strict: trailing bytes, wrong
/// tags, out-of-order or repeated fields, and INTEGERs outside int64 are errors.
expected<dice_tcb_info> parse_dice_tcb_info(std::span<const uint8_t> der);
/// DER-encodes a DiceTcbInfo (used by the simulator; round-trips with the parser).
std::vector<uint8_t> encode_dice_tcb_info(const dice_tcb_info& info);

struct dice_layer {
  std::string subject;  // RFC 2253, e.g. "CN=kernel,O=cove simulated DICE"
  std::string issuer;   // RFC 2253
  std::string name;     // subject CN (or the whole subject when it has no CN)
  bool has_tcb_info = false;
  std::optional<std::string> vendor, model, version;
  std::optional<int64_t> svn, layer, index;
  std::vector<fwid> fwids;
  uint32_t flags = 0;
  std::vector<uint8_t> vendor_info, type;
  std::vector<uint8_t> cert_der;
};

/// Parses a PEM bundle or concatenated DER certificates (at most 16) and orders them root
/// first, leaf last by issuer/subject linkage (input order does not matter). Errors
/// (errc::invalid_request): malformed input, duplicate certificates or subjects, a fork,
/// a gap (more than one certificate without an issuer in the set), a cycle, a malformed
/// DiceTcbInfo extension.
expected<std::vector<dice_layer>> parse_dice_chain(std::string_view pem_or_der);

struct dice_layer_policy {
  /// Which layer this entry applies to: chain position (root = 0) and/or subject CN.
  /// At least one is set; when both, both must match. Each entry must match a layer.
  std::optional<std::size_t> index;
  std::optional<std::string> name;
  /// Accepted FWID digests (32 B = SHA-256, 48 B = SHA-384); empty = unchecked.
  std::vector<std::vector<uint8_t>> allowed_fwids;
  std::optional<int64_t> min_svn;
  /// Operational flags tolerated on this layer (default none: not_configured,
  /// not_secure, recovery and debug all fail).
  uint32_t allowed_flags = 0;
};

struct dice_policy {
  /// PEM certificates; the chain root must byte-equal one or be signed by one.
  std::vector<std::string> trusted_roots_pem;
  std::vector<dice_layer_policy> layers;
  /// "ecdsa-p256-sha256", "ecdsa-p384-sha384", "ed25519".
  std::vector<std::string> allowed_signature_algorithms = {"ecdsa-p256-sha256", "ecdsa-p384-sha384",
                                                           "ed25519"};
};

/// JSON policy (see attest/README.md "DICE"); unknown keys and wrong types are
/// errc::invalid_request. Non-PEM `trusted_roots` entries are file paths, resolved
/// against base_dir when relative (regular files of at most 1 MiB).
expected<dice_policy> load_dice_policy_json(std::string_view json, const std::string& base_dir = ".");

/// Verifies signatures (issuer key, allowed algorithms), validity at `now`, CA
/// constraints on non-leaf layers, the trusted root, FWIDs, SVNs and flags. Errors are
/// errc::attestation_failed naming the layer and field:
/// "layer 2 (kernel) fwid: got ab12..., expected one of [cd34...]".
expected<void> verify_dice_chain(
    const std::vector<dice_layer>& chain, const dice_policy& policy,
    std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

// ---- simulated DICE (Open-Profile-like, P-256) -------------------------------------------

struct sim_dice_inputs {
  std::vector<uint8_t> uds = std::vector<uint8_t>(32, 0);  // exactly 32 bytes
  /// Measured bytes of each layer: firmware, kernel, agent.
  std::vector<uint8_t> firmware, kernel, agent;
  /// A layer's SHA-384 measurement given directly (48 bytes; e.g. the agent's launch
  /// measurement, already a SHA-384 of its binary): used instead of SHA-384(measured bytes).
  std::vector<uint8_t> firmware_digest, kernel_digest, agent_digest;
  /// OperationalFlags per layer (firmware, kernel, agent).
  uint32_t firmware_flags = 0, kernel_flags = 0, agent_flags = 0;
  int64_t firmware_svn = 1, kernel_svn = 1, agent_svn = 1;
  std::chrono::system_clock::time_point not_before = std::chrono::sys_days{std::chrono::year{2025} / 1 / 1};
  /// Default 9999-12-31T23:59:59Z ("no well-defined expiration", RFC 5280).
  std::optional<std::chrono::system_clock::time_point> not_after;
};

struct sim_dice_chain {
  std::string chain_pem;                    // root, firmware, kernel, agent (root first)
  std::string root_pem;                     // the UDS-derived device certificate (self-signed)
  std::string leaf_key_pem;                 // the agent layer's P-256 private key, PKCS#8
  std::vector<std::vector<uint8_t>> fwids;  // SHA-384 of firmware, kernel, agent
};

/// Derivation (all HKDF-SHA-256, 32-byte outputs):
///   CDI_0 = HKDF(ikm = UDS, salt = "", info = "cove-dice/cdi0")
///   CDI_i = HKDF(ikm = CDI_{i-1}, salt = SHA-384(measured bytes of layer i), info = "cove-dice/cdi")
///   key_i = P-256 scalar HKDF(ikm = CDI_i, salt = "", info = "cove-dice/key-p256" || counter),
///           the first counter (0, 1, ...) giving 0 < d < n.
/// Layer 0 (root, CN "device") is self-signed with key_0; layer i (1 firmware, 2 kernel,
/// 3 agent) carries key_i's public key and DiceTcbInfo {vendor "cove", model "sim",
/// svn, layer i, fwids [SHA-384(measured bytes)], flags} and is signed by key_{i-1}
/// with ECDSA-SHA-256. Serial numbers are derived from the public key.
expected<sim_dice_chain> make_sim_dice_chain(const sim_dice_inputs& inputs);

// ---- DICE in an agent's evidence ------------------------------------------------------------

/// The statement the agent layer's (leaf) key signs in an agent's evidence:
///   "cove-dice-binding-v1" || lp(REPORT_DATA)      (lp = u32 big-endian length || bytes)
/// REPORT_DATA is the 64 bytes of the TEE report of the same evidence, itself the session
/// construction (common/include/cove/crypto/statements.hpp: agent keys, the verifier's nonce
/// or the bridge's TLS exporter and CVM id, the vTPM AK name). So the signature ties this
/// chain's leaf key to this session and these agent keys: a chain (with its signature) taken
/// from another agent or session signs another REPORT_DATA and fails.
inline constexpr std::string_view dice_binding_tag = "cove-dice-binding-v1";
std::vector<uint8_t> dice_binding_message(std::span<const uint8_t> report_data);

/// Signs dice_binding_message(report_data) with the leaf's private key (PKCS#8 PEM):
/// ECDSA P-256/SHA-256, P-384/SHA-384 (DER ECDSA-Sig-Value) or Ed25519.
expected<std::vector<uint8_t>> sign_dice_binding(std::string_view leaf_key_pem,
                                                 std::span<const uint8_t> report_data);

/// Checks `signature` over dice_binding_message(report_data) with the public key of the
/// chain's last certificate (`leaf`). errc::attestation_failed
/// ("dice.binding: the agent layer's key did not sign this evidence's REPORT_DATA ...").
expected<void> verify_dice_binding(const dice_layer& leaf, std::span<const uint8_t> report_data,
                                   std::span<const uint8_t> signature);

/// The measured bytes of the simulated TEE's firmware and kernel layers (fixed strings:
/// the process backend has no firmware or kernel of its own) and their SHA-384 FWIDs.
inline constexpr std::string_view sim_dice_firmware_bytes = "cove simulated firmware v1";
inline constexpr std::string_view sim_dice_kernel_bytes = "cove simulated kernel v1";
std::vector<uint8_t> sim_dice_firmware_fwid();
std::vector<uint8_t> sim_dice_kernel_fwid();

/// The simulated TEE's DICE chain for an agent: UDS = HKDF-SHA-256(ikm = `uds_seed`,
/// salt = "", info = "cove-sim-dice-uds-v1") (the agent uses its chip's VCEK private key
/// PEM as the seed, so each simulated chip is one DICE device), firmware and kernel =
/// the fixed strings above, agent layer digest = `agent_measurement` (the agent's launch
/// measurement, so its FWID equals the report's MEASUREMENT).
expected<sim_dice_chain> make_sim_agent_dice_chain(std::span<const uint8_t> uds_seed,
                                                   std::span<const uint8_t> agent_measurement);

}  // namespace cove::attest

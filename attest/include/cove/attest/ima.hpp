#pragma once
// Linux IMA binary runtime measurement list
// (/sys/kernel/security/ima/binary_runtime_measurements): strict parser, replay of the
// sha256 bank of the IMA PCR, and an allowlist check of the measured files.
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cove/attest/tpm_quote.hpp"
#include "cove/expected.hpp"

namespace cove::attest {

inline constexpr uint32_t ima_default_pcr = 10;

/// One measurement. Templates: "ima" (SHA-1 file digest + name), "ima-ng" (d-ng|n-ng) and
/// "ima-sig" (d-ng|n-ng|sig); anything else is refused.
struct ima_entry {
  std::size_t offset = 0;  // byte offset of the entry in the list
  uint32_t pcr = 0;
  std::array<uint8_t, 20> template_sha1{};  // the list's template digest (all zero: violation)
  std::string template_name;
  bool violation = false;            // all-zero template digest: the kernel extended 0xff..ff
  std::string file_algo;             // "sha1", "sha256", ... ("sha1" for the "ima" template)
  std::vector<uint8_t> file_digest;  // the measured file's digest (zero for a violation)
  std::string path;                  // the measured path (without the NUL)
  std::vector<uint8_t> signature;    // ima-sig's sig field (may be empty)
  std::vector<uint8_t> hashed;       // the bytes the kernel hashes into the template hash
};

struct ima_list {
  std::vector<ima_entry> entries;
};

/// Parses a binary measurement list (little-endian, as written by x86/arm64 kernels).
/// Strict: every field is bounds-checked, lengths must be consistent, the d-ng algorithm
/// must be known with a digest of its size, n-ng must be NUL-terminated without inner NULs,
/// and each non-violation entry's SHA-1 template digest must equal the SHA-1 of its
/// template data. Limits: 64 MiB list, 1 MiB template data, PCR < 24.
/// Errors (errc::invalid_request) name the entry and offset:
/// "ima list: entry 3 (offset 412): unknown template \"foo\"".
expected<ima_list> parse_ima_list(std::span<const uint8_t> bytes);

/// The sha256-bank value of `pcr` after replaying the list from zero as Linux does:
/// extend with SHA-256 of the template data (non-SHA-1 banks get a template hash of their
/// own algorithm), and with 32 bytes of 0xff for a violation entry.
std::vector<uint8_t> replay_ima_pcr(const ima_list& list, uint32_t pcr = ima_default_pcr);

/// Replays `pcr` and compares with the quoted sha256 value. errc::attestation_failed:
/// "ima list does not replay pcr[10]: list gives …, quote has …" (or "is not quoted").
expected<void> check_ima_pcr(const ima_list& list, const tpm_pcr_values& quoted,
                             uint32_t pcr = ima_default_pcr);

/// The length in bytes of the longest prefix of `bytes` (whose parse is `list`) that replays
/// `pcr` to `value` (sha256 bank), or nullopt when no prefix does. The agent reads the list
/// after quoting: the kernel appends an entry before extending the PCR, so the list it reads
/// may run ahead of the quote, and the prefix up to the quote is what it sends.
std::optional<std::size_t> ima_replaying_prefix(std::span<const uint8_t> bytes, const ima_list& list,
                                                std::span<const uint8_t> value,
                                                uint32_t pcr = ima_default_pcr);

/// One ima-ng entry with a sha256 file digest, as the kernel writes it: `entry` is its bytes
/// in the list, `template_data` what the kernel hashes (SHA-256) and extends into `pcr`.
/// For tests and simulations (a list to extend into a swtpm, evidence to craft).
struct ima_ng_entry {
  std::vector<uint8_t> entry;
  std::vector<uint8_t> template_data;
};
ima_ng_entry make_ima_ng_entry(std::string_view path, std::span<const uint8_t> sha256_digest,
                               uint32_t pcr = ima_default_pcr);

/// What may be measured: a path listed in `paths` must have one of its sha256 digests;
/// any other path must have a digest in `digests`. The first entry "boot_aggregate" is
/// exempt (it is not a file). Violations are refused unless `allow_violations`.
struct ima_allowlist {
  std::map<std::string, std::vector<std::vector<uint8_t>>> paths;  // path -> sha256 digests
  std::vector<std::vector<uint8_t>> digests;                       // sha256 digests, any path
  bool allow_violations = false;
  bool operator==(const ima_allowlist&) const = default;
};

/// Every measured file must be allowed; errc::attestation_failed names the first that is
/// not: "ima entry 7 (offset 900): /usr/bin/x sha256:ab12… is not allowed".
expected<void> check_ima_allowlist(const ima_list& list, const ima_allowlist& allow);

}  // namespace cove::attest

#include "cove/attest/tpm_eventlog.hpp"

#include <openssl/sha.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>

#include "cove/attest/snp_report.hpp"
#include "le_reader.hpp"

namespace cove::attest {

namespace {

constexpr std::size_t max_log = 16u << 20;
constexpr std::size_t max_event = 1u << 20;

error bad(std::string msg) {
  return make_error(errc::invalid_request, "event log: " + std::move(msg));
}

using detail::le_reader;

std::string at(std::size_t event, std::size_t offset) {
  return "event " + std::to_string(event) + " (offset " + std::to_string(offset) + ")";
}

constexpr char spec_id_signature[] = "Spec ID Event03";           // 15 chars + NUL = 16 bytes
constexpr char startup_locality_signature[] = "StartupLocality";  // + NUL = 16 bytes

}  // namespace

expected<tcg_event_log> parse_tcg_event_log(std::span<const uint8_t> in) {
  if (in.size() > max_log) return bad("larger than 16 MiB");
  le_reader r(in);
  tcg_event_log log;

  // Header: TCG_PCR_EVENT {pcrIndex, eventType, digest[20], eventSize, event}.
  uint32_t pcr = 0;
  uint32_t type = 0;
  uint32_t size = 0;
  std::span<const uint8_t> sha1;
  std::span<const uint8_t> ev;
  if (!r.u32(pcr) || !r.u32(type) || !r.take(20, sha1) || !r.u32(size)) {
    return bad("truncated header (TCG_PCR_EVENT)");
  }
  if (pcr != 0 || type != tcg_ev_no_action) return bad("header is not an EV_NO_ACTION event for PCR 0");
  if (size > max_event || !r.take(size, ev))
    return bad("truncated header event (size " + std::to_string(size) + ")");

  // TCG_EfiSpecIdEvent.
  le_reader h(ev);
  std::span<const uint8_t> sig;
  uint32_t platform_class = 0;
  uint8_t minor = 0;
  uint8_t major = 0;
  uint8_t errata = 0;
  uint8_t uintn = 0;
  uint32_t nalgs = 0;
  if (!h.take(16, sig) || !h.u32(platform_class) || !h.u8(minor) || !h.u8(major) || !h.u8(errata) ||
      !h.u8(uintn) || !h.u32(nalgs)) {
    return bad("truncated Spec ID event");
  }
  if (std::memcmp(sig.data(), spec_id_signature, 16) != 0) {
    return bad("header is not \"Spec ID Event03\" (not a crypto-agile log)");
  }
  if (nalgs == 0 || nalgs > 16) return bad("Spec ID event lists " + std::to_string(nalgs) + " algorithms");
  bool has_sha256 = false;
  for (uint32_t i = 0; i < nalgs; ++i) {
    uint16_t alg = 0;
    uint16_t dsize = 0;
    if (!h.u16(alg) || !h.u16(dsize)) return bad("truncated Spec ID digest sizes");
    if (dsize == 0 || dsize > 64)
      return bad("Spec ID digest size " + std::to_string(dsize) + " out of range");
    if (alg == tpm_alg_sha256) {
      if (dsize != 32) return bad("Spec ID gives sha256 a digest size of " + std::to_string(dsize));
      has_sha256 = true;
    }
    log.algorithms.emplace_back(alg, dsize);
  }
  uint8_t vendor_size = 0;
  std::span<const uint8_t> vendor;
  if (!h.u8(vendor_size) || !h.take(vendor_size, vendor)) return bad("truncated Spec ID vendor info");
  if (!has_sha256) return bad("the log has no sha256 bank");

  // TCG_PCR_EVENT2 entries.
  for (std::size_t n = 1; !r.empty(); ++n) {
    auto off = r.pos();
    tcg_event e;
    uint32_t count = 0;
    if (!r.u32(e.pcr) || !r.u32(e.type) || !r.u32(count)) return bad("truncated " + at(n, off));
    if (e.pcr >= tpm_pcr_count) return bad(at(n, off) + " has PCR index " + std::to_string(e.pcr));
    if (count > log.algorithms.size()) {
      return bad(at(n, off) + " has " + std::to_string(count) + " digests, the header lists " +
                 std::to_string(log.algorithms.size()));
    }
    for (uint32_t d = 0; d < count; ++d) {
      uint16_t alg = 0;
      if (!r.u16(alg)) return bad("truncated digests in " + at(n, off));
      auto it = std::find_if(log.algorithms.begin(), log.algorithms.end(),
                             [&](const auto& a) { return a.first == alg; });
      if (it == log.algorithms.end()) {
        return bad(at(n, off) + " uses algorithm " + std::to_string(alg) + " not in the header");
      }
      std::span<const uint8_t> digest;
      if (!r.take(it->second, digest)) return bad("truncated digest in " + at(n, off));
      if (alg == tpm_alg_sha256) e.sha256.assign(digest.begin(), digest.end());
    }
    uint32_t esize = 0;
    std::span<const uint8_t> data;
    if (!r.u32(esize)) return bad("truncated " + at(n, off));
    if (esize > max_event)
      return bad(at(n, off) + " data of " + std::to_string(esize) + " bytes exceeds 1 MiB");
    if (!r.take(esize, data)) return bad("truncated data in " + at(n, off));
    e.data.assign(data.begin(), data.end());
    if (e.type != tcg_ev_no_action && e.sha256.empty()) return bad(at(n, off) + " has no sha256 digest");
    if (e.type == tcg_ev_no_action && e.pcr == 0 && e.data.size() == 17 &&
        std::memcmp(e.data.data(), startup_locality_signature, 16) == 0) {
      log.startup_locality = e.data[16];
    }
    log.events.push_back(std::move(e));
  }
  return log;
}

std::array<std::vector<uint8_t>, tpm_pcr_count> replay_tcg_event_log(const tcg_event_log& log) {
  std::array<std::vector<uint8_t>, tpm_pcr_count> pcrs;
  for (uint32_t i = 0; i < tpm_pcr_count; ++i) {
    pcrs[i].assign(SHA256_DIGEST_LENGTH, (i >= 17 && i <= 22) ? 0xff : 0x00);
  }
  pcrs[0][SHA256_DIGEST_LENGTH - 1] = log.startup_locality;
  for (const auto& e : log.events) {
    if (e.type == tcg_ev_no_action || e.pcr >= tpm_pcr_count || e.sha256.size() != SHA256_DIGEST_LENGTH)
      continue;
    uint8_t buf[2 * SHA256_DIGEST_LENGTH];
    std::memcpy(buf, pcrs[e.pcr].data(), SHA256_DIGEST_LENGTH);
    std::memcpy(buf + SHA256_DIGEST_LENGTH, e.sha256.data(), SHA256_DIGEST_LENGTH);
    SHA256(buf, sizeof buf, pcrs[e.pcr].data());
  }
  return pcrs;
}

expected<void> check_tcg_event_log(const tcg_event_log& log, const tpm_pcr_values& quoted,
                                   std::span<const uint32_t> pcrs) {
  std::vector<uint32_t> which(pcrs.begin(), pcrs.end());
  if (which.empty()) {
    for (const auto& [i, v] : quoted) which.push_back(i);
  }
  std::sort(which.begin(), which.end());
  auto replayed = replay_tcg_event_log(log);
  for (auto i : which) {
    auto name = "pcr[" + std::to_string(i) + "]";
    if (i >= tpm_pcr_count) return make_error(errc::invalid_request, "event log: no " + name + " (0..23)");
    auto it = quoted.find(i);
    if (it == quoted.end())
      return make_error(errc::attestation_failed, "event log check: " + name + " is not quoted");
    if (it->second != replayed[i]) {
      return make_error(errc::attestation_failed, "event log does not replay " + name + ": log gives " +
                                                      to_hex(replayed[i]) + ", quote has " +
                                                      to_hex(it->second));
    }
  }
  return ok();
}

}  // namespace cove::attest

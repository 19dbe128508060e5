#include "cove/attest/vtpm_evidence.hpp"

#include <openssl/sha.h>

#include <string_view>

namespace cove::attest {

namespace {

constexpr std::string_view binding_tag = "cove-snp-vtpm-v1";

void put_field(std::vector<uint8_t>& out, std::span<const uint8_t> bytes) {
  auto n = static_cast<uint32_t>(bytes.size());
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(n >> shift));
  out.insert(out.end(), bytes.begin(), bytes.end());
}

error step(std::string_view name, const error& e) {
  return make_error(e.code, std::string(name) + ": " + e.message);
}

}  // namespace

std::array<uint8_t, 64> snp_vtpm_report_data(std::span<const uint8_t> ak_name,
                                             std::span<const uint8_t> nonce) {
  std::vector<uint8_t> msg(binding_tag.begin(), binding_tag.end());
  put_field(msg, ak_name);
  put_field(msg, nonce);
  std::array<uint8_t, 64> out{};
  SHA512(msg.data(), msg.size(), out.data());
  return out;
}

expected<vtpm_verified> verify_vtpm_evidence(const vtpm_evidence& ev, std::span<const uint8_t> nonce,
                                             const tpm_policy& policy, std::span<const uint32_t> log_pcrs) {
  vtpm_verified out;
  if (!ev.event_log.empty()) {
    auto log = parse_tcg_event_log(ev.event_log);
    if (!log) return step("event log", log.error());
    out.log = std::move(*log);
  }
  if (ev.pcrs) {
    out.pcrs = *ev.pcrs;
  } else if (out.log) {
    auto replay = replay_tcg_event_log(*out.log);
    for (uint32_t i = 0; i < tpm_pcr_count; ++i) out.pcrs[i] = replay[i];
  } else {
    return make_error(errc::invalid_request,
                      "quote: the quoted PCR values are needed: give the PCR values or an event log");
  }
  auto q = verify_tpm_quote(ev.quote, ev.signature, ev.ak_public, nonce, out.pcrs);
  if (!q) return step("quote", q.error());
  out.quote = std::move(*q);
  // Keep only the quoted values: those are what the quote vouches for.
  tpm_pcr_values quoted;
  for (const auto& sel : out.quote.pcr_select)
    for (auto i : sel.pcrs)
      if (auto it = out.pcrs.find(i); it != out.pcrs.end()) quoted[i] = it->second;
  out.pcrs = std::move(quoted);
  if (auto ak = parse_tpm_public(ev.ak_public)) out.ak = std::move(*ak);
  if (out.log && ev.pcrs) {
    if (auto c = check_tcg_event_log(*out.log, out.pcrs, log_pcrs); !c) return step("event log", c.error());
  }
  if (auto p = check_tpm_policy(out.quote, out.pcrs, policy); !p) return step("pcr policy", p.error());
  return out;
}

expected<void> check_snp_vtpm_binding(const snp_report& report, const tpm_public& ak,
                                      std::span<const uint8_t> nonce) {
  if (ak.name.empty())
    return make_error(errc::attestation_failed,
                      "ak binding: the AK's nameAlg is not sha256, so it has no name to bind");
  auto want = snp_vtpm_report_data(ak.name, nonce);
  if (want != report.report_data)
    return make_error(errc::attestation_failed, "ak binding: report_data " + to_hex(report.report_data) +
                                                    " is not SHA-512(\"" + std::string(binding_tag) +
                                                    "\", AK name " + to_hex(ak.name) +
                                                    ", nonce) = " + to_hex(want));
  return ok();
}

}  // namespace cove::attest

#include "cove/cli/evidence_file.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cove/crypto/encoding.hpp"

namespace cove::cli {

using json = nlohmann::json;

std::string evidence_to_json(const saved_evidence& e) {
  json doc = {{"format", evidence_format},
              {"kind", e.kind},
              {"cvm", e.cvm_id},
              {"nonce", crypto::to_hex(e.nonce)},
              {"report", crypto::base64_encode(e.report)},
              {"cert_chain", e.cert_chain},
              {"kx_public_key", crypto::to_hex(e.kx_public_key)},
              {"sign_public_key", crypto::to_hex(e.sign_public_key)}};
  return doc.dump(2) + "\n";
}

expected<saved_evidence> evidence_from_json(std::string_view text) {
  auto bad = [](const std::string& why) { return make_error(errc::invalid_request, "evidence: " + why); };
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return bad("not a JSON object");
  for (const auto& [k, v] : doc.items()) {
    if (k != "format" && k != "kind" && k != "cvm" && k != "nonce" && k != "report" && k != "cert_chain" &&
        k != "kx_public_key" && k != "sign_public_key")
      return bad(fmt::format("unknown key '{}'", k));
    if (!v.is_string()) return bad(k + " must be a string");
  }
  auto str = [&](const char* k) -> expected<std::string> {
    if (!doc.contains(k)) return bad(fmt::format("missing key '{}'", k));
    return doc[k].get<std::string>();
  };
  auto hex = [&](const char* k, size_t min, size_t max) -> expected<std::vector<uint8_t>> {
    auto s = str(k);
    if (!s) return s.error();
    auto b = crypto::from_hex(*s);
    if (!b) return bad(fmt::format("{} is not valid hex", k));
    if (b->size() < min || b->size() > max)
      return bad(min == max ? fmt::format("{} must be {} bytes, got {}", k, min, b->size())
                            : fmt::format("{} must be {} to {} bytes, got {}", k, min, max, b->size()));
    return std::move(*b);
  };
  saved_evidence e;
  auto format = str("format");
  if (!format) return format.error();
  if (*format != evidence_format)
    return bad(fmt::format("format '{}' is not '{}'", *format, evidence_format));
  auto kind = str("kind");
  if (!kind) return kind.error();
  if (*kind != "sim_snp" && *kind != "sev_snp")
    return bad(fmt::format("kind '{}' is not sim_snp or sev_snp", *kind));
  e.kind = *kind;
  auto cvm = str("cvm");
  if (!cvm) return cvm.error();
  e.cvm_id = *cvm;
  auto chain = str("cert_chain");
  if (!chain) return chain.error();
  e.cert_chain = *chain;
  auto report_b64 = str("report");
  if (!report_b64) return report_b64.error();
  auto report = crypto::base64_decode(*report_b64);
  if (!report) return bad("report is not valid base64");
  if (report->size() != 1184) return bad(fmt::format("report must be 1184 bytes, got {}", report->size()));
  e.report = std::move(*report);
  auto nonce = hex("nonce", 32, 64);
  if (!nonce) return nonce.error();
  e.nonce = std::move(*nonce);
  auto kx = hex("kx_public_key", 32, 32);
  if (!kx) return kx.error();
  e.kx_public_key = std::move(*kx);
  auto sign = hex("sign_public_key", 32, 32);
  if (!sign) return sign.error();
  e.sign_public_key = std::move(*sign);
  return e;
}

}  // namespace cove::cli

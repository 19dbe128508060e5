#include "cove/cli/evidence_file.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <tuple>

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
  if (e.vtpm) {
    json pcrs = json::object();
    for (const auto& [i, v] : e.vtpm->pcrs) pcrs[std::to_string(i)] = crypto::to_hex(v);
    doc["vtpm"] = {{"ak_public", crypto::base64_encode(e.vtpm->ak_public)},
                   {"ak_spki", crypto::base64_encode(e.vtpm->ak_spki)},
                   {"quote", crypto::base64_encode(e.vtpm->quote)},
                   {"signature", crypto::base64_encode(e.vtpm->signature)},
                   {"pcrs", std::move(pcrs)},
                   {"event_log", crypto::base64_encode(e.vtpm->event_log)}};
    if (!e.vtpm->ima_list.empty()) doc["vtpm"]["ima_list"] = crypto::base64_encode(e.vtpm->ima_list);
  }
  if (e.dice)
    doc["dice"] = {{"chain", e.dice->chain},
                   {"binding_signature", crypto::base64_encode(e.dice->binding_signature)}};
  return doc.dump(2) + "\n";
}

namespace {

/// The "vtpm" object: every key, base64 blobs of at most 1 MiB, PCRs "0".."23" -> 32-byte hex.
expected<saved_vtpm> parse_vtpm(const json& v) {
  auto bad = [](const std::string& why) {
    return make_error(errc::invalid_request, "evidence: vtpm." + why);
  };
  saved_vtpm out;
  for (const auto& [k, val] : v.items())
    if (k != "ak_public" && k != "ak_spki" && k != "quote" && k != "signature" && k != "pcrs" &&
        k != "event_log" && k != "ima_list")
      return bad(fmt::format("{}: unknown key", k));
  auto blob = [&](const char* k, std::vector<uint8_t>& dst, bool required) -> expected<void> {
    if (!v.contains(k)) return required ? bad(fmt::format("{}: missing", k)) : ok();
    if (!v[k].is_string()) return bad(fmt::format("{} must be a base64 string", k));
    auto b = crypto::base64_decode(v[k].get<std::string>());
    if (!b) return bad(fmt::format("{} is not valid base64", k));
    if (b->size() > (1u << 20)) return bad(fmt::format("{} is over 1 MiB", k));
    dst = std::move(*b);
    return ok();
  };
  for (auto [k, dst, req] :
       {std::tuple{"ak_public", &out.ak_public, true}, std::tuple{"ak_spki", &out.ak_spki, false},
        std::tuple{"quote", &out.quote, true}, std::tuple{"signature", &out.signature, true},
        std::tuple{"event_log", &out.event_log, false}, std::tuple{"ima_list", &out.ima_list, false}})
    if (auto r = blob(k, *dst, req); !r) return r.error();
  if (!v.contains("pcrs") || !v["pcrs"].is_object())
    return bad("pcrs: an object of \"<index>\": \"<hex>\" is required");
  for (const auto& [idx, hex] : v["pcrs"].items()) {
    uint32_t i = 0;
    bool digits = !idx.empty() && idx.size() <= 2 &&
                  std::all_of(idx.begin(), idx.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits) i = static_cast<uint32_t>(std::stoul(idx));
    if (!digits || i >= attest::tpm_pcr_count)
      return bad(fmt::format("pcrs: '{}' is not a PCR index (0-23)", idx));
    if (!hex.is_string()) return bad(fmt::format("pcrs.{} must be 32 bytes of hex", idx));
    auto b = crypto::from_hex(hex.get<std::string>());
    if (!b || b->size() != 32) return bad(fmt::format("pcrs.{} must be 32 bytes of hex", idx));
    out.pcrs[i] = std::move(*b);
  }
  return out;
}

/// The "dice" object: a PEM chain (at most 64 KiB) and a base64 signature (at most 512 bytes).
expected<saved_dice> parse_dice(const json& v) {
  auto bad = [](const std::string& why) {
    return make_error(errc::invalid_request, "evidence: dice." + why);
  };
  for (const auto& [k, val] : v.items())
    if (k != "chain" && k != "binding_signature") return bad(fmt::format("{}: unknown key", k));
  if (!v.contains("chain") || !v["chain"].is_string()) return bad("chain: a PEM string is required");
  if (!v.contains("binding_signature") || !v["binding_signature"].is_string())
    return bad("binding_signature: a base64 string is required");
  saved_dice out;
  out.chain = v["chain"].get<std::string>();
  if (out.chain.empty() || out.chain.size() > 64 * 1024) return bad("chain: empty or over 64 KiB");
  auto sig = crypto::base64_decode(v["binding_signature"].get<std::string>());
  if (!sig) return bad("binding_signature is not valid base64");
  if (sig->empty() || sig->size() > 512) return bad("binding_signature: empty or over 512 bytes");
  out.binding_signature = std::move(*sig);
  return out;
}

}  // namespace

expected<saved_evidence> evidence_from_json(std::string_view text) {
  auto bad = [](const std::string& why) { return make_error(errc::invalid_request, "evidence: " + why); };
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return bad("not a JSON object");
  for (const auto& [k, v] : doc.items()) {
    if (k != "format" && k != "kind" && k != "cvm" && k != "nonce" && k != "report" && k != "cert_chain" &&
        k != "kx_public_key" && k != "sign_public_key" && k != "vtpm" && k != "dice")
      return bad(fmt::format("unknown key '{}'", k));
    const bool object = k == "vtpm" || k == "dice";
    if (object ? !v.is_object() : !v.is_string())
      return bad(k + (object ? " must be an object" : " must be a string"));
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
  if (doc.contains("vtpm")) {
    auto vt = parse_vtpm(doc["vtpm"]);
    if (!vt) return vt.error();
    e.vtpm = std::move(*vt);
  }
  if (doc.contains("dice")) {
    auto d = parse_dice(doc["dice"]);
    if (!d) return d.error();
    e.dice = std::move(*d);
  }
  return e;
}

attest::agent_evidence agent_evidence_of(const saved_evidence& e) {
  attest::agent_evidence a{e.report,          e.cert_chain, e.kx_public_key,
                           e.sign_public_key, std::nullopt, std::nullopt};
  if (e.vtpm)
    a.vtpm =
        attest::agent_vtpm_evidence{e.vtpm->ak_public, e.vtpm->ak_spki,   e.vtpm->quote,   e.vtpm->signature,
                                    e.vtpm->pcrs,      e.vtpm->event_log, e.vtpm->ima_list};
  if (e.dice) a.dice = attest::agent_dice_evidence{e.dice->chain, e.dice->binding_signature};
  return a;
}

}  // namespace cove::cli

#include "cove/attest/policy.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace cove::attest {
namespace {

using json = nlohmann::json;

error bad(std::string msg) {
  return make_error(errc::invalid_request, "policy: " + std::move(msg));
}
error fail(std::string msg) {
  return make_error(errc::attestation_failed, std::move(msg));
}

expected<std::vector<uint8_t>> hex_field(const json& v, const std::string& key, std::size_t len,
                                         std::size_t alt_len = 0) {
  if (!v.is_string()) return bad(key + " must be a hex string");
  auto bytes = from_hex(v.get_ref<const std::string&>());
  if (!bytes) return bad(key + " is not valid hex");
  if (bytes->size() != len && (alt_len == 0 || bytes->size() != alt_len))
    return bad(key + " must be " + std::to_string(len) + " bytes, got " + std::to_string(bytes->size()));
  bytes->resize(len, 0);
  return std::move(*bytes);
}

expected<std::vector<std::vector<uint8_t>>> hex_list(const json& v, const std::string& key, std::size_t len,
                                                     std::size_t alt_len = 0) {
  if (!v.is_array()) return bad(key + " must be an array of hex strings");
  std::vector<std::vector<uint8_t>> out;
  for (const auto& e : v) {
    auto b = hex_field(e, key + "[]", len, alt_len);
    if (!b) return std::move(b).error();
    out.push_back(std::move(*b));
  }
  return out;
}

expected<uint64_t> uint_field(const json& v, const std::string& key, uint64_t max) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    return bad(key + " must be a non-negative integer");
  auto n = v.get<uint64_t>();
  if (n > max) return bad(key + " must be <= " + std::to_string(max));
  return n;
}

expected<bool> bool_field(const json& v, const std::string& key) {
  if (!v.is_boolean()) return bad(key + " must be true or false");
  return v.get<bool>();
}

// Reads a regular file of at most 1 MiB (so a policy cannot point us at /dev/zero or a FIFO).
expected<std::string> read_file(const std::filesystem::path& p) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(p, ec))
    return make_error(errc::not_found, "cannot read " + p.string());
  auto size = std::filesystem::file_size(p, ec);
  if (ec || size > (1u << 20)) return make_error(errc::too_large, p.string() + " is too large");
  std::ifstream in(p, std::ios::binary);
  if (!in) return make_error(errc::not_found, "cannot read " + p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

expected<void> parse_minimum_tcb(const json& v, snp_tcb_minimum& out) {
  if (!v.is_object()) return bad("minimum_tcb must be an object");
  for (const auto& [k, val] : v.items()) {
    uint8_t* dst = k == "bl"          ? &out.bl
                   : k == "tee"       ? &out.tee
                   : k == "snp"       ? &out.snp
                   : k == "microcode" ? &out.microcode
                   : k == "fmc"       ? &out.fmc
                                      : nullptr;
    if (dst == nullptr) return bad("unknown key minimum_tcb." + k);
    auto n = uint_field(val, "minimum_tcb." + k, 255);
    if (!n) return std::move(n).error();
    *dst = static_cast<uint8_t>(*n);
  }
  return ok();
}

expected<uint32_t> pcr_index(const std::string& text, const std::string& key) {
  uint32_t n = 0;
  if (text.empty() || text.size() > 2 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return bad(key + ": '" + text + "' is not a PCR index (0-23)");
  for (char c : text) n = n * 10 + static_cast<uint32_t>(c - '0');
  if (n >= tpm_pcr_count) return bad(key + ": '" + text + "' is not a PCR index (0-23)");
  return n;
}

/// `vtpm.ima`: {pcr, allow{"<path>": ["<64 hex>", ...]}, digests: ["<64 hex>"], allow_violations}.
expected<vtpm_policy::ima_section> parse_ima(const json& v, const std::string& where) {
  if (!v.is_object()) return bad(where + " must be an object");
  vtpm_policy::ima_section out;
  auto digest_list = [](const json& arr, const std::string& key,
                        std::vector<std::vector<uint8_t>>& into) -> expected<void> {
    if (!arr.is_array()) return bad(key + " must be an array of sha256 hex digests");
    for (const auto& e : arr) {
      auto b = hex_field(e, key + "[]", 32);
      if (!b) return std::move(b).error();
      into.push_back(std::move(*b));
    }
    return ok();
  };
  for (const auto& [k, val] : v.items()) {
    const std::string key = where + "." + k;
    if (k == "pcr") {
      auto n = uint_field(val, key, tpm_pcr_count - 1);
      if (!n) return std::move(n).error();
      out.pcr = static_cast<uint32_t>(*n);
    } else if (k == "allow") {
      if (!val.is_object()) return bad(key + " must be an object of \"<path>\": [\"<64 hex>\", ...]");
      for (const auto& [path, arr] : val.items()) {
        if (path.empty()) return bad(key + ": empty path");
        if (auto r = digest_list(arr, key + "." + path, out.allow.paths[path]); !r) return r.error();
      }
    } else if (k == "digests") {
      if (auto r = digest_list(val, key, out.allow.digests); !r) return r.error();
    } else if (k == "allow_violations") {
      auto b = bool_field(val, key);
      if (!b) return std::move(b).error();
      out.allow.allow_violations = *b;
    } else {
      return bad("unknown key " + key);
    }
  }
  return out;
}

expected<void> parse_vtpm(const json& v, vtpm_policy& out) {
  if (!v.is_object()) return bad("vtpm must be an object");
  for (const auto& [k, val] : v.items()) {
    const std::string key = "vtpm." + k;
    if (k == "required" || k == "require_event_log") {
      auto b = bool_field(val, key);
      if (!b) return std::move(b).error();
      (k == "required" ? out.required : out.require_event_log) = *b;
    } else if (k == "pcrs") {
      if (!val.is_object()) return bad(key + " must be an object of \"<index>\": \"<64 hex>\"");
      out.pcrs.clear();
      for (const auto& [idx, hex] : val.items()) {
        auto i = pcr_index(idx, key);
        if (!i) return std::move(i).error();
        auto b = hex_field(hex, key + "." + idx, 32);
        if (!b) return std::move(b).error();
        out.pcrs[*i] = std::move(*b);
      }
    } else if (k == "ak_types") {
      if (!val.is_array()) return bad(key + " must be an array of strings");
      out.ak_types.clear();
      for (const auto& e : val) {
        if (!e.is_string()) return bad(key + "[] must be a string");
        const auto& s = e.get_ref<const std::string&>();
        if (std::find(std::begin(vtpm_ak_type_names), std::end(vtpm_ak_type_names), s) ==
            std::end(vtpm_ak_type_names))
          return bad(key + ": unknown AK type '" + s.substr(0, 32) +
                     "' (known: ecc-p256, rsa-2048, rsa-3072, rsa-4096)");
        out.ak_types.push_back(s);
      }
    } else if (k == "event_log_pcrs") {
      if (!val.is_array()) return bad(key + " must be an array of PCR indexes");
      out.event_log_pcrs.clear();
      for (const auto& e : val) {
        auto n = uint_field(e, key + "[]", tpm_pcr_count - 1);
        if (!n) return std::move(n).error();
        auto i = static_cast<uint32_t>(*n);
        if (std::find(out.event_log_pcrs.begin(), out.event_log_pcrs.end(), i) == out.event_log_pcrs.end())
          out.event_log_pcrs.push_back(i);
      }
      std::sort(out.event_log_pcrs.begin(), out.event_log_pcrs.end());
    } else if (k == "ima") {
      auto ima = parse_ima(val, key);
      if (!ima) return std::move(ima).error();
      out.ima = std::move(*ima);
    } else {
      return bad("unknown key " + key);
    }
  }
  return ok();
}

/// `dice`: `required` plus a DICE policy (load_dice_policy_json) that must name a root.
expected<dice_evidence_policy> parse_dice(const json& v, const std::filesystem::path& base_dir) {
  if (!v.is_object()) return bad("dice must be an object");
  dice_evidence_policy out;
  json rest = v;
  if (auto it = rest.find("required"); it != rest.end()) {
    auto b = bool_field(*it, "dice.required");
    if (!b) return std::move(b).error();
    out.required = *b;
    rest.erase(it);
  }
  auto chain = load_dice_policy_json(rest.dump(), base_dir.empty() ? "." : base_dir.string());
  if (!chain) return bad("dice: " + chain.error().message);
  if (chain->trusted_roots_pem.empty())
    return bad("dice.trusted_roots: at least one trusted DICE root (PEM or file) is required");
  out.chain = std::move(*chain);
  return out;
}

json dice_to_json(const dice_evidence_policy& d) {
  json layers = json::array();
  for (const auto& l : d.chain.layers) {
    json e = json::object();
    if (l.index) e["index"] = *l.index;
    if (l.name) e["name"] = *l.name;
    json fw = json::array();
    for (const auto& f : l.allowed_fwids) fw.push_back(to_hex(f));
    e["fwids"] = std::move(fw);
    if (l.min_svn) e["min_svn"] = *l.min_svn;
    json flags = json::array();
    for (const char* f : {"not_configured", "not_secure", "recovery", "debug"})
      if (l.allowed_flags & *dice_flag_from_name(f)) flags.push_back(f);
    e["allowed_flags"] = std::move(flags);
    layers.push_back(std::move(e));
  }
  return {{"required", d.required},
          {"trusted_roots", d.chain.trusted_roots_pem},
          {"allowed_signature_algorithms", d.chain.allowed_signature_algorithms},
          {"layers", std::move(layers)}};
}

expected<snp_policy> parse(const json& doc, const std::filesystem::path& base_dir) {
  if (!doc.is_object()) return bad("top level must be an object");
  snp_policy p;
  for (const auto& [key, v] : doc.items()) {
    if (key == "measurements") {
      auto l = hex_list(v, key, 48);
      if (!l) return std::move(l).error();
      p.measurements = std::move(*l);
    } else if (key == "host_data") {
      auto b = hex_field(v, key, 32);
      if (!b) return std::move(b).error();
      p.host_data = std::move(*b);
    } else if (key == "allow_debug" || key == "allow_smt" || key == "allow_migration_agent") {
      auto b = bool_field(v, key);
      if (!b) return std::move(b).error();
      (key == "allow_debug" ? p.allow_debug
       : key == "allow_smt" ? p.allow_smt
                            : p.allow_migration_agent) = *b;
    } else if (key == "minimum_tcb") {
      if (auto r = parse_minimum_tcb(v, p.minimum_tcb); !r) return std::move(r).error();
    } else if (key == "chip_ids") {
      auto l = hex_list(v, key, 64, 8);
      if (!l) return std::move(l).error();
      p.chip_ids = std::move(*l);
    } else if (key == "product") {
      if (!v.is_string()) return bad("product must be a string");
      const auto& s = v.get_ref<const std::string&>();
      if (s == "any")
        p.product.reset();
      else if (s == "Milan")
        p.product = snp_product::milan;
      else if (s == "Genoa")
        p.product = snp_product::genoa;
      else if (s == "Turin")
        p.product = snp_product::turin;
      else
        return bad("product must be one of Milan, Genoa, Turin, any; got '" + s + "'");
    } else if (key == "minimum_report_version" || key == "minimum_guest_svn" || key == "vmpl") {
      auto n = uint_field(v, key, key == "vmpl" ? 3 : UINT32_MAX);
      if (!n) return std::move(n).error();
      if (key == "vmpl")
        p.vmpl = static_cast<uint32_t>(*n);
      else if (key == "minimum_guest_svn")
        p.minimum_guest_svn = static_cast<uint32_t>(*n);
      else
        p.minimum_report_version = static_cast<uint32_t>(*n);
    } else if (key == "trusted_roots") {
      if (!v.is_array()) return bad("trusted_roots must be an array of PEM strings or file paths");
      for (const auto& e : v) {
        if (!e.is_string()) return bad("trusted_roots[] must be a string");
        const auto& s = e.get_ref<const std::string&>();
        std::string pem;
        if (s.find("-----BEGIN") != std::string::npos) {
          pem = s;
        } else {
          std::filesystem::path path(s);
          if (path.is_relative() && !base_dir.empty()) path = base_dir / path;
          auto content = read_file(path);
          if (!content) return bad("trusted_roots: " + content.error().message);
          pem = std::move(*content);
        }
        if (auto certs = split_pem_bundle(pem); !certs)
          return bad("trusted_roots: '" + s.substr(0, 64) + "': " + certs.error().message);
        p.trusted_roots.push_back(std::move(pem));
      }
    } else if (key == "crls") {
      if (!v.is_array()) return bad("crls must be an array of PEM strings or file paths");
      for (const auto& e : v) {
        if (!e.is_string()) return bad("crls[] must be a string");
        const auto& s = e.get_ref<const std::string&>();
        std::string text;
        if (s.find("-----BEGIN") != std::string::npos) {
          text = s;
        } else {
          std::filesystem::path path(s);
          if (path.is_relative() && !base_dir.empty()) path = base_dir / path;
          auto content = read_file(path);
          if (!content) return bad("crls: " + content.error().message);
          text = std::move(*content);
        }
        auto pem = crls_to_pem(text);
        if (!pem) return bad("crls: '" + s.substr(0, 64) + "': " + pem.error().message);
        p.crls.push_back(std::move(*pem));
      }
    } else if (key == "vtpm") {
      if (auto r = parse_vtpm(v, p.vtpm); !r) return std::move(r).error();
    } else if (key == "dice") {
      auto d = parse_dice(v, base_dir);
      if (!d) return std::move(d).error();
      p.dice = std::move(*d);
    } else {
      return bad("unknown key '" + key + "'");
    }
  }
  return p;
}

std::string list_hex(const std::vector<std::vector<uint8_t>>& l) {
  std::string s = "[";
  for (std::size_t i = 0; i < l.size(); ++i) s += (i ? ", " : "") + to_hex(l[i]);
  return s + "]";
}

std::string hex64(uint64_t v) {
  static constexpr char d[] = "0123456789abcdef";
  std::string s = "0x";
  bool started = false;
  for (int i = 60; i >= 0; i -= 4) {
    int n = static_cast<int>((v >> i) & 0xF);
    if (n != 0 || started || i == 0) {
      s.push_back(d[n]);
      started = true;
    }
  }
  return s;
}

}  // namespace

expected<snp_policy> load_inline_policy_json(std::string_view text) {
  if (text.empty()) return make_error(errc::invalid_request, "missing");
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return make_error(errc::invalid_request, "not a JSON object");
  auto inline_only = [](const json& obj, std::string_view name) -> expected<void> {
    if (auto it = obj.find("trusted_roots"); it != obj.end() && it->is_array())
      for (const auto& r : *it)
        if (!r.is_string() || r.get_ref<const std::string&>().find("-----BEGIN") == std::string::npos)
          return make_error(errc::invalid_request, std::string(name) +
                                                       " must be inline PEM certificates (the service does "
                                                       "not read files)");
    return ok();
  };
  if (auto r = inline_only(j, "trusted_roots"); !r) return r.error();
  if (auto it = j.find("crls"); it != j.end() && it->is_array())
    for (const auto& r : *it)
      if (!r.is_string() || r.get_ref<const std::string&>().find("-----BEGIN") == std::string::npos)
        return make_error(errc::invalid_request,
                          "crls must be inline PEM CRLs (the service does not read files)");
  if (auto it = j.find("dice"); it != j.end() && it->is_object())
    if (auto r = inline_only(*it, "dice.trusted_roots"); !r) return r.error();
  return load_policy_json(text);
}

expected<snp_policy> load_policy_json(std::string_view text, const std::filesystem::path& base_dir) {
  try {
    json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return bad("not valid JSON");
    return parse(doc, base_dir);
  } catch (const std::exception& e) {
    return bad(std::string("invalid: ") + e.what());
  }
}

expected<snp_policy> load_policy_file(const std::filesystem::path& path) {
  auto text = read_file(path);
  if (!text) return std::move(text).error();
  return load_policy_json(*text, path.parent_path());
}

std::string policy_to_json(const snp_policy& p, int indent) {
  json doc = json::object();
  json ms = json::array();
  for (const auto& m : p.measurements) ms.push_back(to_hex(m));
  doc["measurements"] = std::move(ms);
  if (p.host_data) doc["host_data"] = to_hex(*p.host_data);
  doc["allow_debug"] = p.allow_debug;
  doc["allow_smt"] = p.allow_smt;
  doc["allow_migration_agent"] = p.allow_migration_agent;
  json tcb = {{"bl", p.minimum_tcb.bl},
              {"tee", p.minimum_tcb.tee},
              {"snp", p.minimum_tcb.snp},
              {"microcode", p.minimum_tcb.microcode},
              {"fmc", p.minimum_tcb.fmc}};
  doc["minimum_tcb"] = std::move(tcb);
  json chips = json::array();
  for (const auto& c : p.chip_ids) chips.push_back(to_hex(c));
  doc["chip_ids"] = std::move(chips);
  doc["product"] = !p.product                         ? "any"
                   : *p.product == snp_product::milan ? "Milan"
                   : *p.product == snp_product::genoa ? "Genoa"
                   : *p.product == snp_product::turin ? "Turin"
                                                      : "any";
  doc["minimum_report_version"] = p.minimum_report_version;
  doc["minimum_guest_svn"] = p.minimum_guest_svn;
  if (p.vmpl) doc["vmpl"] = *p.vmpl;
  doc["trusted_roots"] = p.trusted_roots;
  if (!p.crls.empty()) doc["crls"] = p.crls;
  if (!p.vtpm.is_default()) {
    json pcrs = json::object();
    for (const auto& [i, v] : p.vtpm.pcrs) pcrs[std::to_string(i)] = to_hex(v);
    doc["vtpm"] = {{"required", p.vtpm.required},
                   {"pcrs", std::move(pcrs)},
                   {"ak_types", p.vtpm.ak_types},
                   {"event_log_pcrs", p.vtpm.event_log_pcrs},
                   {"require_event_log", p.vtpm.require_event_log}};
    if (p.vtpm.ima) {
      json allow = json::object();
      for (const auto& [path, ds] : p.vtpm.ima->allow.paths) {
        json arr = json::array();
        for (const auto& d : ds) arr.push_back(to_hex(d));
        allow[path] = std::move(arr);
      }
      json digests = json::array();
      for (const auto& d : p.vtpm.ima->allow.digests) digests.push_back(to_hex(d));
      doc["vtpm"]["ima"] = {{"pcr", p.vtpm.ima->pcr},
                            {"allow", std::move(allow)},
                            {"digests", std::move(digests)},
                            {"allow_violations", p.vtpm.ima->allow.allow_violations}};
    }
  }
  if (p.dice) doc["dice"] = dice_to_json(*p.dice);
  return doc.dump(indent);
}

verify_options make_verify_options(const snp_policy& policy) {
  verify_options o;
  o.trusted_ark_pems = policy.trusted_roots;
  o.crls = policy.crls;
  return o;
}

expected<void> check_policy(const snp_report& r, const snp_policy& p,
                            std::span<const uint8_t> expected_report_data) {
  if (expected_report_data.size() > r.report_data.size())
    return make_error(errc::invalid_request, "report_data: expected value is longer than 64 bytes");
  if (!expected_report_data.empty()) {
    std::array<uint8_t, 64> want{};
    std::copy(expected_report_data.begin(), expected_report_data.end(), want.begin());
    if (want != r.report_data)
      return fail("report_data: got " + to_hex(r.report_data) + ", expected " + to_hex(want));
  }
  if (r.version < p.minimum_report_version)
    return fail("report_version: got " + std::to_string(r.version) + ", expected at least " +
                std::to_string(p.minimum_report_version));
  if (!p.measurements.empty() &&
      std::none_of(p.measurements.begin(), p.measurements.end(), [&](const auto& m) {
        return std::equal(m.begin(), m.end(), r.measurement.begin(), r.measurement.end());
      }))
    return fail("measurement: got " + to_hex(r.measurement) + ", expected one of " +
                list_hex(p.measurements));
  if (p.host_data &&
      !std::equal(p.host_data->begin(), p.host_data->end(), r.host_data.begin(), r.host_data.end()))
    return fail("host_data: got " + to_hex(r.host_data) + ", expected " + to_hex(*p.host_data));
  if (!p.allow_debug && r.debug_allowed())
    return fail("allow_debug: guest policy " + hex64(r.policy) +
                " allows debugging (bit 19), expected not allowed");
  if (!p.allow_smt && r.smt_allowed())
    return fail("allow_smt: guest policy " + hex64(r.policy) + " allows SMT (bit 16), expected not allowed");
  if (!p.allow_migration_agent && r.migration_agent_allowed())
    return fail("allow_migration_agent: guest policy " + hex64(r.policy) +
                " allows a migration agent (bit 18), expected not allowed");
  if (p.vmpl && r.vmpl != *p.vmpl)
    return fail("vmpl: got " + std::to_string(r.vmpl) + ", expected " + std::to_string(*p.vmpl));
  if (r.guest_svn < p.minimum_guest_svn)
    return fail("guest_svn: got " + std::to_string(r.guest_svn) + ", expected at least " +
                std::to_string(p.minimum_guest_svn));
  if (p.product && r.product != *p.product)
    return fail("product: got " + std::string(to_string(r.product)) + ", expected " +
                std::string(to_string(*p.product)));
  const auto& m = p.minimum_tcb;
  const bool turin = r.product == snp_product::turin;
  for (auto [name, raw] :
       {std::pair{"reported_tcb", r.reported_tcb}, std::pair{"committed_tcb", r.committed_tcb},
        std::pair{"current_tcb", r.current_tcb}}) {
    const tcb_version t = decode_tcb(raw, r.product);
    struct cmp {
      const char* field;
      uint8_t got, min;
    };
    const cmp cmps[] = {{"bl", t.bl, m.bl},
                        {"tee", t.tee, m.tee},
                        {"snp", t.snp, m.snp},
                        {"microcode", t.microcode, m.microcode},
                        {"fmc", t.fmc, turin ? m.fmc : uint8_t{0}}};
    for (const auto& c : cmps)
      if (c.got < c.min)
        return fail(std::string("minimum_tcb.") + c.field + ": " + name + " has " + c.field + "=" +
                    std::to_string(c.got) + ", expected at least " + std::to_string(c.min));
  }
  if (!p.chip_ids.empty() && std::none_of(p.chip_ids.begin(), p.chip_ids.end(), [&](const auto& c) {
        return std::equal(c.begin(), c.end(), r.chip_id.begin(), r.chip_id.end());
      }))
    return fail("chip_id: got " + to_hex(r.chip_id) + ", expected one of " + list_hex(p.chip_ids));
  return ok();
}

}  // namespace cove::attest

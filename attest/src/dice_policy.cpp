// DICE appraisal policy from JSON.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cove/attest/dice.hpp"
#include "cove/attest/snp_report.hpp"

namespace cove::attest {
namespace {

using json = nlohmann::json;

error bad(std::string msg) {
  return make_error(errc::invalid_request, "DICE policy: " + std::move(msg));
}

expected<std::string> read_small_file(const std::filesystem::path& p) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(p, ec))
    return make_error(errc::not_found, "DICE policy: cannot read " + p.string());
  auto size = std::filesystem::file_size(p, ec);
  if (ec || size > (1u << 20))
    return make_error(errc::too_large, "DICE policy: " + p.string() + " is too large");
  std::ifstream in(p, std::ios::binary);
  if (!in) return make_error(errc::not_found, "DICE policy: cannot read " + p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

expected<std::vector<std::string>> string_list(const json& v, const std::string& key) {
  if (!v.is_array()) return bad(key + " must be a list of strings");
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (!e.is_string()) return bad(key + " must be a list of strings");
    out.push_back(e.get<std::string>());
  }
  return out;
}

expected<dice_layer_policy> parse_layer(const json& v, std::size_t k) {
  const std::string where = "layers[" + std::to_string(k) + "]";
  if (!v.is_object()) return bad(where + " must be an object");
  dice_layer_policy p;
  for (const auto& [key, val] : v.items()) {
    const std::string name = where + "." + key;
    if (key == "index") {
      if (!val.is_number_unsigned() || val.get<uint64_t>() >= 16)
        return bad(name + " must be an integer 0..15");
      p.index = static_cast<std::size_t>(val.get<uint64_t>());
    } else if (key == "name") {
      if (!val.is_string() || val.get<std::string>().empty())
        return bad(name + " must be a non-empty string");
      p.name = val.get<std::string>();
    } else if (key == "fwids") {
      auto l = string_list(val, name);
      if (!l) return std::move(l).error();
      for (const auto& h : *l) {
        auto b = from_hex(h);
        if (!b || (b->size() != 32 && b->size() != 48))
          return bad(name + " entries must be hex SHA-256 (32 B) or SHA-384 (48 B) digests");
        p.allowed_fwids.push_back(std::move(*b));
      }
    } else if (key == "min_svn") {
      if (!val.is_number_integer()) return bad(name + " must be an integer");
      p.min_svn = val.get<int64_t>();
    } else if (key == "allowed_flags") {
      auto l = string_list(val, name);
      if (!l) return std::move(l).error();
      for (const auto& f : *l) {
        auto bit = dice_flag_from_name(f);
        if (!bit)
          return bad(name + ": unknown flag '" + f + "' (not_configured, not_secure, recovery, debug)");
        p.allowed_flags |= *bit;
      }
    } else {
      return bad("unknown key " + name);
    }
  }
  if (!p.index && !p.name) return bad(where + " needs index or name");
  return p;
}

}  // namespace

expected<dice_policy> load_dice_policy_json(std::string_view text, const std::string& base_dir) {
  json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) return bad("not valid JSON");
  if (!j.is_object()) return bad("must be a JSON object");
  dice_policy p;
  for (const auto& [key, val] : j.items()) {
    if (key == "trusted_roots") {
      auto l = string_list(val, key);
      if (!l) return std::move(l).error();
      for (const auto& r : *l) {
        if (r.find("-----BEGIN") != std::string::npos) {
          p.trusted_roots_pem.push_back(r);
          continue;
        }
        std::filesystem::path path(r);
        if (path.is_relative()) path = std::filesystem::path(base_dir) / path;
        auto content = read_small_file(path);
        if (!content) return std::move(content).error();
        p.trusted_roots_pem.push_back(std::move(*content));
      }
    } else if (key == "layers") {
      if (!val.is_array()) return bad("layers must be a list");
      for (std::size_t k = 0; k < val.size(); ++k) {
        auto l = parse_layer(val[k], k);
        if (!l) return std::move(l).error();
        p.layers.push_back(std::move(*l));
      }
    } else if (key == "allowed_signature_algorithms") {
      auto l = string_list(val, key);
      if (!l) return std::move(l).error();
      for (const auto& a : *l)
        if (a != "ecdsa-p256-sha256" && a != "ecdsa-p384-sha384" && a != "ed25519")
          return bad("allowed_signature_algorithms: unknown algorithm '" + a +
                     "' (ecdsa-p256-sha256, ecdsa-p384-sha384, ed25519)");
      p.allowed_signature_algorithms = std::move(*l);
    } else {
      return bad("unknown key " + key);
    }
  }
  return p;
}

}  // namespace cove::attest

// `cove policy from-measure` / `cove policy show`.
#include "cove/cli/policy_cmd.hpp"

#include <fmt/format.h>

#include <charconv>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cove/attest/policy.hpp"
#include "cove/attest/snp_report.hpp"
#include "cove/cli/measure_cmd.hpp"

namespace cove::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

[[noreturn]] void fail(const error& e) {
  std::cerr << "cove: " << e.to_string() << '\n';
  throw CLI::RuntimeError(1);
}

expected<std::string> read_text(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return make_error(errc::not_found, path.string() + ": no such file");
  if (fs::file_size(path, ec) > (1u << 20))
    return make_error(errc::too_large, path.string() + ": over 1 MiB");
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error(errc::not_found, path.string() + ": cannot read");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// Every key of snp_policy with its default, overlaid by `raw`'s keys (which the policy
/// loader has already accepted). Relative trusted_roots paths become absolute against
/// base_dir so the result stays valid wherever it is written.
expected<json> effective_policy(const std::string& raw_text, const fs::path& base_dir) {
  json doc = json::parse(attest::policy_to_json(attest::snp_policy{}));
  if (raw_text.empty()) return doc;
  auto loaded = attest::load_policy_json(raw_text, base_dir);
  if (!loaded) return std::move(loaded).error();
  json raw = json::parse(raw_text);
  for (const auto& [k, v] : raw.items()) {
    if (k == "minimum_tcb") {
      for (const auto& [field, n] : v.items()) doc[k][field] = n;
    } else if (k == "trusted_roots") {
      json roots = json::array();
      for (const auto& r : v) {
        const auto& s = r.get_ref<const std::string&>();
        if (s.find("-----BEGIN") == std::string::npos && fs::path(s).is_relative() && !base_dir.empty())
          roots.push_back(fs::absolute(base_dir / s).lexically_normal().string());
        else
          roots.push_back(s);
      }
      doc[k] = std::move(roots);
    } else {
      doc[k] = v;
    }
  }
  return doc;
}

}  // namespace

expected<std::string> policy_from_measurement(std::span<const uint8_t> measurement,
                                              const std::string& base_json, const fs::path& base_dir,
                                              const std::vector<std::string>& extra_roots,
                                              std::optional<uint64_t> guest_policy) {
  if (measurement.size() != 48)
    return make_error(errc::invalid_request,
                      fmt::format("measurement: {} bytes; an SEV-SNP policy needs a 48-byte launch digest",
                                  measurement.size()));
  auto doc = effective_policy(base_json, base_dir);
  if (!doc) return std::move(doc).error();
  (*doc)["measurements"] = json::array({attest::to_hex(measurement)});
  if (guest_policy) {
    json raw = base_json.empty() ? json::object() : json::parse(base_json);
    struct bit {
      const char* key;
      int n;
      const char* what;
    };
    for (const auto& b :
         {bit{"allow_debug", 19, "debugging"}, bit{"allow_migration_agent", 18, "a migration agent"},
          bit{"allow_smt", 16, "SMT"}}) {
      const bool set = ((*guest_policy >> b.n) & 1u) != 0;
      if (set && raw.contains(b.key) && raw[b.key] == false)
        return make_error(
            errc::invalid_request,
            fmt::format("the base sets {} false, but the guest policy {:#x} allows {} (bit {}): the "
                        "policy would refuse its own guest",
                        b.key, *guest_policy, b.what, b.n));
      (*doc)[b.key] = set;
    }
  }
  for (const auto& r : extra_roots)
    (*doc)["trusted_roots"].push_back(fs::absolute(r).lexically_normal().string());
  auto text = doc->dump(2);
  if (auto check = attest::load_policy_json(text); !check) return std::move(check).error();
  return text + "\n";
}

void add_policy_command(CLI::App& app, const bool& json_out) {
  auto* pol = app.add_subcommand("policy", "Build and check SEV-SNP attestation policies");
  pol->require_subcommand(1);

  auto* fm = pol->add_subcommand(
      "from-measure",
      "Compute the launch digest (same flags as 'cove measure') and write a policy expecting it");
  auto flags = add_measure_flags(*fm, {"snp", "snp:svsm"});
  struct fm_args {
    std::string base, out, guest_policy;
    std::vector<std::string> roots;
  };
  auto a = std::make_shared<fm_args>();
  fm->add_option("--base", a->base, "Policy JSON whose other fields are kept (default: secure defaults)")
      ->check(CLI::ExistingFile);
  fm->add_option("--trusted-root", a->roots, "Trusted ARK PEM file to add to trusted_roots (repeatable)")
      ->check(CLI::ExistingFile);
  fm->add_option("-o,--output", a->out, "Write the policy here (default: stdout)");
  fm->add_option("--guest-policy", a->guest_policy,
                 "SNP guest policy the guest launches with (hex or decimal): sets allow_debug, "
                 "allow_migration_agent and allow_smt from its bits 19, 18, 16. With --igvm it is the file's "
                 "(IGVM_VHT_GUEST_POLICY); a different value is an error");
  fm->callback([flags, a] {
    std::optional<uint64_t> igvm_policy;
    auto digest = compute_measurement(*flags, &igvm_policy);
    std::optional<uint64_t> guest_policy = igvm_policy;
    if (!a->guest_policy.empty()) {
      const auto& t = a->guest_policy;
      const bool hex = t.starts_with("0x") || t.starts_with("0X");
      uint64_t v = 0;
      auto first = t.data() + (hex ? 2 : 0), last = t.data() + t.size();
      auto [p, ec] = std::from_chars(first, last, v, hex ? 16 : 10);
      if (first == last || ec != std::errc() || p != last)
        throw CLI::ValidationError(fmt::format("--guest-policy: '{}' is not a number", t));
      if (igvm_policy && *igvm_policy != v)
        throw CLI::ValidationError(
            fmt::format("--guest-policy {:#x} conflicts with the IGVM file's guest policy {:#x} "
                        "(IGVM_VHT_GUEST_POLICY): drop "
                        "the flag, or rebuild the file with that policy",
                        v, *igvm_policy));
      guest_policy = v;
    }
    std::string base;
    fs::path base_dir;
    if (!a->base.empty()) {
      auto t = read_text(a->base);
      if (!t) fail(t.error());
      base = std::move(*t);
      base_dir = fs::path(a->base).parent_path();
      if (base_dir.empty()) base_dir = ".";
    }
    auto text = policy_from_measurement(digest, base, base_dir, a->roots, guest_policy);
    if (!text) {
      auto e = text.error();
      if (!a->base.empty()) e.message = a->base + ": " + e.message;
      fail(e);
    }
    if (a->out.empty()) {
      std::cout << *text << std::flush;
      return;
    }
    auto tmp = a->out + ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      f << *text;
      if (!f.flush()) fail(make_error(errc::internal, "cannot write " + tmp));
    }
    std::error_code ec;
    fs::rename(tmp, a->out, ec);
    if (ec) fail(make_error(errc::internal, fmt::format("cannot write {}: {}", a->out, ec.message())));
    std::cerr << fmt::format("policy expecting measurement {}{} written to {}\n", attest::to_hex(digest),
                             guest_policy ? fmt::format(" and guest policy {:#x}", *guest_policy) : "",
                             a->out);
  });

  auto* show =
      pol->add_subcommand("show", "Check a policy file and print it with every default made explicit");
  auto file = std::make_shared<std::string>();
  show->add_option("FILE", *file, "Policy JSON")->required();
  show->callback([file, &json_out] {
    auto t = read_text(*file);
    if (!t) fail(t.error());
    auto dir = fs::path(*file).parent_path();
    auto doc = effective_policy(*t, dir.empty() ? fs::path(".") : dir);
    if (!doc) {
      auto e = doc.error();
      e.message = *file + ": " + e.message;
      fail(e);
    }
    std::cout << doc->dump(json_out ? -1 : 2) << '\n' << std::flush;
  });
}

}  // namespace cove::cli

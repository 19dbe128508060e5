#include "cove/cli/validate_cmd.hpp"

#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cove/attest/policy.hpp"
#include "cove/attest/snp_report.hpp"
#include "cove/attest/verify.hpp"
#include "cove/crypto/encoding.hpp"

namespace cove::cli {

namespace {

using json = nlohmann::json;

struct validate_args {
  std::string mode = "snp";
  std::string report, vcek, chain, policy, ark, measurement, report_data;
};

[[noreturn]] void fail(const error& e, bool json_out) {
  if (json_out)
    std::cout
        << json{{"valid", false}, {"error", std::string(to_string(e.code))}, {"message", e.message}}.dump()
        << '\n';
  else
    std::cerr << "cove: " << e.to_string() << '\n';
  throw CLI::RuntimeError(1);
}

expected<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error(errc::not_found, path + ": cannot read");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<uint8_t> bytes_of(const std::string& s) {
  return {s.begin(), s.end()};
}

json report_json(const attest::snp_report& r) {
  auto hex = [](auto const& a) { return crypto::to_hex(std::span<const uint8_t>(a.data(), a.size())); };
  return {{"version", r.version},
          {"product", std::string(attest::to_string(r.product))},
          {"guest_svn", r.guest_svn},
          {"policy", fmt::format("{:#x}", r.policy)},
          {"debug_allowed", r.debug_allowed()},
          {"smt_allowed", r.smt_allowed()},
          {"migration_agent_allowed", r.migration_agent_allowed()},
          {"vmpl", r.vmpl},
          {"family_id", hex(r.family_id)},
          {"image_id", hex(r.image_id)},
          {"report_data", hex(r.report_data)},
          {"measurement", hex(r.measurement)},
          {"host_data", hex(r.host_data)},
          {"id_key_digest", hex(r.id_key_digest)},
          {"author_key_digest", hex(r.author_key_digest)},
          {"report_id", hex(r.report_id)},
          {"chip_id", hex(r.chip_id)},
          {"signing_key", r.signing_key() == 0   ? "vcek"
                          : r.signing_key() == 1 ? "vlek"
                                                 : "none"},
          {"reported_tcb", attest::to_string(r.reported(), r.product)},
          {"current_tcb", attest::to_string(r.current(), r.product)},
          {"committed_tcb", attest::to_string(r.committed(), r.product)},
          {"launch_tcb", attest::to_string(r.launch(), r.product)},
          {"cpuid", fmt::format("family {:#x} model {:#x} stepping {:#x}", r.cpuid_fam_id, r.cpuid_mod_id,
                                r.cpuid_step)},
          {"current_version", fmt::format("{}.{}.{}", r.current_major, r.current_minor, r.current_build)}};
}

void run_validate(const validate_args& a, bool json_out) {
  if (a.mode != "snp")
    fail(make_error(errc::invalid_request,
                    fmt::format("--mode {}: offline validation of this evidence kind is not implemented yet",
                                a.mode)),
         json_out);
  auto take = [&](auto r) {
    if (!r) fail(r.error(), json_out);
    return std::move(*r);
  };
  auto report = bytes_of(take(read_file(a.report)));
  // The VCEK may be DER or PEM.
  auto vcek_text = take(read_file(a.vcek));
  std::vector<uint8_t> vcek = vcek_text.find("-----BEGIN") != std::string::npos
                                  ? take(attest::pem_to_der(vcek_text))
                                  : bytes_of(vcek_text);
  auto chain = take(read_file(a.chain));

  attest::snp_policy policy;
  if (!a.policy.empty()) {
    policy = take(attest::load_policy_file(a.policy));
  } else {
    // No policy file: the ARK to trust must still be named explicitly.
    policy.trusted_roots.push_back(take(read_file(a.ark)));
  }
  if (!a.measurement.empty()) {
    auto m = take(crypto::from_hex(a.measurement));
    if (m.size() != 48)
      fail(make_error(errc::invalid_request, "--measurement: 48 bytes (96 hex digits)"), json_out);
    policy.measurements = {m};
  }
  std::vector<uint8_t> report_data;
  if (!a.report_data.empty()) {
    report_data = take(crypto::from_hex(a.report_data));
    if (report_data.size() != 64)
      fail(make_error(errc::invalid_request, "--report-data: 64 bytes (128 hex digits)"), json_out);
  }
  auto verified = take(attest::verify_snp_evidence(report, vcek, chain, attest::make_verify_options(policy)));
  if (auto p = attest::check_policy(verified, policy, report_data); !p)
    fail(make_error(errc::attestation_failed, p.error().message), json_out);
  if (json_out) {
    std::cout << json{{"valid", true}, {"report", report_json(verified)}}.dump() << '\n';
  } else {
    std::cout << fmt::format("valid: SEV-SNP report v{} ({}), measurement {}, reported TCB {}\n",
                             verified.version, attest::to_string(verified.product),
                             crypto::to_hex(std::span<const uint8_t>(verified.measurement)),
                             attest::to_string(verified.reported(), verified.product));
  }
}

}  // namespace

void add_validate_command(CLI::App& attestation, const bool& json_out) {
  auto a = std::make_shared<validate_args>();
  auto* v = attestation.add_subcommand(
      "validate",
      "Verify saved evidence offline: signature, AMD chain, TCB binding and policy (exit 0 only if valid)");
  v->add_option("--mode", a->mode, "snp (vtpm, snp-vtpm and dice: not yet)")
      ->capture_default_str()
      ->check(CLI::IsMember({"snp", "vtpm", "snp-vtpm", "dice"}));
  v->add_option("--report", a->report, "Attestation report (1184 bytes)")
      ->required()
      ->check(CLI::ExistingFile);
  v->add_option("--vcek", a->vcek, "VCEK certificate (DER or PEM)")->required()->check(CLI::ExistingFile);
  v->add_option("--chain", a->chain, "ASK + ARK bundle (PEM, any order)")
      ->required()
      ->check(CLI::ExistingFile);
  auto* pol =
      v->add_option("--policy", a->policy, "Policy JSON (attest/README.md)")->check(CLI::ExistingFile);
  auto* ark = v->add_option("--ark", a->ark, "Trusted ARK (PEM) when no --policy names one")
                  ->check(CLI::ExistingFile);
  pol->excludes(ark);
  v->add_option("--measurement", a->measurement, "Expected launch measurement (hex); overrides the policy's");
  v->add_option("--report-data", a->report_data, "Expected report_data (hex, 64 bytes)");
  v->callback([a, &json_out] {
    if (a->policy.empty() && a->ark.empty())
      throw CLI::ValidationError("--policy or --ark: name the AMD root (ARK) you trust");
    run_validate(*a, json_out);
  });
}

}  // namespace cove::cli

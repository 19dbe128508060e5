// `cove attestation validate --mode snp|vtpm|snp-vtpm|dice`: offline verification.
#include "cove/cli/validate_cmd.hpp"

#include <fmt/format.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>

#include "cove/attest/collateral.hpp"
#include "cove/attest/dice.hpp"
#include "cove/attest/evidence.hpp"
#include "cove/attest/policy.hpp"
#include "cove/attest/snp_report.hpp"
#include "cove/attest/verify.hpp"
#include "cove/attest/vtpm_evidence.hpp"
#include "cove/cli/evidence_file.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/keys.hpp"
#include "cove/crypto/statements.hpp"

namespace cove::cli {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using bytes = std::vector<uint8_t>;

/// Opt-in AMD KDS fetching for a --collateral directory.
struct kds_args {
  bool enabled = false;
  std::string url{attest::kds_default_url};
  int timeout = 30, deadline = 120, attempts = 5;
};

void add_kds_options(CLI::App& cmd, kds_args& k, bool with_switch) {
  CLI::Option* sw = nullptr;
  if (with_switch)
    sw = cmd.add_flag("--kds", k.enabled,
                      "With --collateral: fetch a missing VCEK / ASK+ARK chain from AMD KDS (validated, then "
                      "filed into the directory). Off by default: nothing is fetched without it");
  auto* url =
      cmd.add_option("--kds-url", k.url,
                     "KDS base URL (https; http:// only for a non-default URL such as a local mirror)")
          ->capture_default_str();
  auto* t = cmd.add_option("--kds-timeout", k.timeout, "Seconds per KDS request")
                ->capture_default_str()
                ->check(CLI::Range(1, 3600));
  auto* d = cmd.add_option("--kds-deadline", k.deadline,
                           "Seconds for all attempts of one file, Retry-After and backoff waits included")
                ->capture_default_str()
                ->check(CLI::Range(1, 86400));
  auto* n =
      cmd.add_option("--kds-attempts", k.attempts, "Attempts per file (429/503/transport errors retried)")
          ->capture_default_str()
          ->check(CLI::Range(1, 20));
  if (sw != nullptr)
    for (auto* o : {url, t, d, n}) o->needs(sw);
}

expected<std::shared_ptr<attest::collateral_provider>> make_kds(const kds_args& k,
                                                                attest::retry_policy& retry) {
  attest::kds_options o;
  o.base_url = k.url;
  o.timeout = std::chrono::seconds(k.timeout);
  auto p = attest::kds_provider::make(std::move(o));
  if (!p) return std::move(p).error();
  retry.max_attempts = k.attempts;
  retry.deadline = std::chrono::seconds(k.deadline);
  return std::shared_ptr<attest::collateral_provider>(std::move(*p));
}

struct validate_args {
  std::string mode = "snp";
  // snp
  std::string evidence, report, vcek, chain, policy, ark, measurement, report_data;
  std::string collateral;  // snp, snp-vtpm: KDS-layout cache directory instead of --vcek/--chain
  kds_args kds;            // with --collateral: fetch what the cache lacks from AMD KDS (opt-in)
  // vtpm
  std::string quote, signature, ak_public, pcrs, eventlog, log_pcrs, tpm_policy, nonce;
  // vtpm --evidence: IMA binary measurement list checked by the policy's vtpm.ima section
  std::string ima_log;
  // snp, snp-vtpm, vtpm --evidence: CRLs of the AMD chain (added to the policy's `crls`)
  std::vector<std::string> crls;
};

/// The raw vTPM inputs of --mode vtpm / snp-vtpm. Other modes refuse them, and so does --evidence,
/// whose file carries the vTPM section itself.
constexpr std::pair<std::string validate_args::*, const char*> vtpm_flags[] = {
    {&validate_args::quote, "--quote"},           {&validate_args::signature, "--signature"},
    {&validate_args::ak_public, "--ak-public"},   {&validate_args::pcrs, "--pcrs"},
    {&validate_args::eventlog, "--eventlog"},     {&validate_args::log_pcrs, "--log-pcrs"},
    {&validate_args::tpm_policy, "--tpm-policy"}, {&validate_args::nonce, "--nonce"}};

/// Exit 1: with --json, {"valid": false, "error", "message"} on stdout; else stderr.
[[noreturn]] void fail(const error& e, bool json_out) {
  if (json_out)
    std::cout
        << json{{"valid", false}, {"error", std::string(to_string(e.code))}, {"message", e.message}}.dump()
        << '\n';
  else
    std::cerr << "cove: " << e.to_string() << '\n';
  throw CLI::RuntimeError(1);
}

[[noreturn]] void usage(const std::string& msg) {
  throw CLI::ValidationError(msg);
}

expected<std::string> read_file(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return make_error(errc::not_found, path + ": no such file");
  if (fs::file_size(path, ec) > (64u << 20)) return make_error(errc::too_large, path + ": over 64 MiB");
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error(errc::not_found, path + ": cannot read");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bytes bytes_of(const std::string& s) {
  return {s.begin(), s.end()};
}

template <class A>
std::string hex(const A& a) {
  return crypto::to_hex(std::span<const uint8_t>(a.data(), a.size()));
}

json report_json(const attest::snp_report& r) {
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

std::string alg(uint16_t a) {
  switch (a) {
    case attest::tpm_alg_rsa:
      return "rsa";
    case attest::tpm_alg_sha1:
      return "sha1";
    case attest::tpm_alg_sha256:
      return "sha256";
    case attest::tpm_alg_null:
      return "null";
    case attest::tpm_alg_rsassa:
      return "rsassa";
    case attest::tpm_alg_rsapss:
      return "rsapss";
    case attest::tpm_alg_ecdsa:
      return "ecdsa";
    case attest::tpm_alg_ecc:
      return "ecc";
    default:
      return fmt::format("{:#06x}", a);
  }
}

json vtpm_json(const attest::vtpm_verified& v) {
  const auto& q = v.quote;
  json sel = json::array();
  for (const auto& s : q.pcr_select) sel.push_back({{"bank", alg(s.hash_alg)}, {"pcrs", s.pcrs}});
  json quote = {{"magic", fmt::format("{:#010x}", q.magic)},
                {"type", fmt::format("{:#06x}", q.type)},
                {"qualified_signer", hex(q.qualified_signer)},
                {"extra_data", hex(q.extra_data)},
                {"clock", q.clock},
                {"reset_count", q.reset_count},
                {"restart_count", q.restart_count},
                {"safe", q.safe},
                {"firmware_version", fmt::format("{:#018x}", q.firmware_version)},
                {"pcr_select", std::move(sel)},
                {"pcr_digest", hex(q.pcr_digest)}};
  json pcrs = json::object();
  for (const auto& s : q.pcr_select)
    for (auto i : s.pcrs)
      if (auto it = v.pcrs.find(i); it != v.pcrs.end()) pcrs[std::to_string(i)] = hex(it->second);
  json out = {{"quote", std::move(quote)}, {"pcrs", std::move(pcrs)}};
  if (v.ak)
    out["ak"] = {{"type", alg(v.ak->type)},
                 {"name_alg", alg(v.ak->name_alg)},
                 {"attributes", fmt::format("{:#010x}", v.ak->attributes)},
                 {"restricted_signing", v.ak->restricted_signing()},
                 {"scheme", alg(v.ak->scheme)},
                 {"name", hex(v.ak->name)},
                 {"spki", hex(v.ak->spki_der)}};
  if (v.log) {
    json algs = json::array();
    for (const auto& [id, size] : v.log->algorithms)
      algs.push_back({{"alg", alg(id)}, {"digest_size", size}});
    json events = json::array();
    for (const auto& e : v.log->events)
      events.push_back({{"pcr", e.pcr},
                        {"type", fmt::format("{:#010x}", e.type)},
                        {"sha256", hex(e.sha256)},
                        {"data_size", e.data.size()}});
    out["event_log"] = {{"algorithms", std::move(algs)},
                        {"startup_locality", v.log->startup_locality},
                        {"events", std::move(events)}};
  }
  return out;
}

/// "root -> ... -> leaf": the layer names of a DICE chain.
std::string layer_names(const std::vector<attest::dice_layer>& chain) {
  std::string out;
  for (size_t i = 0; i < chain.size(); ++i) {
    if (i > 0) out += " -> ";
    out += chain[i].name;
  }
  return out;
}

json dice_json(const std::vector<attest::dice_layer>& chain) {
  json layers = json::array();
  for (const auto& l : chain) {
    json j = {
        {"subject", l.subject}, {"issuer", l.issuer}, {"name", l.name}, {"has_tcb_info", l.has_tcb_info}};
    if (l.vendor) j["vendor"] = *l.vendor;
    if (l.model) j["model"] = *l.model;
    if (l.version) j["version"] = *l.version;
    if (l.svn) j["svn"] = *l.svn;
    if (l.layer) j["layer"] = *l.layer;
    if (l.index) j["index"] = *l.index;
    json fw = json::array();
    for (const auto& f : l.fwids)
      fw.push_back({{"hash_alg", f.hash_alg == attest::oid_sha384   ? "sha384"
                                 : f.hash_alg == attest::oid_sha256 ? "sha256"
                                                                    : f.hash_alg},
                    {"digest", hex(f.digest)}});
    j["fwids"] = std::move(fw);
    j["flags"] = attest::dice_flags_to_string(l.flags);
    if (!l.vendor_info.empty()) j["vendor_info"] = hex(l.vendor_info);
    if (!l.type.empty()) j["type"] = hex(l.type);
    layers.push_back(std::move(j));
  }
  return layers;
}

/// Unwraps or exits 1.
struct taker {
  bool json_out;
  template <class T>
  T operator()(expected<T> r) const {
    if (!r) fail(r.error(), json_out);
    return std::move(*r);
  }
  void operator()(const expected<void>& r) const {
    if (!r) fail(r.error(), json_out);
  }
};

bytes parse_hex_arg(const std::string& flag, const std::string& text, size_t min, size_t max,
                    const taker& take) {
  auto b = crypto::from_hex(text);
  if (!b) usage(fmt::format("{}: '{}' is not hex", flag, text));
  if (b->size() < min || b->size() > max)
    fail(make_error(
             errc::invalid_request,
             min == max
                 ? fmt::format("{}: {} bytes ({} hex digits) expected, got {}", flag, min, 2 * min, b->size())
                 : fmt::format("{}: {} to {} bytes expected, got {}", flag, min, max, b->size())),
         take.json_out);
  return std::move(*b);
}

/// The SNP part: report (+VCEK, ASK/ARK), policy, expected report_data. Returns the
/// verified report. `binding` (snp-vtpm) replaces --report-data.
/// The SEV-SNP policy of --policy (or just the --ark root), with --measurement applied.
attest::snp_policy snp_policy_of(const validate_args& a, const taker& take) {
  attest::snp_policy policy;
  if (!a.policy.empty()) {
    policy = take(attest::load_policy_file(a.policy));
  } else {
    policy.trusted_roots.push_back(take(read_file(a.ark)));
  }
  if (!a.measurement.empty())
    policy.measurements = {parse_hex_arg("--measurement", a.measurement, 48, 48, take)};
  for (const auto& path : a.crls) {
    auto pem = attest::crls_to_pem(take(read_file(path)));
    if (!pem) fail(make_error(pem.error().code, "--crl " + path + ": " + pem.error().message), take.json_out);
    policy.crls.push_back(std::move(*pem));
  }
  return policy;
}

attest::snp_report validate_snp(const validate_args& a, const taker& take,
                                std::optional<std::array<uint8_t, 64>> binding,
                                std::optional<attest::vtpm_verified>* evidence_vtpm = nullptr,
                                std::optional<std::vector<attest::dice_layer>>* evidence_dice = nullptr) {
  auto policy = snp_policy_of(a, take);
  bytes report_data;
  if (!a.report_data.empty()) report_data = parse_hex_arg("--report-data", a.report_data, 64, 64, take);

  if (!a.evidence.empty()) {
    auto ev = take(evidence_from_json(take(read_file(a.evidence))));
    if (!report_data.empty()) {
      if (ev.vtpm)
        usage("--report-data: the evidence carries a vTPM section, whose binding defines report_data");
      return take(attest::verify_sim_or_snp_evidence(ev.report, ev.cert_chain, policy, report_data));
    }
    // The same check as `cove attestation get` and the attestation service.
    auto r = take(attest::verify_agent_evidence(agent_evidence_of(ev), policy,
                                                {attest::evidence_binding::mode::nonce, ev.nonce, {}}));
    if (evidence_vtpm != nullptr) *evidence_vtpm = std::move(r.vtpm);
    if (evidence_dice != nullptr) *evidence_dice = std::move(r.dice);
    return r.report;
  }
  auto report = bytes_of(take(read_file(a.report)));
  bytes vcek;
  std::string chain;
  if (!a.collateral.empty()) {
    auto parsed = attest::parse_snp_report(report);
    if (!parsed)
      fail(make_error(errc::attestation_failed, "report: " + parsed.error().message), take.json_out);
    attest::collateral_store store(a.collateral);
    if (a.kds.enabled) {
      attest::retry_policy retry;
      auto kds = take(make_kds(a.kds, retry));
      store.set_provider(std::move(kds), retry);
    }
    auto c = store.lookup(*parsed);
    if (!c) fail(make_error(c.error().code, "--collateral: " + c.error().message), take.json_out);
    vcek = std::move(c->vcek_der);
    chain = std::move(c->chain_pem);
    if (c->crl) {
      auto pem = attest::crls_to_pem(*c->crl);
      if (!pem)
        fail(make_error(
                 pem.error().code,
                 "--collateral: " + (fs::path(a.collateral) / attest::kds_crl_path(c->product)).string() +
                     ": " + pem.error().message),
             take.json_out);
      policy.crls.push_back(std::move(*pem));
    }
  } else {
    auto vcek_text = take(read_file(a.vcek));
    vcek = vcek_text.find("-----BEGIN") != std::string::npos ? take(attest::pem_to_der(vcek_text))
                                                             : bytes_of(vcek_text);
    chain = take(read_file(a.chain));
  }
  auto verified = take(attest::verify_snp_evidence(report, vcek, chain, attest::make_verify_options(policy)));
  // The AK binding is checked by the caller, with a message naming it.
  if (auto p = attest::check_policy(verified, policy, binding ? std::span<const uint8_t>() : report_data); !p)
    fail(make_error(errc::attestation_failed, p.error().message), take.json_out);
  return verified;
}

std::vector<uint32_t> parse_pcr_list(const std::string& text) {
  std::vector<uint32_t> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    uint32_t v = 0;
    auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (ec != std::errc() || p != item.data() + item.size() || v >= attest::tpm_pcr_count)
      usage(fmt::format("--log-pcrs: '{}' is not a PCR index (0-23)", item));
    out.push_back(v);
  }
  return out;
}

attest::vtpm_verified validate_vtpm(const validate_args& a, const taker& take, const bytes& nonce,
                                    bool need_tpm_public) {
  auto quote = bytes_of(take(read_file(a.quote)));
  auto sig = bytes_of(take(read_file(a.signature)));
  auto ak_text = take(read_file(a.ak_public));
  bytes ak;
  if (ak_text.find("-----BEGIN") != std::string::npos) {
    if (need_tpm_public)
      fail(make_error(errc::invalid_request,
                      "--ak-public: snp-vtpm binds the AK's TPM name: give its TPM2B_PUBLIC, not a PEM key"),
           take.json_out);
    auto pk = crypto::public_key::from_pem(ak_text);
    if (!pk) fail(make_error(errc::invalid_request, "--ak-public: " + pk.error().message), take.json_out);
    ak = pk->der();
  } else {
    ak = bytes_of(ak_text);
  }
  attest::vtpm_evidence ev{quote, sig, ak, std::nullopt, {}};
  if (!a.pcrs.empty()) {
    auto values = attest::load_tpm_policy_json(take(read_file(a.pcrs)));
    if (!values) fail(make_error(values.error().code, "--pcrs: " + values.error().message), take.json_out);
    ev.pcrs = values->pcrs;
  }
  bytes log;
  if (!a.eventlog.empty()) {
    log = bytes_of(take(read_file(a.eventlog)));
    ev.event_log = log;
  }
  attest::tpm_policy policy;
  if (!a.tpm_policy.empty()) {
    auto p = attest::load_tpm_policy_json(take(read_file(a.tpm_policy)));
    if (!p) fail(make_error(p.error().code, "--tpm-policy: " + p.error().message), take.json_out);
    policy = std::move(*p);
  }
  auto log_pcrs = a.log_pcrs.empty() ? std::vector<uint32_t>{} : parse_pcr_list(a.log_pcrs);
  return take(attest::verify_vtpm_evidence(ev, nonce, policy, log_pcrs));
}

std::string quoted_pcrs(const attest::tpm_attest& q) {
  std::vector<std::string> s;
  for (const auto& sel : q.pcr_select)
    for (auto i : sel.pcrs) s.push_back(std::to_string(i));
  return fmt::format("{}", fmt::join(s, ","));
}

/// --evidence (a file of `cove attestation get`) with --mode vtpm or dice.
///  vtpm: verify_agent_evidence with the SEV-SNP --policy (or --ark), whose vtpm section then
///        applies, and the evidence must carry a vTPM section;
///  dice: DICE only, --policy is a DICE policy: the chain against it, the agent layer key's
///        signature over the report's REPORT_DATA, and REPORT_DATA = the nonce construction over
///        the saved agent keys and nonce (and AK name). The SEV-SNP report is not verified.
void validate_evidence_file(const validate_args& a, bool json_out) {
  taker take{json_out};
  auto refuse = [](const std::string& v, const char* flag) {
    if (!v.empty()) usage(fmt::format("{} does not apply with --evidence", flag));
  };
  refuse(a.report, "--report");
  refuse(a.vcek, "--vcek");
  refuse(a.chain, "--chain");
  for (auto [m, f] : vtpm_flags) refuse(a.*m, f);
  refuse(a.report_data, "--report-data");
  if (a.mode == "vtpm" && a.policy.empty() && a.ark.empty())
    usage("--policy or --ark: name the AMD root (ARK) you trust");
  if (a.mode == "dice") {
    if (!a.crls.empty()) usage("--crl does not apply to --mode dice");
    if (!a.ark.empty()) usage("--ark does not apply to --mode dice (the DICE --policy names the root)");
    if (a.policy.empty()) usage("--mode dice needs --policy (DICE policy JSON naming the trusted root)");
    if (!a.measurement.empty()) usage("--measurement does not apply to --mode dice (use the policy's fwids)");
    if (!a.ima_log.empty()) usage("--ima-log does not apply to --mode dice");
  }
  auto ev = take(evidence_from_json(take(read_file(a.evidence))));
  json out = {{"valid", true}, {"mode", a.mode}, {"cvm", ev.cvm_id}, {"nonce", hex(ev.nonce)}};
  std::string human;
  if (a.mode == "vtpm") {
    if (!ev.vtpm)
      fail(make_error(errc::attestation_failed,
                      "evidence: no vTPM section (--mode vtpm); was the agent running with --vtpm?"),
           json_out);
    auto policy = snp_policy_of(a, take);
    policy.vtpm.required = true;
    auto agent = agent_evidence_of(ev);
    bytes ima;  // --ima-log replaces the list the evidence carries (if any)
    if (!a.ima_log.empty()) {
      if (!policy.vtpm.ima) usage("--ima-log: the policy has no vtpm.ima section to check the list against");
      ima = bytes_of(take(read_file(a.ima_log)));
      agent.vtpm->ima_list = ima;
    }
    auto r = take(
        attest::verify_agent_evidence(agent, policy, {attest::evidence_binding::mode::nonce, ev.nonce, {}}));
    if (policy.vtpm.ima)
      out["ima"] = {{"pcr", policy.vtpm.ima->pcr},
                    {"entries", take(attest::parse_ima_list(agent.vtpm->ima_list)).entries.size()}};
    out["report"] = report_json(r.report);
    out["vtpm"] = vtpm_json(*r.vtpm);
    if (r.dice) out["dice"] = dice_json(*r.dice);
    human = fmt::format(
        "valid: SEV-SNP report v{}, measurement {}; TPM quote of pcrs [{}] by a {} AK the "
        "report vouches for",
        r.report.version, hex(r.report.measurement), quoted_pcrs(r.vtpm->quote), r.ak_type);
  } else {
    if (!ev.dice)
      fail(make_error(errc::attestation_failed,
                      "evidence: no DICE chain (--mode dice); only simulated-TEE agents produce one"),
           json_out);
    auto dir = fs::path(a.policy).parent_path();
    auto dp =
        take(attest::load_dice_policy_json(take(read_file(a.policy)), dir.empty() ? "." : dir.string()));
    // Parsed, not verified: here the DICE chain vouches for REPORT_DATA, not the VCEK.
    auto report = take(attest::parse_snp_report(ev.report));
    bytes ak_name;
    if (ev.vtpm) ak_name = take(attest::parse_tpm_public(ev.vtpm->ak_public)).name;
    auto want = crypto::evidence_report_data(ev.kx_public_key, ev.sign_public_key, ev.nonce, ak_name);
    if (report.report_data != want)
      fail(make_error(errc::attestation_failed,
                      fmt::format("report_data: got {}, expected {} ({} over the saved kx, sign, nonce{})",
                                  hex(report.report_data), hex(want),
                                  ak_name.empty() ? "cove-evidence-v1" : "cove-evidence-v2",
                                  ak_name.empty() ? "" : " and AK name")),
           json_out);
    auto chain = take(attest::verify_dice_section({ev.dice->chain, ev.dice->binding_signature},
                                                  report.report_data, {true, std::move(dp)}));
    out["report_data"] = hex(report.report_data);
    out["dice"] = dice_json(chain);
    human = fmt::format(
        "valid: DICE chain of {} layers ({}); the {} layer's key signed this evidence's REPORT_DATA, which "
        "binds the agent keys and the nonce (the SEV-SNP report itself is not verified in this mode)",
        chain.size(), layer_names(chain), chain.back().name);
  }
  if (json_out)
    std::cout << out.dump() << '\n';
  else
    std::cout << human << '\n';
}

void run_validate(const validate_args& a, bool json_out) {
  if (!a.evidence.empty() && (a.mode == "vtpm" || a.mode == "dice"))
    return validate_evidence_file(a, json_out);
  if (!a.ima_log.empty())
    usage("--ima-log applies to --mode vtpm with --evidence (the policy's vtpm.ima section)");
  taker take{json_out};
  const bool snp = a.mode == "snp" || a.mode == "snp-vtpm";
  const bool vtpm = a.mode == "vtpm" || a.mode == "snp-vtpm";
  auto need = [&](const std::string& v, const char* flag) {
    if (v.empty()) usage(fmt::format("--mode {} needs {}", a.mode, flag));
  };
  auto refuse = [&](const std::string& v, const char* flag) {
    if (!v.empty()) usage(fmt::format("{} does not apply to --mode {}", flag, a.mode));
  };
  // Check the whole flag combination before reading anything.
  if (snp) {
    if (a.evidence.empty()) {
      need(a.report, "--report");
      if (a.kds.enabled && a.collateral.empty()) usage("--kds needs --collateral DIR (the cache it fills)");
      if (!a.collateral.empty()) {
        if (!a.vcek.empty() || !a.chain.empty())
          usage(
              "--collateral and --vcek/--chain are mutually exclusive: take the VCEK and chain from one "
              "place");
      } else {
        need(a.vcek, "--vcek (or --collateral DIR)");
        need(a.chain, "--chain (ASK + ARK; or --collateral DIR)");
      }
    } else {
      if (a.mode == "snp-vtpm")
        usage("--evidence holds agent evidence (sim_snp/sev_snp); use --report with --mode snp-vtpm");
      refuse(a.report, "--report (with --evidence)");
      refuse(a.vcek, "--vcek (with --evidence)");
      refuse(a.chain, "--chain (with --evidence)");
      refuse(a.collateral, "--collateral (with --evidence)");
      if (a.kds.enabled) usage("--kds does not apply with --evidence");
    }
    if (a.policy.empty() && a.ark.empty()) usage("--policy or --ark: name the AMD root (ARK) you trust");
  } else {
    refuse(a.evidence, "--evidence");
    refuse(a.report, "--report");
    refuse(a.vcek, "--vcek");
    refuse(a.collateral, "--collateral");
    if (a.kds.enabled) usage("--kds does not apply to --mode " + a.mode);
    refuse(a.ark, "--ark");
    refuse(a.measurement, "--measurement");
    refuse(a.report_data, "--report-data");
  }
  if (vtpm) {
    need(a.quote, "--quote");
    need(a.signature, "--signature");
    need(a.ak_public, "--ak-public");
    need(a.nonce, "--nonce");
    if (a.pcrs.empty() && a.eventlog.empty()) usage("--mode " + a.mode + " needs --pcrs or --eventlog");
    if (a.mode == "snp-vtpm") refuse(a.report_data, "--report-data (the AK binding defines it)");
  } else {
    for (auto [m, f] : vtpm_flags) refuse(a.*m, f);
  }
  if (a.mode == "vtpm") refuse(a.policy, "--policy (use --tpm-policy)");
  if (!snp && !a.crls.empty()) usage(fmt::format("--crl does not apply to --mode {}", a.mode));
  if (a.mode == "dice") {
    need(a.chain, "--chain (the DICE certificate chain)");
    need(a.policy, "--policy (DICE policy JSON naming the trusted root)");
  }

  json out = {{"valid", true}, {"mode", a.mode}};
  std::string human;
  if (a.mode == "dice") {
    auto chain = take(attest::parse_dice_chain(take(read_file(a.chain))));
    auto dir = fs::path(a.policy).parent_path();
    auto policy =
        take(attest::load_dice_policy_json(take(read_file(a.policy)), dir.empty() ? "." : dir.string()));
    take(attest::verify_dice_chain(chain, policy));
    out["dice"] = dice_json(chain);
    human = fmt::format("valid: DICE chain of {} layers ({})", chain.size(), layer_names(chain));
  } else {
    bytes nonce;
    if (vtpm) nonce = parse_hex_arg("--nonce", a.nonce, 1, 64, take);
    std::optional<attest::vtpm_verified> tpm;
    std::optional<std::vector<attest::dice_layer>> dice;  // --evidence with a policy dice section
    if (vtpm) tpm = validate_vtpm(a, take, nonce, a.mode == "snp-vtpm");
    std::optional<attest::snp_report> report;
    if (snp) {
      std::optional<std::array<uint8_t, 64>> binding;
      if (a.mode == "snp-vtpm") {
        if (!tpm->ak)
          fail(make_error(errc::invalid_request, "--ak-public: snp-vtpm needs the AK's TPM2B_PUBLIC"),
               json_out);
        binding = attest::snp_vtpm_report_data(tpm->ak->name, nonce);
      }
      report = validate_snp(a, take, binding, a.evidence.empty() ? nullptr : &tpm, &dice);
      if (binding) take(attest::check_snp_vtpm_binding(*report, *tpm->ak, nonce));
      out["report"] = report_json(*report);
      human = fmt::format("valid: SEV-SNP report v{} ({}), measurement {}, reported TCB {}", report->version,
                          attest::to_string(report->product), hex(report->measurement),
                          attest::to_string(report->reported(), report->product));
    }
    if (tpm) {
      out["vtpm"] = vtpm_json(*tpm);
      if (!human.empty()) human += "\n";
      human += fmt::format(
          "valid: TPM quote of pcrs [{}] signed by the AK{}{}", quoted_pcrs(tpm->quote),
          tpm->log ? fmt::format(", event log of {} events", tpm->log->events.size()) : "",
          a.mode == "snp-vtpm" || !a.evidence.empty() ? "; the SEV-SNP report vouches for the AK" : "");
    }
    if (dice) {
      out["dice"] = dice_json(*dice);
      human += fmt::format("\nvalid: DICE chain of {} layers ({}), bound to the report", dice->size(),
                           layer_names(*dice));
    }
  }
  if (json_out)
    std::cout << out.dump() << '\n';
  else
    std::cout << human << '\n';
}

/// "bl=N,tee=N,snp=N,ucode=N[,fmc=N]" (',' or ' ' between; "microcode" for "ucode") or
/// the KDS file name form "bl<N>-tee<N>-snp<N>-ucode<N>[-fmc<N>]".
expected<attest::tcb_version> parse_tcb_arg(const std::string& text, bool turin) {
  attest::tcb_version t;
  std::map<std::string, uint8_t*> fields = {
      {"bl", &t.bl},  {"tee", &t.tee}, {"snp", &t.snp}, {"ucode", &t.microcode}, {"microcode", &t.microcode},
      {"fmc", &t.fmc}};
  std::set<uint8_t*> seen;
  std::string tok;
  auto take_token = [&](std::string_view tk) -> expected<void> {
    if (tk.empty()) return {};
    auto name_end = tk.find_first_of("=0123456789");
    if (name_end == std::string_view::npos || name_end == 0)
      return make_error(errc::invalid_request, fmt::format("'{}' is not <field>=<number>", tk));
    auto name = std::string(tk.substr(0, name_end));
    auto num = tk.substr(name_end);
    if (num.starts_with('=')) num.remove_prefix(1);
    auto it = fields.find(name);
    if (it == fields.end() || (name == "fmc" && !turin))
      return make_error(errc::invalid_request, fmt::format("unknown field '{}' (bl, tee, snp, ucode{})", name,
                                                           turin ? ", fmc" : ""));
    unsigned v = 0;
    auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
    if (num.empty() || ec != std::errc() || p != num.data() + num.size() || v > 255)
      return make_error(errc::invalid_request, fmt::format("{}: '{}' is not 0..255", name, num));
    if (!seen.insert(it->second).second) return make_error(errc::invalid_request, name + " given twice");
    *it->second = static_cast<uint8_t>(v);
    return {};
  };
  for (char c : text) {
    if (c == ',' || c == ' ' || c == '-') {
      if (auto r = take_token(tok); !r) return r.error();
      tok.clear();
    } else {
      tok += c;
    }
  }
  if (auto r = take_token(tok); !r) return r.error();
  if (seen.size() != (turin ? 5u : 4u))
    return make_error(errc::invalid_request,
                      fmt::format("give each of bl, tee, snp, ucode{} once", turin ? ", fmc" : ""));
  return t;
}

}  // namespace

json report_to_json(const attest::snp_report& r) {
  return report_json(r);
}
json vtpm_to_json(const attest::vtpm_verified& v) {
  return vtpm_json(v);
}
json dice_to_json(const std::vector<attest::dice_layer>& chain) {
  return dice_json(chain);
}

void add_validate_command(CLI::App& attestation, const bool& json_out) {
  auto a = std::make_shared<validate_args>();
  auto* v = attestation.add_subcommand(
      "validate",
      "Verify saved evidence offline (SEV-SNP, vTPM, both bound together, DICE); exit 0 only if valid");
  v->add_option("--mode", a->mode, "snp | vtpm | snp-vtpm | dice")
      ->capture_default_str()
      ->check(CLI::IsMember({"snp", "vtpm", "snp-vtpm", "dice"}));
  auto file = [&](const char* name, std::string& dst, const char* what) {
    return v->add_option(name, dst, what)->check(CLI::ExistingFile);
  };
  file("--evidence", a->evidence,
       "snp, vtpm, dice: evidence saved by 'cove attestation get'. snp: the report, key binding and the "
       "policy's vtpm/dice sections; vtpm: the same, a vTPM section required; dice: the DICE chain against a "
       "DICE --policy and its signature over the report's REPORT_DATA");
  file("--report", a->report, "snp, snp-vtpm: attestation report (1184 bytes)");
  file("--vcek", a->vcek, "snp, snp-vtpm: VCEK certificate (DER or PEM)");
  v->add_option(
       "--collateral", a->collateral,
       "snp, snp-vtpm: collateral directory laid out like AMD KDS (vcek/v1/<Product>/cert_chain, crl, "
       "<chip_id hex>/bl<N>-tee<N>-snp<N>-ucode<N>[-fmc<N>].der) instead of --vcek/--chain; see "
       "'cove collateral put' and --kds")
      ->check(CLI::ExistingDirectory);
  add_kds_options(*v, a->kds, true);
  file("--chain", a->chain, "snp, snp-vtpm: ASK + ARK bundle (PEM); dice: the DICE chain (PEM or DER)");
  auto* pol = file("--policy", a->policy,
                   "snp, snp-vtpm, vtpm --evidence: SEV-SNP policy JSON; dice: DICE policy JSON");
  auto* ark = file("--ark", a->ark, "snp, snp-vtpm: trusted ARK (PEM) when no --policy names one");
  pol->excludes(ark);
  v->add_option("--crl", a->crls,
                "snp, snp-vtpm, vtpm --evidence: a CRL of the AMD chain (PEM or DER; repeatable), e.g. KDS "
                "/vcek/v1/<product>/crl; a revoked ASK or VCEK, or a stale CRL, fails")
      ->check(CLI::ExistingFile);
  v->add_option("--measurement", a->measurement, "Expected launch measurement (hex); overrides the policy's");
  v->add_option("--report-data", a->report_data, "snp: expected report_data (hex, 64 bytes)");
  file("--quote", a->quote, "vtpm, snp-vtpm: TPM2B_ATTEST (or TPMS_ATTEST) of the quote");
  file("--signature", a->signature, "vtpm, snp-vtpm: TPMT_SIGNATURE");
  file("--ak-public", a->ak_public, "vtpm, snp-vtpm: the AK's TPM2B_PUBLIC (vtpm also: PEM or DER SPKI)");
  file("--pcrs", a->pcrs, "vtpm, snp-vtpm: quoted PCR values, {\"pcrs\": {\"0\": \"<hex>\", ...}}");
  file("--eventlog", a->eventlog, "vtpm, snp-vtpm: TCG crypto-agile event log (binary_bios_measurements)");
  file("--ima-log", a->ima_log,
       "vtpm --evidence: IMA binary_runtime_measurements; replayed against the quoted PCR and checked "
       "against the policy's vtpm.ima allowlist");
  v->add_option("--log-pcrs", a->log_pcrs, "PCRs the event log must replay (default: every quoted PCR)");
  file("--tpm-policy", a->tpm_policy, "vtpm, snp-vtpm: expected PCRs, {\"pcrs\": {\"7\": \"<hex>\"}}");
  v->add_option("--nonce", a->nonce,
                "vtpm, snp-vtpm: the nonce the quote (and the report binding) carries (hex)");
  v->callback([a, &json_out] { run_validate(*a, json_out); });
}

void add_collateral_command(CLI::App& app, const bool& json_out) {
  struct put_args {
    std::string dir, vcek, chain, crl, report;
  };
  auto a = std::make_shared<put_args>();
  auto* col = app.add_subcommand("collateral", "SEV-SNP collateral cache (offline-first; KDS layout)");
  col->require_subcommand(1);
  auto* put = col->add_subcommand(
      "put",
      "File a VCEK and its ASK+ARK chain (and CRL) into a --collateral directory, named by the VCEK's "
      "product, chip and TCB");
  put->add_option("--collateral", a->dir, "Collateral directory (created if missing)")->required();
  put->add_option("--vcek", a->vcek, "VCEK certificate (DER or PEM)")->required()->check(CLI::ExistingFile);
  put->add_option("--chain", a->chain, "ASK + ARK bundle (PEM)")->required()->check(CLI::ExistingFile);
  put->add_option("--crl", a->crl, "CRL of the product (PEM or DER), filed as <Product>/crl")
      ->check(CLI::ExistingFile);
  put->add_option("--report", a->report, "Attestation report the VCEK must match (chip and TCB)")
      ->check(CLI::ExistingFile);
  put->callback([a, &json_out] {
    taker take{json_out};
    auto vcek = bytes_of(take(read_file(a->vcek)));
    auto chain = take(read_file(a->chain));
    std::optional<std::string> crl;
    if (!a->crl.empty()) {
      crl = take(read_file(a->crl));
      if (auto pem = attest::crls_to_pem(*crl); !pem)
        fail(make_error(pem.error().code, "--crl " + a->crl + ": " + pem.error().message), json_out);
    }
    std::optional<attest::snp_report> report;
    if (!a->report.empty()) {
      auto r = attest::parse_snp_report(bytes_of(take(read_file(a->report))));
      if (!r) fail(make_error(r.error().code, "--report: " + r.error().message), json_out);
      report = *r;
    }
    auto path = take(attest::collateral_store(a->dir).put(
        vcek, chain, crl ? std::optional<std::string_view>(*crl) : std::nullopt,
        report ? &*report : nullptr));
    if (json_out)
      std::cout << json{{"vcek", path.string()}}.dump() << '\n';
    else
      std::cout << "filed " << path.string() << '\n';
  });

  struct fetch_args {
    std::string dir, report, product, chip_id, tcb;
    kds_args kds;
  };
  auto f = std::make_shared<fetch_args>();
  auto* fetch = col->add_subcommand(
      "fetch",
      "Fetch a chip's VCEK (and its product's ASK+ARK chain) from AMD KDS into a --collateral directory; "
      "both are validated before they are filed");
  fetch->add_option("--collateral", f->dir, "Collateral directory (created if missing)")->required();
  auto* rep = fetch->add_option("--report", f->report, "Attestation report: chip id, TCB and product from it")
                  ->check(CLI::ExistingFile);
  fetch->add_option("--product", f->product, "Milan | Genoa | Turin (with --report: only for v2 reports)")
      ->check(CLI::IsMember({"Milan", "Genoa", "Turin"}));
  auto* chip = fetch->add_option("--chip-id", f->chip_id, "CHIP_ID, hex (64 bytes; Turin: 8)");
  auto* tcb = fetch->add_option(
      "--tcb", f->tcb, "Reported TCB: bl=N,tee=N,snp=N,ucode=N[,fmc=N] (or bl<N>-tee<N>-snp<N>-ucode<N>)");
  rep->excludes(chip)->excludes(tcb);
  add_kds_options(*fetch, f->kds, false);
  fetch->callback([f, &json_out] {
    taker take{json_out};
    auto product = attest::snp_product::unknown;
    if (!f->product.empty()) product = attest::product_from_name(f->product);
    bytes hwid;
    attest::tcb_version t;
    if (!f->report.empty()) {
      auto r = attest::parse_snp_report(bytes_of(take(read_file(f->report))));
      if (!r) fail(make_error(r.error().code, "--report: " + r.error().message), json_out);
      if (r->product != attest::snp_product::unknown) {
        if (product != attest::snp_product::unknown && product != r->product)
          usage(fmt::format("--product {}: the report's CPUID says {}", f->product,
                            attest::to_string(r->product)));
        product = r->product;
      }
      if (product == attest::snp_product::unknown)
        usage("--report: a v2 report does not name its product (no CPUID): add --product Milan or Genoa");
      auto id = attest::kds_hwid(*r, product);
      hwid.assign(id.begin(), id.end());
      t = attest::decode_tcb(r->reported_tcb, product);
    } else {
      if (product == attest::snp_product::unknown || f->chip_id.empty() || f->tcb.empty())
        usage("collateral fetch needs --report FILE, or --product, --chip-id and --tcb");
      const bool turin = product == attest::snp_product::turin;
      hwid = parse_hex_arg("--chip-id", f->chip_id, turin ? 8 : 64, 64, take);
      if (hwid.size() != 64 && hwid.size() != (turin ? 8u : 64u))
        usage(fmt::format("--chip-id: {} bytes; a {} chip id is {}", hwid.size(), f->product,
                          turin ? "8 (or 64)" : "64"));
      if (turin && hwid.size() == 64) {
        if (std::any_of(hwid.begin() + 8, hwid.end(), [](uint8_t b) { return b != 0; }))
          usage("--chip-id: a Turin chip id is 8 bytes (64 only when zero-padded)");
        hwid.resize(8);
      }
      auto parsed = parse_tcb_arg(f->tcb, turin);
      if (!parsed) usage("--tcb: " + parsed.error().message);
      t = *parsed;
    }
    attest::collateral_store store(f->dir);
    attest::retry_policy retry;
    auto kds = take(make_kds(f->kds, retry));
    store.set_provider(std::move(kds), retry);
    auto c = take(store.fetch(product, hwid, t));
    if (json_out)
      std::cout << json{{"vcek", c.vcek_file.string()},
                        {"chain", (fs::path(f->dir) / attest::kds_chain_path(product)).string()}}
                       .dump()
                << '\n';
    else
      std::cout << "filed " << c.vcek_file.string() << '\n';
  });
}

}  // namespace cove::cli

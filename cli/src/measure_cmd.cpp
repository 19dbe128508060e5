// `cove measure`: flags and checks follow sev-snp-measure's command line.
#include "cove/cli/measure_cmd.hpp"

#include <openssl/evp.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "cove/attest/measure.hpp"
#include "cove/attest/snp_report.hpp"

namespace cove::cli {

namespace {

[[noreturn]] void usage(const std::string& msg) {
  throw CLI::ValidationError(msg);
}

[[noreturn]] void fail(const error& e) {
  std::cerr << "cove: " << e.to_string() << '\n';
  throw CLI::RuntimeError(1);
}

/// Python's int(s, 0): 0x / 0o / 0b prefixes or decimal, whole string.
std::optional<uint64_t> parse_int(std::string s) {
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) base = 16;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'o' || s[1] == 'O')) base = 8;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'b' || s[1] == 'B')) base = 2;
  if (base != 10) s = s.substr(2);
  if (s.empty() || s.size() > 64) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : 99;
    if (d >= base || v > (UINT64_MAX - static_cast<uint64_t>(d)) / static_cast<uint64_t>(base))
      return std::nullopt;
    v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
  }
  return v;
}

std::string base64(const std::vector<uint8_t>& d) {
  std::string out(4 * ((d.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), d.data(), static_cast<int>(d.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

}  // namespace

std::vector<uint8_t> compute_measurement(const measure_flags& a) {
  if (!a.igvm.empty())
    fail(make_error(errc::invalid_request, "--igvm: IGVM measurement is not implemented yet; use --ovmf"));
  if (a.ovmf.empty()) usage("--ovmf is required");
  attest::measure_options o;
  auto mode = attest::parse_sev_mode(a.mode);
  if (!mode) usage(mode.error().message);
  o.mode = *mode;
  o.ovmf = a.ovmf;

  if (o.mode != attest::sev_mode::snp_ovmf_hash) {
    if (a.o_initrd->count() && !a.o_kernel->count()) usage("--kernel required when using --initrd");
    if (!a.append.empty() && !a.o_kernel->count()) usage("--kernel required when using --append");
    if (o.mode != attest::sev_mode::sev && !a.o_vcpus->count())
      usage("missing --vcpus N in guest mode '" + a.mode + "'");
    auto vmm = attest::parse_vmm_type(a.vmm);
    if (!vmm) usage(vmm.error().message);
    o.vmm = *vmm;
    o.vcpus = a.vcpus;
    if (o.mode != attest::sev_mode::sev) {
      if (a.o_family->count()) {
        if (!a.o_model->count() || !a.o_stepping->count())
          usage("--vcpu-family needs --vcpu-model and --vcpu-stepping");
        o.vcpu_sig = attest::cpu_signature(a.family, a.model, a.stepping);
      } else if (a.o_sig->count()) {
        auto v = parse_int(a.vcpu_sig);
        if (!v || *v > 0xffffffffULL) usage("--vcpu-sig: '" + a.vcpu_sig + "' is not a 32-bit number");
        o.vcpu_sig = static_cast<uint32_t>(*v);
      } else if (!a.vcpu_type.empty()) {
        o.vcpu_type = a.vcpu_type;
      } else if (o.vmm == attest::vmm_type::qemu) {
        usage("missing --vcpu-type or --vcpu-sig or --vcpu-family in guest mode '" + a.mode + "'");
      }
    }
    if (a.o_kernel->count()) o.kernel = a.kernel;
    if (a.o_initrd->count()) o.initrd = a.initrd;
    if (a.o_append->count()) o.append = a.append;
    auto gf = parse_int(a.guest_features);
    if (!gf) usage("--guest-features: '" + a.guest_features + "' is not a number");
    o.guest_features = *gf;
    o.snp_ovmf_hash = a.ovmf_hash;
    if (o.mode == attest::sev_mode::snp_svsm) {
      if (a.svsm.empty()) usage("snp:svsm mode requires --svsm");
      if (a.o_vars_file->count()) {
        std::error_code ec;
        auto sz = std::filesystem::file_size(a.vars_file, ec);
        if (ec) fail(make_error(errc::not_found, "--vars-file: cannot stat '" + a.vars_file + "'"));
        o.vars_size = sz;
      } else if (a.vars_size != 0) {
        o.vars_size = a.vars_size;
      } else {
        usage("snp:svsm mode requires --vars-size or --vars-file");
      }
      o.svsm = a.svsm;
    }
  }

  auto r = attest::compute_launch_digest(o);
  if (!r) fail(r.error());
  return std::move(*r);
}

std::shared_ptr<measure_flags> add_measure_flags(CLI::App& cmd, const std::vector<std::string>& modes) {
  auto a = std::make_shared<measure_flags>();
  auto* m = &cmd;
  m->add_option("--mode", a->mode, "Guest mode")->required()->check(CLI::IsMember(modes));
  a->o_vcpus = m->add_option("--vcpus", a->vcpus, "Number of guest vCPUs")->check(CLI::Range(1u, 0xffffffu));
  m->add_option("--vcpu-type", a->vcpu_type,
                "QEMU CPU model (EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, ...)")
      ->check(CLI::IsMember(attest::vcpu_type_names()));
  a->o_sig = m->add_option("--vcpu-sig", a->vcpu_sig, "Guest vCPU signature (CPUID Fn0000_0001_EAX)");
  a->o_family = m->add_option("--vcpu-family", a->family, "Guest vCPU family");
  a->o_model = m->add_option("--vcpu-model", a->model, "Guest vCPU model");
  a->o_stepping = m->add_option("--vcpu-stepping", a->stepping, "Guest vCPU stepping");
  m->add_option("--vmm-type", a->vmm, "QEMU|ec2|gce")->capture_default_str();
  m->add_option("--ovmf", a->ovmf, "OVMF firmware image");
  a->o_kernel =
      m->add_option("--kernel", a->kernel, "Kernel (direct boot, measured through the hashes table)");
  a->o_initrd = m->add_option("--initrd", a->initrd, "Initrd (with --kernel)");
  a->o_append = m->add_option("--append", a->append, "Kernel command line (with --kernel)");
  a->o_gf =
      m->add_option("--guest-features", a->guest_features, "VMSA SEV_FEATURES (snp)")->capture_default_str();
  m->add_option("--snp-ovmf-hash", a->ovmf_hash, "Precomputed OVMF digest (hex, from --mode snp:ovmf-hash)");
  m->add_option("--svsm", a->svsm, "SVSM image (snp:svsm)");
  a->o_vars_size = m->add_option("--vars-size", a->vars_size, "OVMF_VARS size in bytes (snp:svsm)");
  a->o_vars_file =
      m->add_option("--vars-file", a->vars_file, "OVMF_VARS file (snp:svsm)")->excludes(a->o_vars_size);
  m->add_option("--igvm", a->igvm, "IGVM file (not implemented yet)");
  return a;
}

void add_measure_command(CLI::App& app) {
  auto* m = app.add_subcommand("measure", "Compute an AMD SEV/SEV-ES/SEV-SNP launch measurement offline");
  auto a = add_measure_flags(*m, {"sev", "seves", "snp", "snp:ovmf-hash", "snp:svsm"});
  auto format = std::make_shared<std::string>("hex");
  m->add_option("--output-format", *format, "hex|base64")
      ->capture_default_str()
      ->check(CLI::IsMember({"hex", "base64"}));
  m->callback([a, format] {
    auto d = compute_measurement(*a);
    std::cout << (*format == "base64" ? base64(d) : attest::to_hex(d)) << '\n' << std::flush;
  });
}

}  // namespace cove::cli

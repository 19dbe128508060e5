// `cove measure`: flags and checks follow sev-snp-measure's command line.
#include "cove/cli/measure_cmd.hpp"

#include <openssl/evp.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "cove/attest/igvm.hpp"
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

namespace {

/// `--igvm FILE`: the file carries firmware, vCPUs and VMSAs, so the OVMF-path flags
/// do not apply.
std::vector<uint8_t> igvm_measurement(const measure_flags& a, std::optional<uint64_t>* guest_policy) {
  if (!a.mode.empty() && a.mode != "snp") usage("--igvm measures SEV-SNP only: use --mode snp or no --mode");
  const std::pair<const CLI::Option*, const char*> excluded[] = {{a.o_ovmf, "--ovmf"},
                                                                 {a.o_vcpus, "--vcpus"},
                                                                 {a.o_type, "--vcpu-type"},
                                                                 {a.o_sig, "--vcpu-sig"},
                                                                 {a.o_family, "--vcpu-family"},
                                                                 {a.o_kernel, "--kernel"},
                                                                 {a.o_initrd, "--initrd"},
                                                                 {a.o_append, "--append"},
                                                                 {a.o_gf, "--guest-features"},
                                                                 {a.o_svsm, "--svsm"},
                                                                 {a.o_vars_size, "--vars-size"},
                                                                 {a.o_vars_file, "--vars-file"},
                                                                 {a.o_ovmf_hash, "--snp-ovmf-hash"}};
  if (a.vmm != "QEMU") usage("--igvm measures the QEMU/KVM launch: drop --vmm-type");
  for (const auto& [opt, name] : excluded)
    if (opt && opt->count())
      usage(std::string("--igvm takes the firmware, vCPUs and VMSAs from the file: drop ") + name);
  attest::igvm_measure_options o;
  o.native_zero = a.igvm_native_zero;
  o.check_kvm = !a.igvm_no_kvm_check;
  auto r = attest::measure_igvm_file(a.igvm, o);
  if (!r) fail(r.error());
  if (r->id_block_ld && !std::equal(r->id_block_ld->begin(), r->id_block_ld->end(), r->digest.begin()))
    fail(make_error(errc::invalid_request, "IGVM: the file's SNP_ID_BLOCK expects launch digest " +
                                               attest::to_hex(*r->id_block_ld) +
                                               " but its directives measure " + attest::to_hex(r->digest) +
                                               " (the PSP would refuse to launch it)"));
  if (guest_policy != nullptr) *guest_policy = r->policy;
  return std::move(r->digest);
}

}  // namespace

std::vector<uint8_t> compute_measurement(const measure_flags& a, std::optional<uint64_t>* igvm_guest_policy) {
  if (igvm_guest_policy != nullptr) igvm_guest_policy->reset();
  if (!a.igvm.empty()) return igvm_measurement(a, igvm_guest_policy);
  if (a.igvm_native_zero || a.igvm_no_kvm_check)
    usage("--igvm-native-zero / --igvm-no-kvm-check need --igvm");
  if (a.mode.empty()) usage("--mode is required (or --igvm FILE)");
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
  a->o_mode =
      m->add_option("--mode", a->mode, "Guest mode (required unless --igvm)")->check(CLI::IsMember(modes));
  a->o_vcpus = m->add_option("--vcpus", a->vcpus, "Number of guest vCPUs")->check(CLI::Range(1u, 0xffffffu));
  a->o_type = m->add_option("--vcpu-type", a->vcpu_type,
                            "QEMU CPU model (EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, ...)")
                  ->check(CLI::IsMember(attest::vcpu_type_names()));
  a->o_sig = m->add_option("--vcpu-sig", a->vcpu_sig, "Guest vCPU signature (CPUID Fn0000_0001_EAX)");
  a->o_family = m->add_option("--vcpu-family", a->family, "Guest vCPU family");
  a->o_model = m->add_option("--vcpu-model", a->model, "Guest vCPU model");
  a->o_stepping = m->add_option("--vcpu-stepping", a->stepping, "Guest vCPU stepping");
  m->add_option("--vmm-type", a->vmm, "QEMU|ec2|gce")->capture_default_str();
  a->o_ovmf = m->add_option("--ovmf", a->ovmf, "OVMF firmware image");
  a->o_kernel =
      m->add_option("--kernel", a->kernel, "Kernel (direct boot, measured through the hashes table)");
  a->o_initrd = m->add_option("--initrd", a->initrd, "Initrd (with --kernel)");
  a->o_append = m->add_option("--append", a->append, "Kernel command line (with --kernel)");
  a->o_gf =
      m->add_option("--guest-features", a->guest_features, "VMSA SEV_FEATURES (snp)")->capture_default_str();
  a->o_ovmf_hash = m->add_option("--snp-ovmf-hash", a->ovmf_hash,
                                 "Precomputed OVMF digest (hex, from --mode snp:ovmf-hash)");
  a->o_svsm = m->add_option("--svsm", a->svsm, "SVSM image (snp:svsm)");
  a->o_vars_size = m->add_option("--vars-size", a->vars_size, "OVMF_VARS size in bytes (snp:svsm)");
  a->o_vars_file =
      m->add_option("--vars-file", a->vars_file, "OVMF_VARS file (snp:svsm)")->excludes(a->o_vars_size);
  m->add_option(
      "--igvm", a->igvm,
      "IGVM file: SEV-SNP launch digest of its SNP directives as QEMU/KVM load them (no-data pages are "
      "normal zero pages; VMSAs at 0xFFFFFFFFF000, after all pages, vp_index 0,1,...). Replaces "
      "--mode/--ovmf/--vcpus/...");
  m->add_flag("--igvm-native-zero", a->igvm_native_zero,
              "With --igvm: measure no-data PAGE_DATA as SNP ZERO pages (igvmmeasure --native-zero) instead");
  m->add_flag(
      "--igvm-no-kvm-check", a->igvm_no_kvm_check,
      "With --igvm: drop the QEMU/KVM checks (VMSA GPA and order, shared pages); measure in file order");
  return a;
}

void add_measure_command(CLI::App& app) {
  auto* m = app.add_subcommand(
      "measure", "Compute an AMD SEV/SEV-ES/SEV-SNP launch measurement offline (OVMF path, or an IGVM file)");
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

void add_igvm_command(CLI::App& app) {
  auto* igvm = app.add_subcommand("igvm", "IGVM files (SEV-SNP)");
  igvm->require_subcommand(1);
  auto* b = igvm->add_subcommand(
      "build",
      "Wrap an SEV-SNP OVMF into an IGVM file: its pages, SEV metadata pages and N vCPUs' VMSAs (cove's own "
      "builder; `cove measure --igvm F --igvm-native-zero` equals `cove measure --mode snp --ovmf`)");
  struct args {
    std::string ovmf, out, vcpu_type, vcpu_sig, features = "0x1", policy = "0x30000", svsm;
    uint32_t vcpus = 1;
    uint64_t vars_size = 0;
    CLI::Option* o_sig = nullptr;
  };
  auto a = std::make_shared<args>();
  b->add_option("--ovmf", a->ovmf, "OVMF image with SEV metadata (e.g. AmdSev)")->required();
  b->add_option("-o,--output", a->out, "IGVM file to write")->required();
  b->add_option("--vcpus", a->vcpus, "Number of vCPUs (one VP_CONTEXT each)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 0xffffu));
  b->add_option("--vcpu-type", a->vcpu_type, "QEMU CPU model (EPYC-v4, EPYC-Milan, EPYC-Genoa, ...)")
      ->check(CLI::IsMember(attest::vcpu_type_names()));
  a->o_sig = b->add_option("--vcpu-sig", a->vcpu_sig, "vCPU signature (CPUID Fn0000_0001_EAX)");
  b->add_option("--guest-features", a->features, "VMSA SEV_FEATURES")->capture_default_str();
  b->add_option("--policy", a->policy, "SNP guest policy (IGVM_VHT_GUEST_POLICY)")->capture_default_str();
  b->add_option("--svsm", a->svsm, "Coconut-SVSM image below the OVMF (as --mode snp:svsm)");
  b->add_option("--vars-size", a->vars_size, "With --svsm: OVMF_VARS size in bytes (the gap below the OVMF)");
  b->callback([a] {
    attest::igvm_build_options o;
    o.vcpus = a->vcpus;
    o.vcpu_type = a->vcpu_type;
    if (a->o_sig->count()) {
      auto v = parse_int(a->vcpu_sig);
      if (!v || *v > 0xffffffffULL) usage("--vcpu-sig: '" + a->vcpu_sig + "' is not a 32-bit number");
      o.vcpu_sig = static_cast<uint32_t>(*v);
    } else if (a->vcpu_type.empty()) {
      usage("--vcpu-type or --vcpu-sig is required");
    }
    auto gf = parse_int(a->features);
    if (!gf) usage("--guest-features: '" + a->features + "' is not a number");
    o.guest_features = *gf;
    auto pol = parse_int(a->policy);
    if (!pol) usage("--policy: '" + a->policy + "' is not a number");
    o.policy = *pol;
    std::ifstream in(a->ovmf, std::ios::binary);
    if (!in) fail(make_error(errc::not_found, "--ovmf: cannot open '" + a->ovmf + "'"));
    std::vector<uint8_t> image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<uint8_t> svsm;
    if (!a->svsm.empty()) {
      std::ifstream sf(a->svsm, std::ios::binary);
      if (!sf) fail(make_error(errc::not_found, "--svsm: cannot open '" + a->svsm + "'"));
      svsm.assign(std::istreambuf_iterator<char>(sf), std::istreambuf_iterator<char>());
      if (svsm.empty()) usage("--svsm: '" + a->svsm + "' is empty");
      o.svsm = svsm;
      o.vars_size = a->vars_size;
    } else if (a->vars_size != 0) {
      usage("--vars-size needs --svsm");
    }
    auto file = attest::build_igvm_from_ovmf(image, o);
    if (!file) fail(file.error());
    auto tmp = a->out + ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      f.write(reinterpret_cast<const char*>(file->data()), static_cast<std::streamsize>(file->size()));
      if (!f) fail(make_error(errc::internal, "cannot write '" + tmp + "'"));
    }
    std::error_code ec;
    std::filesystem::rename(tmp, a->out, ec);
    if (ec)
      fail(make_error(errc::internal, "cannot rename '" + tmp + "' to '" + a->out + "': " + ec.message()));
    std::cerr << "IGVM file written to " << a->out << " (" << file->size() << " bytes, " << o.vcpus
              << " vCPU(s))\n";
  });
}

}  // namespace cove::cli

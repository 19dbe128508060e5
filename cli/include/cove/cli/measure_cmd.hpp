#pragma once
// `cove measure`: offline AMD SEV / SEV-ES / SEV-SNP launch measurement
// (cove::attest::compute_launch_digest), flags as virtee/sev-snp-measure.
// The flag set is shared with `cove policy from-measure`.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cove/attest/measure.hpp"

namespace cove::cli {

/// The sev-snp-measure flags (--mode, --vcpus, --vcpu-type, --ovmf, --kernel, ...) as
/// registered on one command. Create with add_measure_flags; read after parsing.
struct measure_flags {
  std::string mode, vcpu_type, vcpu_sig, ovmf, kernel, initrd, append, guest_features = "0x1", vmm = "QEMU",
                                                                       ovmf_hash, svsm, vars_file, igvm;
  uint32_t vcpus = 0, family = 0, model = 0, stepping = 0;
  uint64_t vars_size = 0;
  bool igvm_native_zero = false, igvm_no_kvm_check = false;
  CLI::Option *o_mode = nullptr, *o_ovmf = nullptr, *o_type = nullptr, *o_svsm = nullptr,
              *o_ovmf_hash = nullptr;
  CLI::Option *o_vcpus = nullptr, *o_sig = nullptr, *o_family = nullptr, *o_model = nullptr,
              *o_stepping = nullptr, *o_kernel = nullptr, *o_initrd = nullptr, *o_append = nullptr,
              *o_vars_size = nullptr, *o_vars_file = nullptr, *o_gf = nullptr;
};

/// Registers the measurement flags on `cmd`; `modes` restricts --mode (required unless
/// --igvm is given: then the file's SEV-SNP directives are measured).
std::shared_ptr<measure_flags> add_measure_flags(CLI::App& cmd, const std::vector<std::string>& modes);

/// Checks the flag combination as sev-snp-measure does and computes the digest.
/// Usage errors throw CLI::ValidationError (exit 2); a failed computation prints
/// "cove: <code>: <message>" on stderr and throws CLI::RuntimeError(1) (exit 1).
/// With --igvm and `igvm_guest_policy`, the file's SNP guest policy (IGVM_VHT_GUEST_POLICY)
/// is stored there (nullopt when the file has none).
std::vector<uint8_t> compute_measurement(const measure_flags& flags,
                                         std::optional<uint64_t>* igvm_guest_policy = nullptr);

/// Registers the `measure` subcommand on `app`. Its callback prints the digest
/// (hex, or base64 with --output-format base64) on stdout.
void add_measure_command(CLI::App& app);

/// Registers `igvm build` (wrap an OVMF image into an SEV-SNP IGVM file).
void add_igvm_command(CLI::App& app);

}  // namespace cove::cli

#pragma once
// The libvirt domain of a real CVM, generated from a typed spec (issue 6, first piece).
//
// Pure: no libvirt connection, no file access. `to_domain_xml` validates the spec and
// renders a deterministic libvirt domain XML string (same spec → same bytes), written for
// Debian 12's libvirt 9.0 and QEMU 7.2 (see docs/operations.md, "Real CVMs"):
//
//   tee=none     TCG (this machine kind has no usable KVM), SeaBIOS, qboot or OVMF.
//   tee=sev      libvirt's native <launchSecurity type='sev' kernelHashes='yes'>.
//   tee=sev-snp  QEMU command-line passthrough (<qemu:commandline>): libvirt 9.0 rejects
//                <launchSecurity type='sev-snp'> (it arrived in libvirt 10.5) and QEMU 7.2
//                has no sev-snp-guest object, so this needs an SNP-capable QEMU (upstream
//                ≥ 9.1; ≥ 10.0 for IGVM) set as `emulator`, and SNP hardware.
//   tdx          the same passthrough with a tdx-guest object; needs QEMU ≥ 10.1 and a TDX
//                host.
//
// Checked against golden files, xmllint and libvirt 9.0's RelaxNG schema; nothing here
// launches domains yet. By hand, the tee=none domains boot under libvirt 9.0 + QEMU 7.2
// TCG; the SNP/TDX ones pass libvirt and fail in QEMU 7.2 (no such object): they need
// the hardware and QEMU named above. docs/operations.md §8 has the details.
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cove/expected.hpp"

namespace cove::manager {

enum class domain_tee { none, sev, sev_snp, tdx };
enum class domain_accel { tcg, kvm };
enum class firmware_kind {
  seabios,  // QEMU's default BIOS (no <loader>); tee=none only
  qboot,    // QEMU's qboot.rom as a ROM <loader>: boots a PVH vmlinux (no xz decompressor
            // under TCG) with the ACPI tables below 1 MiB, clear of the initrd; tee=none only
  ovmf,     // UEFI: `path` is OVMF_CODE (pflash, with vars) or a single OVMF.fd (ROM)
  igvm,     // an IGVM file (e.g. COCONUT-SVSM + OVMF) for SEV-SNP; needs QEMU >= 10.0
};

std::string_view to_string(domain_tee t) noexcept;  // "none", "sev", "sev-snp", "tdx"
/// Parses the names above; anything else is errc::invalid_request naming the value.
expected<domain_tee> parse_domain_tee(std::string_view s);

/// The mount tag of the config share; eos/init mounts exactly this tag at /config.
inline constexpr std::string_view config_mount_tag = "coveconfig";

/// The XML namespace of cove's <metadata> element (<cove:cvm>): how a restarted coved
/// recognizes its own domains (libvirt_backend::reconcile).
inline constexpr std::string_view metadata_namespace = "https://cove.invalid/xmlns/libvirt/cvm/1";

struct firmware_spec {
  firmware_kind kind = firmware_kind::seabios;
  std::filesystem::path path;  // OVMF code/ROM or the IGVM file (absolute)
  // OVMF only, both or neither: with them OVMF is a read-only pflash plus a per-domain
  // NVRAM file that libvirt copies from the template; without them it is loaded as a
  // ROM (-bios), which is what SEV/SNP/TDX measured boot uses (the firmware is measured
  // as one image; an NVRAM the host can edit is not).
  std::filesystem::path vars_template;
  std::filesystem::path nvram;
};

struct sev_params {                // SEV (and SEV-ES via the policy's ES bit), libvirt-native
  uint32_t cbitpos = 51;           // C-bit position: 51 on Milan/Genoa, 47 on Naples/Rome
  uint32_t reduced_phys_bits = 1;  // 1..63
  uint32_t policy = 0x0003;        // NODBG|NOKS; NODBG (bit 0) is required
};

struct sev_snp_params {  // QEMU's sev-snp-guest object, passed through
  // Guest policy (SNP ABI): bit 16 SMT, bit 17 must be 1, bit 19 DEBUG (refused: a host
  // that may debug the guest can read it), bits 26..63 must be 0. 0x30000: SMT, ABI 0.0.
  std::optional<uint64_t> policy = 0x30000;
  // Empty or exactly 32 bytes; the report's HOST_DATA (QEMU: host-data=<base64>).
  std::vector<uint8_t> host_data;
  uint32_t cbitpos = 51;
  uint32_t reduced_phys_bits = 1;
};

struct tdx_params {                 // QEMU's tdx-guest object, passed through
  bool sept_ve_disable = true;      // the guest may not see EPT-violation #VEs (Linux wants this)
  std::vector<uint8_t> mrconfigid;  // empty or exactly 48 bytes (SHA-384-sized), base64 for QEMU
};

struct port_forward {                      // host → guest TCP (QEMU user networking hostfwd)
  std::string host_address = "127.0.0.1";  // dotted IPv4
  uint16_t host_port = 0;
  uint16_t guest_port = 0;
};

struct domain_spec {
  std::string cvm_id;         // the domain is named "cove-<cvm_id>"; [A-Za-z0-9_-], 1..64
  std::string uuid;           // optional; canonical 8-4-4-4-12 hex, else libvirt picks one
  uint32_t vcpus = 1;         // 1..64
  uint64_t memory_mib = 512;  // 256 .. 1048576 (1 TiB)
  std::filesystem::path emulator = "/usr/bin/qemu-system-x86_64";
  domain_accel accel = domain_accel::tcg;  // kvm is required for every TEE
  firmware_spec firmware;
  // Direct kernel boot: the measured inputs (with kernel hashes on for SEV/SNP).
  std::filesystem::path kernel;        // required
  std::filesystem::path initrd;        // optional
  std::string cmdline;                 // optional; < 2048 bytes (x86 COMMAND_LINE_SIZE)
  std::filesystem::path config_dir;    // host side of the read-only 9p share (required)
  std::filesystem::path console_log;   // the serial console goes to this file (required)
  bool network = true;                 // QEMU user networking; the guest reaches the host at 10.0.2.2
  std::vector<port_forward> forwards;  // needs network; passed through (libvirt 9.0 can't)
  bool tpm = true;                     // emulated TPM 2.0 (libvirt starts swtpm)
  domain_tee tee = domain_tee::none;
  sev_params sev;
  sev_snp_params sev_snp;
  tdx_params tdx;
  // Emitted as <metadata><cove:cvm><cove:KEY>VALUE</cove:KEY>...</cove:cvm></metadata>;
  // keys are [a-z_], 1..32 characters; values are printable text.
  std::map<std::string, std::string> metadata;

  [[nodiscard]] std::string domain_name() const { return "cove-" + cvm_id; }
};

/// Checks every field; the error (errc::invalid_request) starts with the field's name,
/// e.g. "vcpus: 0 is out of range 1..64" or "sev_snp.policy: required for tee=sev-snp".
expected<void> validate(const domain_spec& spec);

/// The QEMU arguments the domain passes through <qemu:commandline> (empty when none are
/// needed: tee none/sev without forwards). Validates first.
expected<std::vector<std::string>> qemu_passthrough_args(const domain_spec& spec);

/// The libvirt domain XML (newline-terminated, two-space indented). Validates first.
expected<std::string> to_domain_xml(const domain_spec& spec);

/// XML-escapes & < > " ' (for text and attribute values alike).
std::string xml_escape(std::string_view s);

}  // namespace cove::manager

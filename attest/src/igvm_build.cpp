// cove's own IGVM builder: an OVMF image with SEV metadata, as an SNP IGVM file
// carrying the same pages and VMSAs as the OVMF launch path (see igvm.hpp).
#include <optional>
#include <string>

#include <fmt/format.h>

#include "cove/attest/igvm.hpp"
#include "measure_util.hpp"

namespace cove::attest {

namespace {

using detail::page_size;
using detail::put_le;

constexpr uint64_t four_gib = 0x100000000ULL;

error invalid(const std::string& msg) {
  return make_error(errc::invalid_request, "IGVM build: " + msg);
}

class writer {
 public:
  void header(uint32_t type, std::span<const uint8_t> body) {
    size_t at = vh_.size();
    vh_.resize(at + 8 + ((body.size() + 7) & ~size_t{7}), 0);
    put_le<uint32_t>(&vh_[at], type);
    put_le<uint32_t>(&vh_[at + 4], static_cast<uint32_t>(body.size()));
    std::copy(body.begin(), body.end(), vh_.begin() + static_cast<ptrdiff_t>(at + 8));
  }
  /// File data, returns its offset relative to the start of the file data section.
  size_t data(std::span<const uint8_t> d) {
    size_t at = fd_.size();
    fd_.insert(fd_.end(), d.begin(), d.end());
    return at;
  }
  void page_data(uint64_t gpa, uint32_t data_rel, bool has_data, uint16_t type) {
    std::array<uint8_t, 24> b{};
    put_le<uint64_t>(&b[0], gpa);
    put_le<uint32_t>(&b[8], mask);
    fixups_.push_back(has_data ? vh_.size() + 8 + 12 : 0);
    put_le<uint32_t>(&b[12], has_data ? data_rel : 0);
    put_le<uint16_t>(&b[20], type);
    header(igvm_vht_page_data, b);
  }
  void vp_context(uint64_t gpa, uint32_t data_rel, uint16_t vp) {
    std::array<uint8_t, 20> b{};
    put_le<uint64_t>(&b[0], gpa);
    put_le<uint32_t>(&b[8], mask);
    fixups_.push_back(vh_.size() + 8 + 12);
    put_le<uint32_t>(&b[12], data_rel);
    put_le<uint16_t>(&b[16], vp);
    header(igvm_vht_vp_context, b);
  }
  /// Lays out fixed header, variable headers and file data; turns the recorded
  /// file-data-relative offsets into file offsets; sets size and checksum.
  expected<std::vector<uint8_t>> finish() {
    const uint64_t vh_off = 24, data_start = vh_off + vh_.size(), total = data_start + fd_.size();
    if (total > UINT32_MAX) return invalid("the IGVM file would be larger than 4 GiB");
    for (size_t at : fixups_)
      if (at) put_le<uint32_t>(&vh_[at], static_cast<uint32_t>(detail::le32(&vh_[at]) + data_start));
    std::vector<uint8_t> out(24, 0);
    put_le<uint32_t>(&out[0], 0x4D564749);
    put_le<uint32_t>(&out[4], 1);
    put_le<uint32_t>(&out[8], static_cast<uint32_t>(vh_off));
    put_le<uint32_t>(&out[12], static_cast<uint32_t>(vh_.size()));
    put_le<uint32_t>(&out[16], static_cast<uint32_t>(total));
    put_le<uint32_t>(&out[20], igvm_crc32(vh_, igvm_crc32(out)));
    out.insert(out.end(), vh_.begin(), vh_.end());
    out.insert(out.end(), fd_.begin(), fd_.end());
    return out;
  }

  static constexpr uint32_t mask = 0x1;

 private:
  std::vector<uint8_t> vh_, fd_;
  std::vector<size_t> fixups_;  // positions in vh_ of file offsets to relocate (0 = none)
};

}  // namespace

expected<std::vector<uint8_t>> build_igvm_from_ovmf(std::span<const uint8_t> ovmf,
                                                    const igvm_build_options& o) {
  if (ovmf.empty() || ovmf.size() % page_size != 0 || ovmf.size() > (256ULL << 20))
    return invalid(fmt::format("OVMF size {} is not a non-zero multiple of 4096 up to 256 MiB", ovmf.size()));
  if (o.vcpus == 0 || o.vcpus > 0xFFFF) return invalid("the number of vCPUs must be 1 to 65535");
  const bool with_svsm = !o.svsm.empty();
  if (with_svsm && (o.svsm.size() % page_size != 0 || o.vars_size % page_size != 0))
    return invalid("the SVSM size and vars_size must be multiples of 4096");
  auto layout = parse_ovmf_layout(with_svsm ? o.svsm : ovmf);
  if (!layout) return invalid(layout.error().message);
  if (layout->sections.empty())
    return invalid(
        "the OVMF image has no SEV metadata sections (not an SEV-SNP capable OVMF, e.g. AmdSev or "
        "OvmfPkgX64 with SEV)");
  uint32_t sig = 0;
  if (o.vcpu_sig) {
    sig = *o.vcpu_sig;
  } else {
    if (o.vcpu_type.empty()) return invalid("missing vCPU type: set a vCPU type (e.g. EPYC-v4) or signature");
    auto s = vcpu_signature(o.vcpu_type);
    if (!s) return std::move(s).error();
    sig = *s;
  }
  const uint64_t base = four_gib - ovmf.size();
  uint64_t svsm_gpa = 0;
  std::optional<uint32_t> ap_eip, svsm_entry;
  if (with_svsm) {
    if (o.vars_size + o.svsm.size() > base)
      return invalid("the SVSM and vars_size do not fit below the OVMF");
    svsm_gpa = base - o.vars_size - o.svsm.size();
    svsm_entry = layout->entry_u32(detail::guid_svsm_info());
    if (!svsm_entry) return invalid("SVSM image has no SVSM_INFO_GUID entry in its footer table");
  } else {
    ap_eip = layout->entry_u32(detail::guid_sev_es_reset_block());
    if (!ap_eip)
      return invalid("OVMF has no SEV-ES reset block (SEV_ES_RESET_BLOCK_GUID entry) in its footer table");
    if (o.vcpus > 1 && *ap_eip == 0)
      return invalid("OVMF SEV-ES reset block has EIP 0: cannot start more than 1 vCPU");
  }

  writer w;
  {  // SUPPORTED_PLATFORM: SEV-SNP, mask 1, VTL 0, version 1, no shared GPA boundary.
    std::array<uint8_t, 16> b{};
    put_le<uint32_t>(&b[0], writer::mask);
    b[5] = igvm_platform_sev_snp;
    put_le<uint16_t>(&b[6], 1);
    w.header(igvm_vht_supported_platform, b);
  }
  {  // GUEST_POLICY
    std::array<uint8_t, 16> b{};
    put_le<uint64_t>(&b[0], o.policy);
    put_le<uint32_t>(&b[8], writer::mask);
    w.header(igvm_vht_guest_policy, b);
  }
  const size_t image_rel = w.data(ovmf);
  for (size_t off = 0; off < ovmf.size(); off += page_size)
    w.page_data(base + off, static_cast<uint32_t>(image_rel + off), true, igvm_page_normal);
  if (with_svsm) {
    const size_t svsm_rel = w.data(o.svsm);
    for (size_t off = 0; off < o.svsm.size(); off += page_size)
      w.page_data(svsm_gpa + off, static_cast<uint32_t>(svsm_rel + off), true, igvm_page_normal);
  }
  for (const auto& s : layout->sections) {
    auto zero_pages = [&](const char* what) -> expected<void> {
      if (s.size % page_size != 0 || s.gpa % page_size != 0)
        return invalid(
            fmt::format("OVMF {} section at GPA {:#x} size {:#x} is not page aligned", what, s.gpa, s.size));
      for (uint64_t off = 0; off < s.size; off += page_size)
        w.page_data(s.gpa + off, 0, false, igvm_page_normal);
      return ok();
    };
    expected<void> r = ok();
    switch (s.type) {
      case ovmf_section_snp_sec_mem:
        r = zero_pages("SNP_SEC_MEM");
        break;
      case ovmf_section_snp_kernel_hashes:  // no kernel: the hashes page stays zero
        r = zero_pages("SNP_KERNEL_HASHES");
        break;
      case ovmf_section_svsm_caa:
        r = zero_pages("SVSM_CAA");
        break;
      case ovmf_section_snp_secrets:
      case ovmf_section_cpuid:
        if (s.gpa % page_size != 0)
          return invalid(fmt::format("OVMF section GPA {:#x} is not page aligned", s.gpa));
        w.page_data(s.gpa, 0, false, s.type == ovmf_section_cpuid ? igvm_page_cpuid_data : igvm_page_secrets);
        break;
      default:
        return invalid(fmt::format("unknown OVMF metadata section type {}", s.type));
    }
    if (!r) return std::move(r).error();
  }
  // VMSAs: the BSP at the reset vector, the APs at the SEV-ES reset block's EIP — the
  // pages the OVMF path measures (QEMU VMM type).
  // With an SVSM every vCPU starts at the SVSM entry point.
  auto bsp = with_svsm ? detail::make_svsm_vmsa(*svsm_entry + svsm_gpa, sig)
                       : detail::make_vmsa(0xfffffff0, o.guest_features, sig, vmm_type::qemu);
  const size_t bsp_rel = w.data(bsp);
  size_t ap_rel = bsp_rel;
  if (o.vcpus > 1 && !with_svsm)
    ap_rel = w.data(detail::make_vmsa(*ap_eip, o.guest_features, sig, vmm_type::qemu));
  for (uint32_t i = 0; i < o.vcpus; ++i)
    w.vp_context(detail::kvm_vmsa_gpa, static_cast<uint32_t>(i == 0 ? bsp_rel : ap_rel),
                 static_cast<uint16_t>(i));
  return w.finish();
}

}  // namespace cove::attest

// SEV / SEV-ES / SEV-SNP launch digests. The algorithm follows the AMD SEV-SNP
// firmware ABI (SNP_LAUNCH_UPDATE PAGE_INFO chaining) and QEMU's initial vCPU
// state, as modelled by virtee/sev-snp-measure; see attest/README.md.
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "cove/attest/measure.hpp"
#include "cove/c_handle.hpp"
#include "measure_util.hpp"

namespace cove::attest {

namespace {

using detail::put_le;
using md_ctx = c_handle<EVP_MD_CTX, EVP_MD_CTX_free>;

using detail::guest_context;
using detail::ld_t;
using detail::make_vmsa;
using detail::page_size;
using detail::sha384;
using detail::vmsa_page;

constexpr uint64_t four_gib = 0x100000000ULL;
constexpr size_t ld_size = 48;  // SHA-384
constexpr uint64_t max_image_size = 256ULL << 20;

using sha256_t = std::array<uint8_t, 32>;

error invalid(std::string msg) {
  return make_error(errc::invalid_request, std::move(msg));
}

/// Incremental hash; OpenSSL failing here means out of memory: abort.
class hasher {
 public:
  explicit hasher(const EVP_MD* md) : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), md, nullptr) != 1) std::abort();
  }
  void update(std::span<const uint8_t> d) {
    if (!d.empty() && EVP_DigestUpdate(ctx_.get(), d.data(), d.size()) != 1) std::abort();
  }
  template <size_t N>
  std::array<uint8_t, N> finish() {
    std::array<uint8_t, N> out{};
    unsigned len = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), out.data(), &len) != 1 || len != N) std::abort();
    return out;
  }

 private:
  md_ctx ctx_;
};

}  // namespace

ld_t detail::sha384(std::span<const uint8_t> d) {
  hasher h(EVP_sha384());
  h.update(d);
  return h.finish<ld_size>();
}

namespace {

std::string describe(const std::filesystem::path& p) {
  // fmt, not "'" + s + "'": g++ 12 at -O3 reports a false -Wrestrict for the latter.
  return fmt::format("'{}'", p.string());
}

expected<std::vector<uint8_t>> read_image(const std::filesystem::path& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(errc::not_found, std::string(what) + ": cannot open " + describe(path));
  std::vector<uint8_t> data;
  char buf[65536];
  while (in) {
    in.read(buf, sizeof buf);
    auto n = static_cast<size_t>(in.gcount());
    if (data.size() + n > max_image_size)
      return make_error(errc::too_large,
                        std::string(what) + ": " + describe(path) + " is larger than 256 MiB");
    data.insert(data.end(), buf, buf + n);
  }
  if (in.bad()) return make_error(errc::not_found, std::string(what) + ": cannot read " + describe(path));
  return data;
}

expected<sha256_t> sha256_file(const std::filesystem::path& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(errc::not_found, std::string(what) + ": cannot open " + describe(path));
  hasher h(EVP_sha256());
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update({reinterpret_cast<const uint8_t*>(buf.data()), static_cast<size_t>(in.gcount())});
  }
  if (in.bad()) return make_error(errc::not_found, std::string(what) + ": cannot read " + describe(path));
  return h.finish<32>();
}

// ---- firmware images ----

struct firmware {
  std::vector<uint8_t> data;
  uint64_t gpa = 0;
  ovmf_layout layout;
};

expected<firmware> load_firmware(const std::filesystem::path& path, std::string_view what, uint64_t end_at) {
  auto data = read_image(path, what);
  if (!data) return std::move(data).error();
  auto layout = parse_ovmf_layout(*data);
  if (!layout) return invalid(std::string(what) + " " + describe(path) + ": " + layout.error().message);
  if (data->size() > end_at)
    return invalid(std::string(what) + " " + describe(path) + " does not fit below GPA " +
                   std::to_string(end_at));
  firmware fw;
  fw.gpa = end_at - data->size();
  fw.data = std::move(*data);
  fw.layout = std::move(*layout);
  return fw;
}

expected<void> check_page_multiple(const firmware& fw, std::string_view what) {
  if (fw.data.empty() || fw.data.size() % page_size != 0)
    return invalid(std::string(what) + " size " + std::to_string(fw.data.size()) +
                   " is not a non-zero multiple of 4096 bytes");
  return ok();
}

expected<uint32_t> sev_es_reset_eip(const firmware& fw) {
  auto v = fw.layout.entry_u32(detail::guid_sev_es_reset_block());
  if (!v)
    return invalid("OVMF has no SEV-ES reset block (SEV_ES_RESET_BLOCK_GUID entry) in its footer table");
  return *v;
}

bool sev_hashes_table_supported(const firmware& fw) {
  auto v = fw.layout.entry_u32(detail::guid_sev_hash_table_rv());
  return v && *v != 0;
}

// ---- kernel/initrd/cmdline hashes table (QEMU's SevHashTable layout) ----

struct sev_hashes {
  sha256_t kernel, initrd, cmdline;

  static constexpr size_t entry_size = 16 + 2 + 32;
  static constexpr size_t table_size = 16 + 2 + 3 * entry_size;           // 168
  static constexpr size_t padded_size = (table_size + 15) & ~size_t{15};  // 176

  [[nodiscard]] std::array<uint8_t, padded_size> table() const {
    std::array<uint8_t, padded_size> t{};
    auto put_guid = [&](size_t at, std::string_view g) {
      auto v = detail::known_guid(g);
      std::copy(v.begin(), v.end(), t.begin() + static_cast<ptrdiff_t>(at));
    };
    put_guid(0, "9438d606-4f22-4cc9-b479-a793d411fd21");
    put_le<uint16_t>(&t[16], table_size);
    auto entry = [&](size_t at, std::string_view g, const sha256_t& h) {
      put_guid(at, g);
      put_le<uint16_t>(&t[at + 16], entry_size);
      std::copy(h.begin(), h.end(), t.begin() + static_cast<ptrdiff_t>(at + 18));
    };
    entry(18, "97d02dd8-bd20-4c94-aa78-e7714d36ab2a", cmdline);
    entry(18 + entry_size, "44baf731-3a2f-4bd7-9af1-41e29169781d", initrd);
    entry(18 + 2 * entry_size, "4de79437-abd2-427f-b835-d5b172d2045b", kernel);
    return t;
  }
};

bool given(const std::optional<std::filesystem::path>& p) {
  return p && !p->empty();
}

expected<std::optional<sev_hashes>> load_hashes(const measure_options& o) {
  if (!given(o.kernel)) {
    if (given(o.initrd)) return invalid("an initrd was given without a kernel");
    if (o.append && !o.append->empty()) return invalid("a kernel command line was given without a kernel");
    return std::optional<sev_hashes>{};
  }
  sev_hashes h{};
  auto k = sha256_file(*o.kernel, "kernel");
  if (!k) return std::move(k).error();
  h.kernel = *k;
  if (given(o.initrd)) {
    auto i = sha256_file(*o.initrd, "initrd");
    if (!i) return std::move(i).error();
    h.initrd = *i;
  } else {
    hasher e(EVP_sha256());
    h.initrd = e.finish<32>();
  }
  std::string cmdline = o.append.value_or("");
  hasher c(EVP_sha256());
  c.update({reinterpret_cast<const uint8_t*>(cmdline.c_str()), cmdline.size() + 1});  // with its NUL
  h.cmdline = c.finish<32>();
  return std::optional<sev_hashes>{h};
}

// ---- VMSA (SEV-ES save area), one 4 KiB page per vCPU ----

void put_seg(vmsa_page& p, size_t at, uint16_t sel, uint16_t attrib, uint32_t limit, uint64_t base) {
  put_le(&p[at], sel);
  put_le(&p[at + 2], attrib);
  put_le(&p[at + 4], limit);
  put_le(&p[at + 8], base);
}

// Save-area offsets (AMD APM vol. 2, VMSA layout).
enum vmsa_off : size_t {
  seg_es = 0x00,
  seg_cs = 0x10,
  seg_ss = 0x20,
  seg_ds = 0x30,
  seg_fs = 0x40,
  seg_gs = 0x50,
  seg_gdtr = 0x60,
  seg_ldtr = 0x70,
  seg_idtr = 0x80,
  seg_tr = 0x90,
  off_efer = 0xD0,
  off_cr4 = 0x148,
  off_cr0 = 0x158,
  off_dr7 = 0x160,
  off_dr6 = 0x168,
  off_rflags = 0x170,
  off_rip = 0x178,
  off_g_pat = 0x268,
  off_rdx = 0x310,
  off_sev_features = 0x3B0,
  off_xcr0 = 0x3E8,
  off_mxcsr = 0x408,
  off_x87_fcw = 0x410,
};

void put_common_regs(vmsa_page& p, uint64_t cr0, uint64_t rip, uint64_t g_pat, uint64_t rdx,
                     uint64_t features, uint32_t mxcsr, uint16_t fcw) {
  put_le<uint64_t>(&p[off_efer], 0x1000);  // KVM sets EFER.SVME
  put_le<uint64_t>(&p[off_cr4], 0x40);     // CR4.MCE
  put_le<uint64_t>(&p[off_cr0], cr0);
  put_le<uint64_t>(&p[off_dr7], 0x400);
  put_le<uint64_t>(&p[off_dr6], 0xffff0ff0);
  put_le<uint64_t>(&p[off_rflags], 0x2);
  put_le<uint64_t>(&p[off_rip], rip);
  put_le<uint64_t>(&p[off_g_pat], g_pat);
  put_le<uint64_t>(&p[off_rdx], rdx);
  put_le<uint64_t>(&p[off_sev_features], features);
  put_le<uint64_t>(&p[off_xcr0], 0x1);
  put_le<uint32_t>(&p[off_mxcsr], mxcsr);
  put_le<uint16_t>(&p[off_x87_fcw], fcw);
}

/// Reset state of a vCPU starting at `eip` in real mode, as QEMU / EC2 / GCE set it up.
}  // namespace

vmsa_page detail::make_vmsa(uint32_t eip, uint64_t features, uint32_t vcpu_sig, vmm_type vmm) {
  uint16_t cs_flags = 0x9b, ss_flags = 0x93, tr_flags = 0x8b, fcw = 0x37f;
  uint64_t g_pat = 0x0007040600070406ULL, rdx = vcpu_sig;
  uint32_t mxcsr = 0x1f80;
  if (vmm == vmm_type::ec2) {
    if (eip == 0xfffffff0) cs_flags = 0x9a;
    ss_flags = 0x92;
    tr_flags = 0x83;
    rdx = 0x600;
    mxcsr = 0;
    fcw = 0;
  } else if (vmm == vmm_type::gce) {
    g_pat = 0x00070106;
    rdx = 0x600;
    mxcsr = 0;
    fcw = 0;
  }
  vmsa_page p{};
  put_seg(p, seg_es, 0, 0x93, 0xffff, 0);
  put_seg(p, seg_cs, 0xf000, cs_flags, 0xffff, eip & 0xffff0000U);
  put_seg(p, seg_ss, 0, ss_flags, 0xffff, 0);
  put_seg(p, seg_ds, 0, 0x93, 0xffff, 0);
  put_seg(p, seg_fs, 0, 0x93, 0xffff, 0);
  put_seg(p, seg_gs, 0, 0x93, 0xffff, 0);
  put_seg(p, seg_gdtr, 0, 0, 0xffff, 0);
  put_seg(p, seg_idtr, 0, 0, 0xffff, 0);
  put_seg(p, seg_ldtr, 0, 0x82, 0xffff, 0);
  put_seg(p, seg_tr, 0, tr_flags, 0xffff, 0);
  put_common_regs(p, 0x10, eip & 0xffff, g_pat, rdx, features, mxcsr, fcw);
  return p;
}

/// SVSM vCPUs start in 32-bit protected mode at the SVSM entry point. The x87
/// control word stays 0: the reference implementation does not set it here.
vmsa_page detail::make_svsm_vmsa(uint64_t eip, uint32_t vcpu_sig) {
  vmsa_page p{};
  put_seg(p, seg_es, 16, 0xc93, 0xffffffff, 0);
  put_seg(p, seg_cs, 8, 0xc9b, 0xffffffff, 0);
  put_seg(p, seg_ss, 16, 0xc93, 0xffffffff, 0);
  put_seg(p, seg_ds, 16, 0xc93, 0xffffffff, 0);
  put_seg(p, seg_fs, 16, 0xc93, 0xffffffff, 0);
  put_seg(p, seg_gs, 0, 0x093, 0xffff, 0);
  put_seg(p, seg_gdtr, 0, 0, 0xffff, 0);
  put_seg(p, seg_idtr, 0, 0, 0xffff, 0);
  put_seg(p, seg_ldtr, 0, 0x82, 0xffff, 0);
  put_seg(p, seg_tr, 0, 0x8b, 0xffff, 0);
  put_common_regs(p, 0x11, eip, 0x0007040600070406ULL, vcpu_sig, 0x1, 0x1f80, 0);
  return p;
}

namespace {

/// VMSA pages for `vcpus` vCPUs: the BSP starts at the reset vector, APs at the
/// SEV-ES reset block's EIP.
expected<std::vector<vmsa_page>> vmsa_pages(uint32_t vcpus, uint32_t ap_eip, uint64_t features, uint32_t sig,
                                            vmm_type vmm) {
  if (vcpus > 1 && ap_eip == 0)
    return invalid("OVMF SEV-ES reset block has EIP 0: cannot start more than 1 vCPU");
  std::vector<vmsa_page> pages;
  pages.push_back(make_vmsa(0xfffffff0, features, sig, vmm));
  if (vcpus > 1) pages.push_back(make_vmsa(ap_eip, features, sig, vmm));
  return pages;
}

// ---- SNP metadata sections ----

expected<void> snp_update_metadata(guest_context& g, const firmware& fw,
                                   const std::optional<sev_hashes>& hashes, vmm_type vmm) {
  if (hashes && !fw.layout.has_section(ovmf_section_snp_kernel_hashes))
    return invalid("Kernel specified but OVMF metadata doesn't include SNP_KERNEL_HASHES section");
  for (const auto& s : fw.layout.sections) {
    bool multi_page = s.type == ovmf_section_snp_sec_mem || s.type == ovmf_section_svsm_caa;
    if (multi_page && s.size % page_size != 0)
      return invalid("OVMF metadata section at GPA " + std::to_string(s.gpa) + " has size " +
                     std::to_string(s.size) + ", not a multiple of 4096");
    switch (s.type) {
      case ovmf_section_snp_sec_mem:
        if (vmm == vmm_type::gce)
          g.update_unmeasured_pages(s.gpa, s.size);
        else
          g.update_zero_pages(s.gpa, s.size);
        break;
      case ovmf_section_snp_secrets:
        g.update_secrets_page(s.gpa);
        break;
      case ovmf_section_cpuid:
        if (vmm != vmm_type::ec2) g.update_cpuid_page(s.gpa);
        break;
      case ovmf_section_snp_kernel_hashes:
        if (hashes) {
          auto table_gpa = fw.layout.entry_u32(detail::guid_sev_hash_table_rv());
          if (!table_gpa)
            return invalid("OVMF footer table has no SEV hashes table (SEV_HASH_TABLE_RV_GUID) entry");
          size_t off = *table_gpa & (page_size - 1);
          if (s.size != page_size || off + sev_hashes::padded_size > page_size)
            return invalid("OVMF SNP_KERNEL_HASHES section does not hold the hashes table in one page");
          vmsa_page page{};
          auto t = hashes->table();
          std::copy(t.begin(), t.end(), page.begin() + static_cast<ptrdiff_t>(off));
          g.update_normal_pages(s.gpa, page);
        } else {
          if (s.size % page_size != 0)
            return invalid("OVMF SNP_KERNEL_HASHES section size is not a multiple of 4096");
          g.update_zero_pages(s.gpa, s.size);
        }
        break;
      case ovmf_section_svsm_caa:
        g.update_zero_pages(s.gpa, s.size);
        break;
      default:
        return invalid("unknown OVMF metadata section type " + std::to_string(s.type));
    }
  }
  if (vmm == vmm_type::ec2)  // EC2 measures the CPUID page last
    for (const auto& s : fw.layout.sections)
      if (s.type == ovmf_section_cpuid) g.update_cpuid_page(s.gpa);
  return ok();
}

void add_vmsas(guest_context& g, const std::vector<vmsa_page>& pages, uint32_t vcpus) {
  for (uint32_t i = 0; i < vcpus; ++i) g.update_vmsa_page(pages[std::min<size_t>(i, pages.size() - 1)]);
}

expected<uint32_t> resolve_sig(const measure_options& o) {
  if (o.vcpu_sig) return *o.vcpu_sig;
  if (!o.vcpu_type.empty()) return vcpu_signature(o.vcpu_type);
  if (o.vmm == vmm_type::qemu)
    return invalid("missing vCPU type: set a vCPU type (e.g. EPYC-v4) or signature");
  return 0u;  // EC2 and GCE put their own value in RDX
}

std::vector<uint8_t> to_vec(std::span<const uint8_t> s) {
  return {s.begin(), s.end()};
}

// ---- the modes ----

expected<std::vector<uint8_t>> snp_digest(const measure_options& o) {
  auto fw = load_firmware(o.ovmf, "OVMF", four_gib);
  if (!fw) return std::move(fw).error();
  guest_context g;
  if (!o.snp_ovmf_hash.empty()) {
    std::string hex = o.snp_ovmf_hash;
    if (hex.size() != 2 * ld_size) return invalid("snp_ovmf_hash must be 96 hex digits (a SHA-384 digest)");
    ld_t seed{};
    for (size_t i = 0; i < ld_size; ++i) {
      auto nib = [](char c) -> int {
        return c >= '0' && c <= '9'   ? c - '0'
               : c >= 'a' && c <= 'f' ? c - 'a' + 10
               : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                      : -1;
      };
      int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) return invalid("snp_ovmf_hash is not hex");
      seed[i] = static_cast<uint8_t>(hi * 16 + lo);
    }
    g = guest_context(seed);
  } else {
    if (auto r = check_page_multiple(*fw, "OVMF"); !r) return std::move(r).error();
    g.update_normal_pages(fw->gpa, fw->data);
  }
  auto sig = resolve_sig(o);
  if (!sig) return std::move(sig).error();
  auto hashes = load_hashes(o);
  if (!hashes) return std::move(hashes).error();
  if (auto r = snp_update_metadata(g, *fw, *hashes, o.vmm); !r) return std::move(r).error();
  auto eip = sev_es_reset_eip(*fw);
  if (!eip) return std::move(eip).error();
  auto pages = vmsa_pages(o.vcpus, *eip, o.guest_features, *sig, o.vmm);
  if (!pages) return std::move(pages).error();
  add_vmsas(g, *pages, o.vcpus);
  return to_vec(g.ld());
}

expected<std::vector<uint8_t>> snp_ovmf_digest(const measure_options& o) {
  auto fw = load_firmware(o.ovmf, "OVMF", four_gib);
  if (!fw) return std::move(fw).error();
  if (auto r = check_page_multiple(*fw, "OVMF"); !r) return std::move(r).error();
  guest_context g;
  g.update_normal_pages(fw->gpa, fw->data);
  return to_vec(g.ld());
}

expected<std::vector<uint8_t>> svsm_digest(const measure_options& o) {
  if (o.vmm != vmm_type::qemu) return invalid("SVSM mode is only implemented for QEMU");
  if (o.svsm.empty()) return invalid("SVSM mode needs an SVSM image");
  auto ovmf = load_firmware(o.ovmf, "OVMF", four_gib);
  if (!ovmf) return std::move(ovmf).error();
  if (o.vars_size > ovmf->gpa) return invalid("vars_size puts the SVSM below GPA 0");
  auto svsm = load_firmware(o.svsm, "SVSM", ovmf->gpa - o.vars_size);
  if (!svsm) return std::move(svsm).error();
  if (auto r = check_page_multiple(*ovmf, "OVMF"); !r) return std::move(r).error();
  if (auto r = check_page_multiple(*svsm, "SVSM"); !r) return std::move(r).error();
  if (svsm->gpa % page_size != 0) return invalid("vars_size is not a multiple of 4096");
  auto entry = svsm->layout.entry_u32(detail::guid_svsm_info());
  if (!entry) return invalid("SVSM image has no SVSM_INFO_GUID entry in its footer table");
  auto sig = resolve_sig(o);
  if (!sig) return std::move(sig).error();
  guest_context g;
  g.update_normal_pages(ovmf->gpa, ovmf->data);
  g.update_normal_pages(svsm->gpa, svsm->data);
  if (auto r = snp_update_metadata(g, *svsm, std::nullopt, vmm_type::qemu); !r) return std::move(r).error();
  auto page = detail::make_svsm_vmsa(*entry + svsm->gpa, *sig);
  for (uint32_t i = 0; i < o.vcpus; ++i) g.update_vmsa_page(page);
  return to_vec(g.ld());
}

expected<std::vector<uint8_t>> sev_digest(const measure_options& o, bool es) {
  auto fw = load_firmware(o.ovmf, "OVMF", four_gib);
  if (!fw) return std::move(fw).error();
  auto hashes = load_hashes(o);
  if (!hashes) return std::move(hashes).error();
  hasher h(EVP_sha256());
  h.update(fw->data);
  if (*hashes) {
    if (!sev_hashes_table_supported(*fw))
      return invalid("Kernel specified but OVMF doesn't support kernel/initrd/cmdline measurement");
    auto t = (*hashes)->table();
    h.update(t);
  }
  if (es) {
    auto sig = resolve_sig(o);
    if (!sig) return std::move(sig).error();
    auto eip = sev_es_reset_eip(*fw);
    if (!eip) return std::move(eip).error();
    auto pages = vmsa_pages(o.vcpus, *eip, 0, *sig, o.vmm);
    if (!pages) return std::move(pages).error();
    for (uint32_t i = 0; i < o.vcpus; ++i) h.update((*pages)[std::min<size_t>(i, pages->size() - 1)]);
  }
  return to_vec(h.finish<32>());
}

}  // namespace

expected<sev_mode> parse_sev_mode(std::string_view s) {
  if (s == "sev" || s == "SEV") return sev_mode::sev;
  if (s == "seves" || s == "sev-es" || s == "SEVES" || s == "SEV-ES") return sev_mode::seves;
  if (s == "snp" || s == "sev-snp" || s == "SNP" || s == "SEV-SNP") return sev_mode::snp;
  if (s == "snp:ovmf-hash") return sev_mode::snp_ovmf_hash;
  std::string l(s);
  std::transform(l.begin(), l.end(), l.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (l == "snp:svsm" || l == "sev-snp:svsm") return sev_mode::snp_svsm;
  return invalid("unknown SEV mode '" + std::string(s) + "' (sev, seves, snp, snp:ovmf-hash, snp:svsm)");
}

expected<vmm_type> parse_vmm_type(std::string_view s) {
  if (s == "QEMU") return vmm_type::qemu;
  if (s == "ec2") return vmm_type::ec2;
  if (s == "gce") return vmm_type::gce;
  return invalid("unknown VMM type '" + std::string(s) + "' (QEMU, ec2, gce)");
}

uint32_t cpu_signature(uint32_t family, uint32_t model, uint32_t stepping) noexcept {
  uint32_t family_low = family > 0xf ? 0xf : family;
  uint32_t family_high = family > 0xf ? (family - 0xf) & 0xff : 0;
  return (family_high << 20) | (((model >> 4) & 0xf) << 16) | (family_low << 8) | ((model & 0xf) << 4) |
         (stepping & 0xf);
}

namespace {
struct cpu_model {
  const char* name;
  uint32_t family, model, stepping;
};
constexpr cpu_model cpu_models[] = {
    {"EPYC", 23, 1, 2},          {"EPYC-v1", 23, 1, 2},       {"EPYC-v2", 23, 1, 2},
    {"EPYC-IBPB", 23, 1, 2},     {"EPYC-v3", 23, 1, 2},       {"EPYC-v4", 23, 1, 2},
    {"EPYC-Rome", 23, 49, 0},    {"EPYC-Rome-v1", 23, 49, 0}, {"EPYC-Rome-v2", 23, 49, 0},
    {"EPYC-Rome-v3", 23, 49, 0}, {"EPYC-Milan", 25, 1, 1},    {"EPYC-Milan-v1", 25, 1, 1},
    {"EPYC-Milan-v2", 25, 1, 1}, {"EPYC-Genoa", 25, 17, 0},   {"EPYC-Genoa-v1", 25, 17, 0},
    {"EPYC-Turin", 26, 0, 0},
};
}  // namespace

std::vector<std::string> vcpu_type_names() {
  std::vector<std::string> out;
  for (const auto& m : cpu_models) out.emplace_back(m.name);
  return out;
}

expected<uint32_t> vcpu_signature(std::string_view name) {
  for (const auto& m : cpu_models)
    if (name == m.name) return cpu_signature(m.family, m.model, m.stepping);
  std::string known;
  for (const auto& m : cpu_models) known += (known.empty() ? "" : ", ") + std::string(m.name);
  return invalid("unknown vCPU type '" + std::string(name) + "' (known: " + known + ")");
}

expected<std::vector<uint8_t>> compute_launch_digest(const measure_options& o) {
  if (o.ovmf.empty()) return invalid("an OVMF image is required");
  if (!o.snp_ovmf_hash.empty() && o.mode != sev_mode::snp)
    return invalid("SNP OVMF hash only works with SNP");
  bool needs_vcpus = o.mode == sev_mode::snp || o.mode == sev_mode::seves || o.mode == sev_mode::snp_svsm;
  if (needs_vcpus && o.vcpus == 0) return invalid("the number of vCPUs must be at least 1");
  try {
    switch (o.mode) {
      case sev_mode::sev:
        return sev_digest(o, false);
      case sev_mode::seves:
        return sev_digest(o, true);
      case sev_mode::snp:
        return snp_digest(o);
      case sev_mode::snp_ovmf_hash:
        return snp_ovmf_digest(o);
      case sev_mode::snp_svsm:
        return svsm_digest(o);
    }
  } catch (const std::exception& e) {  // allocation failure, filesystem errors
    return make_error(errc::internal, std::string("launch measurement failed: ") + e.what());
  }
  return invalid("unknown SEV mode");
}

}  // namespace cove::attest

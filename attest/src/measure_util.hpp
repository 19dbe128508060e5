#pragma once
// Private helpers for the launch-measurement code: little-endian access, GUIDs,
// the SNP PAGE_INFO chain and the initial VMSA (shared by the OVMF and IGVM paths).
#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string_view>

#include "cove/attest/measure.hpp"

namespace cove::attest::detail {

inline uint16_t le16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
inline uint32_t le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
inline uint64_t le64(const uint8_t* p) {
  return static_cast<uint64_t>(le32(p)) | (static_cast<uint64_t>(le32(p + 4)) << 32);
}
template <class T>
inline void put_le(uint8_t* p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}

inline constexpr uint64_t page_size = 4096;
/// KVM measures every VMSA at this GPA ((u64)-1, page-aligned, bits 52+ cleared).
inline constexpr uint64_t kvm_vmsa_gpa = 0xFFFFFFFFF000ULL;
using ld_t = std::array<uint8_t, 48>;
using vmsa_page = std::array<uint8_t, page_size>;

/// SHA-384 (aborts only if OpenSSL cannot allocate).
ld_t sha384(std::span<const uint8_t> d);

/// Reset state of a vCPU starting at `eip` in real mode, as QEMU / EC2 / GCE set it up
/// (the VMSA page the OVMF path measures).
vmsa_page make_vmsa(uint32_t eip, uint64_t features, uint32_t vcpu_sig, vmm_type vmm);
/// SVSM vCPUs start in 32-bit protected mode at the SVSM entry point (SEV_FEATURES 1).
vmsa_page make_svsm_vmsa(uint64_t eip, uint32_t vcpu_sig);

/// SNP guest context: the launch digest, extended by one PAGE_INFO per page
/// (SNP firmware ABI, SNP_LAUNCH_UPDATE).
class guest_context {
 public:
  explicit guest_context(const ld_t& seed = {}) : ld_(seed) {}
  [[nodiscard]] const ld_t& ld() const { return ld_; }

  /// Page type 1; `data` is hashed in 4 KiB pieces (callers pad a short last page).
  void update_normal_pages(uint64_t gpa, std::span<const uint8_t> data) {
    for (size_t off = 0; off < data.size(); off += page_size)
      update(1, gpa + off, sha384(data.subspan(off, std::min<size_t>(page_size, data.size() - off))));
  }
  /// Page type 1 with the page's SHA-384 already computed.
  void update_normal_page_digest(uint64_t gpa, const ld_t& contents) { update(1, gpa, contents); }
  void update_vmsa_page(std::span<const uint8_t> page, uint64_t gpa = kvm_vmsa_gpa) {
    update(2, gpa, sha384(page));
  }
  void update_zero_pages(uint64_t gpa, uint64_t len) { repeat(3, gpa, len); }
  void update_unmeasured_pages(uint64_t gpa, uint64_t len) { repeat(4, gpa, len); }
  void update_secrets_page(uint64_t gpa) { update(5, gpa, {}); }
  void update_cpuid_page(uint64_t gpa) { update(6, gpa, {}); }

 private:
  void repeat(uint8_t type, uint64_t gpa, uint64_t len) {
    for (uint64_t off = 0; off < len; off += page_size) update(type, gpa + off, {});
  }
  // PAGE_INFO: DIGEST_CUR, CONTENTS, LENGTH (u16), PAGE_TYPE, IMI_PAGE, VMPL3/2/1 perms,
  // reserved, GPA (u64).
  void update(uint8_t page_type, uint64_t gpa, const ld_t& contents) {
    std::array<uint8_t, 0x70> pi{};
    std::copy(ld_.begin(), ld_.end(), pi.begin());
    std::copy(contents.begin(), contents.end(), pi.begin() + 48);
    put_le<uint16_t>(&pi[96], 0x70);
    pi[98] = page_type;
    put_le<uint64_t>(&pi[104], gpa);
    ld_ = sha384(pi);
  }
  ld_t ld_;
};

inline guid_le known_guid(std::string_view s) {
  return *parse_guid(s);  // only called with the literals below
}
inline const guid_le& guid_ovmf_table_footer() {
  static const guid_le g = known_guid("96b582de-1fb2-45f7-baea-a366c55a082d");
  return g;
}
inline const guid_le& guid_sev_hash_table_rv() {
  static const guid_le g = known_guid("7255371f-3a3b-4b04-927b-1da6efa8d454");
  return g;
}
inline const guid_le& guid_sev_es_reset_block() {
  static const guid_le g = known_guid("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
  return g;
}
inline const guid_le& guid_sev_metadata() {
  static const guid_le g = known_guid("dc886566-984a-4798-a75e-5585a7bf67cc");
  return g;
}
inline const guid_le& guid_svsm_info() {
  static const guid_le g = known_guid("a789a612-0597-4c4b-a49f-cbb1fe9d1ddd");
  return g;
}

}  // namespace cove::attest::detail

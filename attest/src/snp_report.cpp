#include "cove/attest/snp_report.hpp"

#include <algorithm>
#include <cstring>

namespace cove::attest {
namespace {

uint64_t le(const uint8_t* p, std::size_t n) noexcept {
  uint64_t v = 0;
  for (std::size_t i = n; i > 0; --i) v = (v << 8) | p[i - 1];
  return v;
}

template <std::size_t N>
void copy_to(std::array<uint8_t, N>& dst, const uint8_t* src) noexcept {
  std::memcpy(dst.data(), src, N);
}

struct mbz_range {
  std::size_t begin, end;
  const char* name;
  uint32_t below_version;  // range is only reserved when version < this (0 = always)
};

constexpr mbz_range mbz_ranges[] = {
    {0x04C, 0x050, "reserved 0x04C", 0},
    {0x188, 0x18B, "CPUID (reserved before v3)", 3},
    {0x18B, 0x1A0, "reserved 0x18B", 0},
    {0x1EB, 0x1EC, "reserved 0x1EB", 0},
    {0x1EF, 0x1F0, "reserved 0x1EF", 0},
    {0x1F8, 0x208, "MIT vectors (reserved before v5)", 5},
    {0x208, 0x2A0, "reserved 0x208", 0},
    {0x2A0 + 48, 0x2A0 + 72, "signature R high bytes", 0},
    {0x2E8 + 48, 0x2E8 + 72, "signature S high bytes", 0},
    {0x330, 0x4A0, "reserved 0x330", 0},
};

}  // namespace

std::string_view to_string(snp_product p) noexcept {
  switch (p) {
    case snp_product::milan:
      return "Milan";
    case snp_product::genoa:
      return "Genoa";
    case snp_product::turin:
      return "Turin";
    case snp_product::unknown:
      break;
  }
  return "unknown";
}

snp_product product_from_name(std::string_view name) noexcept {
  if (name.starts_with("Milan")) return snp_product::milan;
  if (name.starts_with("Genoa")) return snp_product::genoa;
  if (name.starts_with("Turin")) return snp_product::turin;
  return snp_product::unknown;
}

snp_product product_from_cpuid(uint8_t family, uint8_t model) noexcept {
  if (family == 0x19) {
    if (model <= 0x0F) return snp_product::milan;
    if ((model >= 0x10 && model <= 0x1F) || (model >= 0xA0 && model <= 0xAF)) return snp_product::genoa;
  }
  if (family == 0x1A) return snp_product::turin;
  return snp_product::unknown;
}

tcb_version decode_tcb(uint64_t raw, snp_product p) noexcept {
  auto b = [raw](int i) { return static_cast<uint8_t>(raw >> (8 * i)); };
  tcb_version t;
  if (p == snp_product::turin) {
    t.fmc = b(0);
    t.bl = b(1);
    t.tee = b(2);
    t.snp = b(3);
  } else {
    t.bl = b(0);
    t.tee = b(1);
    t.snp = b(6);
  }
  t.microcode = b(7);
  return t;
}

uint64_t encode_tcb(const tcb_version& t, snp_product p) noexcept {
  auto put = [](uint8_t v, int i) { return static_cast<uint64_t>(v) << (8 * i); };
  if (p == snp_product::turin)
    return put(t.fmc, 0) | put(t.bl, 1) | put(t.tee, 2) | put(t.snp, 3) | put(t.microcode, 7);
  return put(t.bl, 0) | put(t.tee, 1) | put(t.snp, 6) | put(t.microcode, 7);
}

std::string to_string(const tcb_version& t, snp_product p) {
  std::string s = "bl=" + std::to_string(t.bl) + " tee=" + std::to_string(t.tee) +
                  " snp=" + std::to_string(t.snp) + " microcode=" + std::to_string(t.microcode);
  if (p == snp_product::turin) s += " fmc=" + std::to_string(t.fmc);
  return s;
}

expected<snp_report> parse_snp_report(std::span<const uint8_t> bytes) {
  if (bytes.size() != snp_report_size)
    return make_error(errc::invalid_request, "report is " + std::to_string(bytes.size()) +
                                                 " bytes, expected " + std::to_string(snp_report_size));
  const uint8_t* p = bytes.data();
  snp_report r;
  r.version = static_cast<uint32_t>(le(p, 4));
  if (r.version < snp_min_version || r.version > snp_max_version)
    return make_error(errc::invalid_request,
                      "unsupported report version " + std::to_string(r.version) + " (supported: 2 to 5)");
  r.signature_algo = static_cast<uint32_t>(le(p + 0x034, 4));
  if (r.signature_algo != snp_sig_algo_ecdsa_p384_sha384)
    return make_error(errc::invalid_request, "unsupported SIGNATURE_ALGO " +
                                                 std::to_string(r.signature_algo) +
                                                 " (expected 1 = ECDSA P-384 with SHA-384)");
  r.signer_info = static_cast<uint32_t>(le(p + 0x048, 4));
  if ((r.signer_info & ~0x1Fu) != 0)
    return make_error(errc::invalid_request,
                      "reserved signer-info bits set: 0x" + to_hex(bytes.subspan(0x48, 4)));
  for (const auto& m : mbz_ranges) {
    if (m.below_version != 0 && r.version >= m.below_version) continue;
    if (std::any_of(p + m.begin, p + m.end, [](uint8_t b) { return b != 0; }))
      return make_error(errc::invalid_request, std::string("must-be-zero field is not zero: ") + m.name);
  }
  r.guest_svn = static_cast<uint32_t>(le(p + 0x004, 4));
  r.policy = le(p + 0x008, 8);
  copy_to(r.family_id, p + 0x010);
  copy_to(r.image_id, p + 0x020);
  r.vmpl = static_cast<uint32_t>(le(p + 0x030, 4));
  r.current_tcb = le(p + 0x038, 8);
  r.platform_info = le(p + 0x040, 8);
  copy_to(r.report_data, p + 0x050);
  copy_to(r.measurement, p + 0x090);
  copy_to(r.host_data, p + 0x0C0);
  copy_to(r.id_key_digest, p + 0x0E0);
  copy_to(r.author_key_digest, p + 0x110);
  copy_to(r.report_id, p + 0x140);
  copy_to(r.report_id_ma, p + 0x160);
  r.reported_tcb = le(p + 0x180, 8);
  r.cpuid_fam_id = p[0x188];
  r.cpuid_mod_id = p[0x189];
  r.cpuid_step = p[0x18A];
  copy_to(r.chip_id, p + 0x1A0);
  r.committed_tcb = le(p + 0x1E0, 8);
  r.current_build = p[0x1E8];
  r.current_minor = p[0x1E9];
  r.current_major = p[0x1EA];
  r.committed_build = p[0x1EC];
  r.committed_minor = p[0x1ED];
  r.committed_major = p[0x1EE];
  r.launch_tcb = le(p + 0x1F0, 8);
  r.launch_mit_vector = le(p + 0x1F8, 8);
  r.current_mit_vector = le(p + 0x200, 8);
  copy_to(r.signature_r, p + 0x2A0);
  copy_to(r.signature_s, p + 0x2E8);
  if (r.version >= 3) r.product = product_from_cpuid(r.cpuid_fam_id, r.cpuid_mod_id);
  copy_to(r.raw, p);
  return r;
}

std::string to_hex(std::span<const uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 0xF]);
  }
  return s;
}

std::optional<std::vector<uint8_t>> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<uint8_t> out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    int hi = nib(hex[i]), lo = nib(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<uint8_t>((hi << 4) | lo));
  }
  return out;
}

}  // namespace cove::attest

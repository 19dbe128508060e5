// IGVM parser and SEV-SNP launch digest. Layouts from the IGVM specification
// (igvm_defs); loader behaviour (which page types QEMU/KVM hands the PSP) from QEMU's
// IGVM backend. See attest/README.md "IGVM".
#include "cove/attest/igvm.hpp"

#include <algorithm>
#include <bit>
#include <fstream>
#include <map>
#include <string>

#include <fmt/format.h>

#include "measure_util.hpp"

namespace cove::attest {

namespace {

using detail::le16;
using detail::le32;
using detail::le64;
using detail::page_size;

constexpr uint32_t magic = 0x4D564749;  // "IGVM"
constexpr size_t fixed_v1 = 24, fixed_v2 = 32;
constexpr uint64_t page_2m = 2ULL << 20;
constexpr uint64_t max_parameter_area = 256ULL << 20;
constexpr uint64_t max_file = 256ULL << 20;

error bad(uint64_t off, const std::string& msg) {
  return make_error(errc::invalid_request, fmt::format("IGVM: offset {:#x}: {}", off, msg));
}
error bad(const std::string& msg) {
  return make_error(errc::invalid_request, "IGVM: " + msg);
}

enum class section { platform, init, directive };

struct known_type {
  uint32_t type;
  uint32_t length;
  const char* name;
};

// Every type of the specification, with its structure size (IGVM_VHS_*).
constexpr known_type known_types[] = {
    {0x001, 16, "SUPPORTED_PLATFORM"},
    {0x101, 16, "GUEST_POLICY"},
    {0x102, 48, "RELOCATABLE_REGION"},
    {0x103, 32, "PAGE_TABLE_RELOCATION_REGION"},
    {0x104, 16, "CORIM_DOCUMENT"},
    {0x105, 16, "CORIM_SIGNATURE"},
    {0x106, 32, "CCA_POLICY"},
    {0x301, 16, "PARAMETER_AREA"},
    {0x302, 24, "PAGE_DATA"},
    {0x303, 16, "PARAMETER_INSERT"},
    {0x304, 20, "VP_CONTEXT"},
    {0x305, 24, "REQUIRED_MEMORY"},
    {0x307, 8, "VP_COUNT_PARAMETER"},
    {0x308, 8, "SRAT"},
    {0x309, 8, "MADT"},
    {0x30A, 8, "MMIO_RANGES"},
    {0x30B, 696, "SNP_ID_BLOCK"},
    {0x30C, 8, "MEMORY_MAP"},
    {0x30D, 16, "ERROR_RANGE"},
    {0x30E, 8, "COMMAND_LINE"},
    {0x30F, 8, "SLIT"},
    {0x310, 8, "PPTT"},
    {0x311, 864, "VBS_MEASUREMENT"},
    {0x312, 8, "DEVICE_TREE"},
    {0x313, 8, "ENVIRONMENT_INFO_PARAMETER"},
};

const known_type* find_type(uint32_t t) {
  for (const auto& k : known_types)
    if (k.type == t) return &k;
  return nullptr;
}

std::optional<section> section_of(uint32_t t) {
  if (t >= 0x1 && t <= 0x100) return section::platform;
  if (t >= 0x101 && t <= 0x200) return section::init;
  if (t >= 0x301 && t <= 0x400) return section::directive;
  return std::nullopt;
}

bool is_parameter_usage(uint32_t t) {
  return (t >= 0x307 && t <= 0x310 && t != igvm_vht_snp_id_block && t != igvm_vht_error_range) ||
         t == 0x312 || t == 0x313;
}

bool all_zero(std::span<const uint8_t> s) {
  return std::all_of(s.begin(), s.end(), [](uint8_t b) { return b == 0; });
}

const uint32_t* crc_table() {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table.data();
}

struct parameter_area {
  uint64_t size = 0;
  bool inserted = false;
};

class parser {
 public:
  explicit parser(std::span<const uint8_t> f) : f_(f) {}

  expected<igvm_file> run() {
    if (f_.size() < fixed_v1)
      return bad(fmt::format("file is {} bytes, smaller than the 24-byte fixed header", f_.size()));
    if (le32(&f_[0]) != magic)
      return bad(
          0, fmt::format("not an IGVM file (magic {:#010x}, expected 0x4d564749 \"IGVM\")", le32(&f_[0])));
    out_.format_version = le32(&f_[4]);
    size_t fixed = fixed_v1;
    if (out_.format_version == 2) {
      fixed = fixed_v2;
      if (f_.size() < fixed_v2) return bad("version 2 file is smaller than the 32-byte fixed header");
      if (uint32_t arch = le32(&f_[24]); arch != 0)
        return bad(24, fmt::format("architecture {} is not supported (only 0, x64)", arch));
      if (uint32_t ps = le32(&f_[28]); ps != page_size)
        return bad(28, fmt::format("page size {} is not supported (only 4096)", ps));
    } else if (out_.format_version != 1) {
      return bad(4, fmt::format("format version {} is not supported (1 or 2)", out_.format_version));
    }
    const uint64_t vh_off = le32(&f_[8]), vh_size = le32(&f_[12]), total = le32(&f_[16]);
    if (total != f_.size())
      return bad(16, fmt::format("total_file_size {} but the file is {} bytes", total, f_.size()));
    if (vh_off < fixed || vh_off % 8 != 0)
      return bad(8,
                 fmt::format("variable_header_offset {:#x} is not an 8-byte aligned offset after the {}-byte "
                             "fixed header",
                             vh_off, fixed));
    if (vh_off > total || vh_size > total - vh_off)
      return bad(12,
                 fmt::format("variable header section [{:#x}, +{:#x}) runs past the end of the file ({:#x})",
                             vh_off, vh_size, total));
    if (!all_zero(f_.subspan(fixed, vh_off - fixed)))
      return bad(fixed, "bytes between the fixed and variable headers are not zero");
    // CRC32 over the fixed header (checksum field as zero) and the variable headers.
    std::vector<uint8_t> fh(f_.begin(), f_.begin() + static_cast<ptrdiff_t>(fixed));
    detail::put_le<uint32_t>(&fh[20], 0);
    uint32_t crc = igvm_crc32(f_.subspan(vh_off, vh_size), igvm_crc32(fh));
    if (crc != le32(&f_[20]))
      return bad(20, fmt::format("checksum {:#010x} does not match the headers' CRC32 {:#010x}",
                                 le32(&f_[20]), crc));
    data_start_ = vh_off + vh_size;

    uint64_t pos = vh_off;
    const uint64_t end = vh_off + vh_size;
    while (pos < end) {
      if (end - pos < 8)
        return bad(pos, fmt::format("truncated variable header: {} bytes left, a header needs 8", end - pos));
      const uint32_t raw = le32(&f_[pos]), len = le32(&f_[pos + 4]);
      const uint64_t body = pos + 8, padded = (uint64_t{len} + 7) & ~uint64_t{7};
      if (padded > end - body)
        return bad(pos, fmt::format("header type {:#x} of length {} runs past the variable header section "
                                    "(ends at {:#x})",
                                    raw, len, end));
      if (!all_zero(f_.subspan(body + len, padded - len)))
        return bad(body + len, fmt::format("padding after header type {:#x} is not zero", raw));
      const uint32_t type = raw & ~igvm_vht_optional_bit;
      const known_type* k = find_type(type);
      auto sec = section_of(type);
      if (!k) {
        if (!(raw & igvm_vht_optional_bit))
          return bad(pos, fmt::format("unknown variable header type {:#x} (not marked optional)", raw));
      } else if (len != k->length) {
        return bad(pos, fmt::format("{} has length {}, expected {}", k->name, len, k->length));
      }
      if (sec) {
        if (*sec < section_)
          return bad(pos, fmt::format("header type {:#x} ({} section) after a later section's header", raw,
                                      *sec == section::platform ? "platform" : "initialization"));
        section_ = *sec;
      }
      if (k) {
        if (auto r = header(pos, type, f_.subspan(body, len)); !r) return std::move(r).error();
      }
      pos = body + padded;
    }
    if (out_.platforms.empty()) return bad("no IGVM_VHT_SUPPORTED_PLATFORM header");
    out_.image = f_;
    return std::move(out_);
  }

 private:
  expected<void> check_mask(uint64_t pos, uint32_t mask) const {
    if (mask == 0 || (mask & ~declared_) != 0)
      return bad(pos,
                 fmt::format("compatibility mask {:#x} does not name declared platforms (declared: {:#x})",
                             mask, declared_));
    return ok();
  }

  expected<void> check_data(uint64_t pos, uint64_t file_offset, uint64_t len, const char* what) const {
    if (file_offset < data_start_ || file_offset > f_.size() || len > f_.size() - file_offset)
      return bad(pos,
                 fmt::format("{} file data [{:#x}, +{:#x}) is outside the file data section [{:#x}, {:#x})",
                             what, file_offset, len, data_start_, f_.size()));
    return ok();
  }

  expected<void> header(uint64_t pos, uint32_t type, std::span<const uint8_t> b) {
    const uint8_t* p = b.data();
    igvm_header h;
    h.type = type;
    h.offset = static_cast<uint32_t>(pos);
    switch (type) {
      case igvm_vht_supported_platform: {
        igvm_platform pl{le32(p), p[4], p[5], le16(p + 6), le64(p + 8)};
        if (std::popcount(pl.compatibility_mask) != 1)
          return bad(pos, fmt::format("platform compatibility mask {:#x} must have exactly one bit set",
                                      pl.compatibility_mask));
        if (pl.platform_type > 6) return bad(pos, fmt::format("unknown platform type {}", pl.platform_type));
        if (pl.platform_type == igvm_platform_sev_snp && pl.platform_version != 1)
          return bad(pos,
                     fmt::format("SEV-SNP platform version {} is not supported (1)", pl.platform_version));
        for (const auto& o : out_.platforms)
          if (o.platform_type == pl.platform_type || o.compatibility_mask == pl.compatibility_mask)
            return bad(pos, "a second SUPPORTED_PLATFORM with the same platform type or mask");
        declared_ |= pl.compatibility_mask;
        out_.platforms.push_back(pl);
        return ok();
      }
      case igvm_vht_guest_policy: {
        h.policy = le64(p);
        h.compatibility_mask = le32(p + 8);
        if (le32(p + 12) != 0) return bad(pos, "GUEST_POLICY reserved field is not zero");
        for (const auto& o : out_.headers)
          if (o.type == type && (o.compatibility_mask & h.compatibility_mask))
            return bad(pos, "a second GUEST_POLICY for the same platform");
        break;
      }
      case igvm_vht_relocatable_region:
      case igvm_vht_page_table_relocation:
      case igvm_vht_cca_policy:
      case igvm_vht_vbs_measurement:
        h.compatibility_mask = le32(p);
        if (type == igvm_vht_cca_policy && le32(p + 4) != 0)
          return bad(pos, "CCA_POLICY reserved field is not zero");
        break;
      case igvm_vht_corim_document:
      case igvm_vht_corim_signature:
        h.compatibility_mask = le32(p);
        h.file_offset = le32(p + 4);
        h.size = le32(p + 8);
        if (le32(p + 12) != 0) return bad(pos, "CoRIM header reserved field is not zero");
        if (auto r = check_data(pos, h.file_offset, h.size, "CoRIM"); !r) return r;
        break;
      case igvm_vht_parameter_area: {
        h.size = le64(p);
        h.area_index = le32(p + 8);
        h.file_offset = le32(p + 12);
        if (h.size == 0 || h.size % page_size != 0 || h.size > max_parameter_area)
          return bad(pos,
                     fmt::format("PARAMETER_AREA size {:#x} is not a non-zero multiple of 4096 up to 256 MiB",
                                 h.size));
        if (areas_.count(h.area_index))
          return bad(pos, fmt::format("parameter area index {} is declared twice", h.area_index));
        if (h.file_offset != 0)
          if (auto r = check_data(pos, h.file_offset, h.size, "PARAMETER_AREA"); !r) return r;
        areas_[h.area_index] = {h.size, false};
        out_.headers.push_back(h);
        return ok();
      }
      case igvm_vht_page_data: {
        h.gpa = le64(p);
        h.compatibility_mask = le32(p + 8);
        h.file_offset = le32(p + 12);
        h.flags = le32(p + 16);
        h.data_type = le16(p + 20);
        if (le16(p + 22) != 0) return bad(pos, "PAGE_DATA reserved field is not zero");
        if (h.flags & ~uint32_t{7})
          return bad(pos, fmt::format("PAGE_DATA flags {:#x} set reserved bits", h.flags));
        if (h.data_type > igvm_page_cpuid_xf)
          return bad(pos, fmt::format("PAGE_DATA data type {} is unknown", h.data_type));
        const uint64_t len = (h.flags & igvm_page_flag_2mb) ? page_2m : page_size;
        if (h.gpa % len != 0 || h.gpa > UINT64_MAX - len)
          return bad(pos,
                     fmt::format("PAGE_DATA GPA {:#x} is not aligned to its page size {:#x}", h.gpa, len));
        if (h.file_offset != 0) {
          if (len != page_size) return bad(pos, "2 MiB PAGE_DATA with file data is not supported");
          if (auto r = check_data(pos, h.file_offset, page_size, "PAGE_DATA"); !r) return r;
        }
        break;
      }
      case igvm_vht_parameter_insert: {
        h.gpa = le64(p);
        h.compatibility_mask = le32(p + 8);
        h.area_index = le32(p + 12);
        if (h.gpa % page_size != 0)
          return bad(pos, fmt::format("PARAMETER_INSERT GPA {:#x} is not aligned", h.gpa));
        auto it = areas_.find(h.area_index);
        if (it == areas_.end() || it->second.inserted)
          return bad(pos, fmt::format("PARAMETER_INSERT of parameter area {}, which is {}", h.area_index,
                                      it == areas_.end() ? "not declared" : "already inserted"));
        if (h.gpa > UINT64_MAX - it->second.size) return bad(pos, "PARAMETER_INSERT GPA range overflows");
        it->second.inserted = true;
        h.size = it->second.size;
        break;
      }
      case igvm_vht_vp_context: {
        h.gpa = le64(p);
        h.compatibility_mask = le32(p + 8);
        h.file_offset = le32(p + 12);
        h.vp_index = le16(p + 16);
        if (le16(p + 18) != 0) return bad(pos, "VP_CONTEXT reserved field is not zero");
        if (h.gpa % page_size != 0)
          return bad(pos, fmt::format("VP_CONTEXT GPA {:#x} is not aligned", h.gpa));
        auto snp = out_.snp_mask();
        const bool for_snp = snp && (h.compatibility_mask & *snp);
        if (for_snp && h.compatibility_mask != *snp)
          return bad(pos, "VP_CONTEXT mask mixes SEV-SNP with other platforms (their contexts differ)");
        if (auto r = check_data(pos, h.file_offset, for_snp ? page_size : 1, "VP_CONTEXT"); !r) return r;
        break;
      }
      case igvm_vht_required_memory:
        h.gpa = le64(p);
        h.compatibility_mask = le32(p + 8);
        h.size = le32(p + 12);
        h.flags = le32(p + 16);
        if (h.gpa % page_size != 0 || h.size % page_size != 0)
          return bad(pos, "REQUIRED_MEMORY GPA or size is not 4 KiB aligned");
        if ((h.flags & ~uint32_t{1}) != 0 || le32(p + 20) != 0)
          return bad(pos, "REQUIRED_MEMORY reserved flags or field are not zero");
        break;
      case igvm_vht_snp_id_block:
        h.compatibility_mask = le32(p);
        if (p[4] > 1 || p[5] || p[6] || p[7])
          return bad(pos, "SNP_ID_BLOCK author_key_enabled/reserved invalid");
        std::copy_n(p + 8, 48, h.ld.begin());
        for (const auto& o : out_.headers)
          if (o.type == type && (o.compatibility_mask & h.compatibility_mask))
            return bad(pos, "a second SNP_ID_BLOCK for the same platform");
        break;
      case igvm_vht_error_range:
        h.gpa = le64(p);
        h.compatibility_mask = le32(p + 8);
        h.size = le32(p + 12);
        if (h.gpa % page_size != 0 || h.size % page_size != 0)
          return bad(pos, "ERROR_RANGE GPA or size is not 4 KiB aligned");
        break;
      default: {  // parameter usages: IGVM_VHS_PARAMETER {area index, byte offset}
        if (!is_parameter_usage(type)) return bad(pos, fmt::format("unhandled header type {:#x}", type));
        h.area_index = le32(p);
        h.size = le32(p + 4);  // byte offset
        auto it = areas_.find(h.area_index);
        if (it == areas_.end() || it->second.inserted)
          return bad(
              pos, fmt::format("{} uses parameter area {}, which is {}", find_type(type)->name, h.area_index,
                               it == areas_.end() ? "not declared" : "already inserted"));
        if (h.size >= it->second.size)
          return bad(pos, fmt::format("{} byte offset {:#x} is outside parameter area {} ({:#x} bytes)",
                                      find_type(type)->name, h.size, h.area_index, it->second.size));
        out_.headers.push_back(h);
        return ok();
      }
    }
    if (auto r = check_mask(pos, h.compatibility_mask); !r) return r;
    out_.headers.push_back(h);
    return ok();
  }

  std::span<const uint8_t> f_;
  igvm_file out_;
  uint64_t data_start_ = 0;
  uint32_t declared_ = 0;
  section section_ = section::platform;
  std::map<uint32_t, parameter_area> areas_;
};

}  // namespace

uint32_t igvm_crc32(std::span<const uint8_t> d, uint32_t crc) {
  const uint32_t* t = crc_table();
  uint32_t c = crc ^ 0xFFFFFFFFu;
  for (uint8_t b : d) c = t[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::optional<uint32_t> igvm_file::snp_mask() const {
  for (const auto& p : platforms)
    if (p.platform_type == igvm_platform_sev_snp) return p.compatibility_mask;
  return std::nullopt;
}

std::span<const uint8_t> igvm_file::data(const igvm_header& h, size_t len) const {
  if (h.file_offset == 0 || h.file_offset > image.size() || len > image.size() - h.file_offset) return {};
  return image.subspan(h.file_offset, len);
}

expected<igvm_file> parse_igvm(std::span<const uint8_t> file) {
  if (file.size() > UINT32_MAX) return bad("file is larger than 4 GiB");
  return parser(file).run();
}

expected<igvm_measurement> measure_igvm(std::span<const uint8_t> file, const igvm_measure_options& o) {
  auto f = parse_igvm(file);
  if (!f) return std::move(f).error();
  auto snp = f->snp_mask();
  if (!snp) return bad("the file declares no SEV-SNP platform (SUPPORTED_PLATFORM with platform type 2)");
  igvm_measurement m;
  detail::guest_context g;
  static const detail::vmsa_page zero_page{};
  static const detail::ld_t zero_digest = detail::sha384(zero_page);
  bool seen_vp = false;
  auto count = [&](uint64_t bytes) { m.pages += bytes / page_size; };
  auto after_vmsa = [&](const igvm_header& h, const char* what) -> expected<void> {
    if (o.check_kvm && seen_vp)
      return bad(h.offset,
                 fmt::format("{} after a VP_CONTEXT: KVM measures the VMSAs last (at launch finish), so "
                             "QEMU/KVM would report another digest",
                             what));
    return ok();
  };
  for (const auto& h : f->headers) {
    if (h.type != igvm_vht_parameter_area && !is_parameter_usage(h.type) && !(h.compatibility_mask & *snp))
      continue;
    switch (h.type) {
      case igvm_vht_guest_policy:
        m.policy = h.policy;
        break;
      case igvm_vht_relocatable_region:
      case igvm_vht_page_table_relocation:
        return bad(h.offset,
                   "relocatable region for SEV-SNP: the loader chooses where it goes, so the file does "
                   "not determine the launch digest");
      case igvm_vht_page_data: {
        if (auto r = after_vmsa(h, "PAGE_DATA"); !r) return std::move(r).error();
        if (h.flags & igvm_page_flag_shared) {
          if (o.check_kvm)
            return bad(h.offset,
                       "shared PAGE_DATA: QEMU ignores the shared flag and measures the page, the "
                       "specification does not; refusing to guess");
          break;  // not part of the launch measurement
        }
        const uint64_t len = (h.flags & igvm_page_flag_2mb) ? page_2m : page_size;
        if (h.data_type != igvm_page_normal && len != page_size)
          return bad(h.offset, "2 MiB secrets or CPUID PAGE_DATA");
        if (h.data_type == igvm_page_secrets) {
          g.update_secrets_page(h.gpa);
        } else if (h.data_type == igvm_page_cpuid_data || h.data_type == igvm_page_cpuid_xf) {
          g.update_cpuid_page(h.gpa);
        } else if (h.flags & igvm_page_flag_unmeasured) {
          g.update_unmeasured_pages(h.gpa, len);
        } else if (h.file_offset == 0) {
          if (o.native_zero) {
            g.update_zero_pages(h.gpa, len);
          } else {
            for (uint64_t off = 0; off < len; off += page_size)
              g.update_normal_page_digest(h.gpa + off, zero_digest);
          }
        } else {
          g.update_normal_pages(h.gpa, f->data(h, page_size));
        }
        count(len);
        break;
      }
      case igvm_vht_parameter_insert:
        if (auto r = after_vmsa(h, "PARAMETER_INSERT"); !r) return std::move(r).error();
        g.update_unmeasured_pages(h.gpa, h.size);
        count(h.size);
        break;
      case igvm_vht_vp_context:
        if (o.check_kvm) {
          if (h.gpa != detail::kvm_vmsa_gpa)
            return bad(h.offset, fmt::format("VP_CONTEXT GPA {:#x}: QEMU/KVM only accept the VMSA at {:#x}",
                                             h.gpa, detail::kvm_vmsa_gpa));
          if (h.vp_index != m.vcpus)
            return bad(h.offset,
                       fmt::format("VP_CONTEXT for vp_index {}, expected {} (KVM measures vCPU 0, 1, ... "
                                   "in order)",
                                   h.vp_index, m.vcpus));
        }
        seen_vp = true;
        g.update_vmsa_page(f->data(h, page_size), h.gpa);
        ++m.vcpus;
        count(page_size);
        break;
      case igvm_vht_snp_id_block:
        m.id_block_ld = h.ld;
        break;
      default:
        break;
    }
  }
  if (m.vcpus == 0)
    return bad(
        "no SEV-SNP VP_CONTEXT: the initial vCPU state (VMSA) is not in the file, so it does not determine "
        "the launch digest");
  m.digest.assign(g.ld().begin(), g.ld().end());
  return m;
}

expected<igvm_measurement> measure_igvm_file(const std::filesystem::path& path,
                                             const igvm_measure_options& o) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(errc::not_found, fmt::format("IGVM: cannot open '{}'", path.string()));
  std::vector<uint8_t> data;
  char buf[65536];
  while (in) {
    in.read(buf, sizeof buf);
    auto n = static_cast<size_t>(in.gcount());
    if (data.size() + n > max_file)
      return make_error(errc::too_large, fmt::format("IGVM: '{}' is larger than 256 MiB", path.string()));
    data.insert(data.end(), buf, buf + n);
  }
  if (in.bad()) return make_error(errc::not_found, fmt::format("IGVM: cannot read '{}'", path.string()));
  try {
    return measure_igvm(data, o);
  } catch (const std::exception& e) {
    return make_error(errc::internal, std::string("IGVM measurement failed: ") + e.what());
  }
}

}  // namespace cove::attest

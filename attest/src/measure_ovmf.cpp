// OVMF footer table (GUIDed entries walked backwards from the image end) and the
// SEV metadata block ("ASEV") with its SNP section descriptors.
#include <algorithm>
#include <string>

#include "cove/attest/measure.hpp"
#include "measure_util.hpp"

namespace cove::attest {

namespace {

constexpr size_t entry_header_size = 18;     // u16 size + 16-byte GUID, after the entry data
constexpr size_t footer_gap = 32;            // the table ends 32 bytes before the image end
constexpr size_t metadata_header_size = 16;  // "ASEV", u32 size, u32 version, u32 num_items
constexpr size_t section_desc_size = 12;     // u32 gpa, u32 size, u32 type

error bad(std::string msg) {
  return make_error(errc::invalid_request, "OVMF: " + std::move(msg));
}

}  // namespace

std::optional<guid_le> parse_guid(std::string_view s) {
  // 8-4-4-4-12 hex digits; the first three groups are stored little-endian.
  if (s.size() != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') return std::nullopt;
  std::string hex;
  for (char c : s)
    if (c != '-') hex.push_back(c);
  std::array<uint8_t, 16> be{};
  for (size_t i = 0; i < 16; ++i) {
    int v = 0;
    for (size_t k = 0; k < 2; ++k) {
      char c = hex[2 * i + k];
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (d < 0) return std::nullopt;
      v = v * 16 + d;
    }
    be[i] = static_cast<uint8_t>(v);
  }
  guid_le g = be;
  std::reverse(g.begin(), g.begin() + 4);
  std::reverse(g.begin() + 4, g.begin() + 6);
  std::reverse(g.begin() + 6, g.begin() + 8);
  return g;
}

bool ovmf_layout::has_section(uint32_t type) const {
  return std::any_of(sections.begin(), sections.end(), [&](const ovmf_section& s) { return s.type == type; });
}

std::optional<uint32_t> ovmf_layout::entry_u32(const guid_le& g) const {
  auto it = table.find(g);
  if (it == table.end() || it->second.size() < 4) return std::nullopt;
  return detail::le32(it->second.data());
}

expected<ovmf_layout> parse_ovmf_layout(std::span<const uint8_t> image) {
  ovmf_layout out;
  const size_t size = image.size();
  if (size < footer_gap + entry_header_size)
    return bad("image is " + std::to_string(size) + " bytes, too small for a footer table");

  // Footer entry: the last entry of the table, identifying it.
  const size_t footer_start = size - footer_gap - entry_header_size;
  const uint8_t* footer = image.data() + footer_start;
  guid_le footer_guid{};
  std::copy_n(footer + 2, 16, footer_guid.begin());
  if (footer_guid != detail::guid_ovmf_table_footer()) return out;  // no table: legacy image
  const size_t footer_size = detail::le16(footer);
  if (footer_size < entry_header_size) return out;
  const size_t table_size = footer_size - entry_header_size;
  if (table_size > footer_start) return bad("footer table is larger than the image");

  // Entries are laid out back to back, each followed by its size and GUID;
  // walk from the end towards the start.
  std::span<const uint8_t> rest = image.subspan(footer_start - table_size, table_size);
  while (rest.size() >= entry_header_size) {
    const uint8_t* hdr = rest.data() + rest.size() - entry_header_size;
    const size_t entry_size = detail::le16(hdr);
    if (entry_size < entry_header_size) return bad("footer table entry has an invalid size");
    if (entry_size > rest.size()) return bad("footer table entry runs past the table start");
    guid_le g{};
    std::copy_n(hdr + 2, 16, g.begin());
    auto data = rest.subspan(rest.size() - entry_size, entry_size - entry_header_size);
    out.table[g] = std::vector<uint8_t>(data.begin(), data.end());
    rest = rest.first(rest.size() - entry_size);
  }

  // SEV metadata: the entry holds its offset from the end of the image.
  auto it = out.table.find(detail::guid_sev_metadata());
  if (it == out.table.end()) return out;
  if (it->second.size() < 4) return bad("SEV metadata table entry is too short");
  const size_t offset_from_end = detail::le32(it->second.data());
  if (offset_from_end > size || size - offset_from_end + metadata_header_size > size)
    return bad("SEV metadata offset points outside the image");
  const size_t start = size - offset_from_end;
  const uint8_t* h = image.data() + start;
  if (!std::equal(h, h + 4, "ASEV")) return bad("wrong SEV metadata signature");
  const size_t md_size = detail::le32(h + 4);
  const uint32_t version = detail::le32(h + 8);
  const size_t num_items = detail::le32(h + 12);
  if (version != 1) return bad("wrong SEV metadata version " + std::to_string(version));
  if (md_size < metadata_header_size || md_size > size - start)
    return bad("SEV metadata size is outside the image");
  if (num_items > (md_size - metadata_header_size) / section_desc_size)
    return bad("SEV metadata lists more sections than it holds");
  out.sections.reserve(num_items);
  for (size_t i = 0; i < num_items; ++i) {
    const uint8_t* d = h + metadata_header_size + i * section_desc_size;
    out.sections.push_back({detail::le32(d), detail::le32(d + 4), detail::le32(d + 8)});
  }
  return out;
}

}  // namespace cove::attest

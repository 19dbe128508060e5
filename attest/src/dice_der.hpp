#pragma once
// Private minimal DER reader/writer for cove::attest's DICE code (single-byte tags,
// definite minimal lengths). Bounds-checked; never throws.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cove::attest::der {

struct tlv {
  uint8_t tag = 0;
  std::span<const uint8_t> content;
  std::size_t total = 0;  // header + content
};

/// Reads one TLV at the start of `in`; nullopt on truncation, multi-byte tags,
/// indefinite or non-minimal lengths.
inline std::optional<tlv> read(std::span<const uint8_t> in) {
  if (in.size() < 2) return std::nullopt;
  tlv t;
  t.tag = in[0];
  if ((t.tag & 0x1f) == 0x1f) return std::nullopt;
  std::size_t len = in[1];
  std::size_t hdr = 2;
  if (len & 0x80) {
    std::size_t n = len & 0x7f;
    if (n == 0 || n > 4 || in.size() < 2 + n) return std::nullopt;
    if (in[2] == 0) return std::nullopt;
    len = 0;
    for (std::size_t i = 0; i < n; ++i) len = (len << 8) | in[2 + i];
    if (len < 0x80) return std::nullopt;
    hdr = 2 + n;
  }
  if (len > in.size() - hdr) return std::nullopt;
  t.content = in.subspan(hdr, len);
  t.total = hdr + len;
  return t;
}

/// Minimal two's complement INTEGER content -> int64.
inline std::optional<int64_t> to_int64(std::span<const uint8_t> c) {
  if (c.empty() || c.size() > 8) return std::nullopt;
  if (c.size() > 1 && ((c[0] == 0x00 && !(c[1] & 0x80)) || (c[0] == 0xff && (c[1] & 0x80))))
    return std::nullopt;
  uint64_t v = (c[0] & 0x80) ? ~uint64_t{0} : 0;
  for (uint8_t b : c) v = (v << 8) | b;
  return static_cast<int64_t>(v);
}

/// OBJECT IDENTIFIER content -> dotted text.
inline std::optional<std::string> to_oid(std::span<const uint8_t> c) {
  if (c.empty() || c.size() > 64) return std::nullopt;
  std::string out;
  uint64_t arc = 0;
  bool first = true, in_arc = false;
  for (uint8_t b : c) {
    if (!in_arc && b == 0x80) return std::nullopt;  // non-minimal
    if (arc > (uint64_t{1} << 56)) return std::nullopt;
    arc = (arc << 7) | (b & 0x7f);
    in_arc = (b & 0x80) != 0;
    if (in_arc) continue;
    if (first) {
      uint64_t a = arc < 40 ? 0 : arc < 80 ? 1 : 2;
      out = std::to_string(a) + "." + std::to_string(arc - 40 * a);
      first = false;
    } else {
      out += "." + std::to_string(arc);
    }
    arc = 0;
  }
  if (in_arc) return std::nullopt;
  return out;
}

inline void put(std::vector<uint8_t>& out, uint8_t tag, std::span<const uint8_t> content) {
  out.push_back(tag);
  std::size_t n = content.size();
  if (n < 0x80) {
    out.push_back(static_cast<uint8_t>(n));
  } else {
    uint8_t buf[4];
    int k = 0;
    for (std::size_t v = n; v != 0; v >>= 8) buf[k++] = static_cast<uint8_t>(v);
    out.push_back(static_cast<uint8_t>(0x80 | k));
    while (k > 0) out.push_back(buf[--k]);
  }
  out.insert(out.end(), content.begin(), content.end());
}

inline std::vector<uint8_t> int64_content(int64_t v) {
  std::vector<uint8_t> b;
  auto u = static_cast<uint64_t>(v);
  for (int i = 7; i >= 0; --i) b.push_back(static_cast<uint8_t>(u >> (8 * i)));
  std::size_t s = 0;
  while (s + 1 < b.size() && ((b[s] == 0x00 && !(b[s + 1] & 0x80)) || (b[s] == 0xff && (b[s + 1] & 0x80))))
    ++s;
  return {b.begin() + static_cast<long>(s), b.end()};
}

/// Dotted OID -> content bytes; empty on a malformed OID.
inline std::vector<uint8_t> oid_content(std::string_view dotted) {
  std::vector<uint64_t> arcs;
  uint64_t cur = 0;
  bool have = false;
  for (char ch : dotted) {
    if (ch == '.') {
      if (!have) return {};
      arcs.push_back(cur);
      cur = 0;
      have = false;
    } else if (ch >= '0' && ch <= '9') {
      if (cur > (uint64_t{1} << 50)) return {};
      cur = cur * 10 + static_cast<uint64_t>(ch - '0');
      have = true;
    } else {
      return {};
    }
  }
  if (!have) return {};
  arcs.push_back(cur);
  if (arcs.size() < 2 || arcs[0] > 2 || (arcs[0] < 2 && arcs[1] >= 40)) return {};
  std::vector<uint8_t> out;
  auto put_arc = [&](uint64_t a) {
    uint8_t tmp[10];
    int k = 0;
    do {
      tmp[k++] = static_cast<uint8_t>(a & 0x7f);
      a >>= 7;
    } while (a != 0);
    while (k > 0) {
      --k;
      out.push_back(static_cast<uint8_t>(tmp[k] | (k > 0 ? 0x80 : 0)));
    }
  };
  put_arc(arcs[0] * 40 + arcs[1]);
  for (std::size_t i = 2; i < arcs.size(); ++i) put_arc(arcs[i]);
  return out;
}

}  // namespace cove::attest::der

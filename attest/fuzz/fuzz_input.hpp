#pragma once
// Input framing shared by attest's fuzz targets: length-prefixed fields cut from
// the fuzzer's bytes, so one input reaches several parsers with independent parts.
#include <cstddef>
#include <cstdint>
#include <span>

namespace cove::fuzz {

/// Takes a u16 big-endian length and that many bytes (fewer when the input ends
/// first) off the front of `in`; empty when fewer than 2 bytes remain.
inline std::span<const uint8_t> take_u16_prefixed(std::span<const uint8_t>& in) {
  if (in.size() < 2) return {};
  std::size_t n = (std::size_t{in[0]} << 8) | in[1];
  if (n > in.size() - 2) n = in.size() - 2;
  auto out = in.subspan(2, n);
  in = in.subspan(2 + n);
  return out;
}

}  // namespace cove::fuzz

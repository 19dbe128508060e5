#pragma once
// Private helpers for the launch-measurement code: little-endian access and GUIDs.
#include <cstdint>
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
template <class T>
inline void put_le(uint8_t* p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}

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

#pragma once
// Bounds-checked little-endian reader over untrusted bytes, shared by the TCG
// event log and IMA list parsers: every read reports truncation by returning false.
#include <cstddef>
#include <cstdint>
#include <span>

namespace cove::attest::detail {

class le_reader {
 public:
  explicit le_reader(std::span<const uint8_t> in) : in_(in) {}
  [[nodiscard]] bool empty() const noexcept { return pos_ == in_.size(); }
  [[nodiscard]] std::size_t pos() const noexcept { return pos_; }
  bool u8(uint8_t& v) {
    if (in_.size() - pos_ < 1) return false;
    v = in_[pos_++];
    return true;
  }
  bool u16(uint16_t& v) {
    if (in_.size() - pos_ < 2) return false;
    v = static_cast<uint16_t>(in_[pos_] | (in_[pos_ + 1] << 8));
    pos_ += 2;
    return true;
  }
  bool u32(uint32_t& v) {
    if (in_.size() - pos_ < 4) return false;
    v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | in_[pos_ + static_cast<std::size_t>(i)];
    pos_ += 4;
    return true;
  }
  bool take(std::size_t n, std::span<const uint8_t>& out) {
    if (in_.size() - pos_ < n) return false;
    out = in_.subspan(pos_, n);
    pos_ += n;
    return true;
  }

 private:
  std::span<const uint8_t> in_;
  std::size_t pos_ = 0;
};

}  // namespace cove::attest::detail

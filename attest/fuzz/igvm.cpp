// Fuzzes the IGVM parser and the SEV-SNP measurement of an IGVM file. Random bytes
// rarely carry a valid CRC32, so each input is also tried with its checksum fixed up
// (when its fixed header is long enough) to reach the variable-header parsing.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "cove/attest/igvm.hpp"

namespace {

uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

void check(std::span<const uint8_t> in) {
  using namespace cove::attest;
  auto f = parse_igvm(in);
  if (f) {
    if (f->platforms.empty()) __builtin_trap();
    for (const auto& h : f->headers) {
      if (h.offset >= in.size()) __builtin_trap();
      if (h.type == igvm_vht_page_data && h.file_offset != 0 && !(h.flags & igvm_page_flag_2mb) &&
          f->data(h, 4096).size() != 4096)
        __builtin_trap();  // the parser promised the page is in the file
    }
  }
  if (!f) {  // measure_igvm parses first, so it must fail too
    if (measure_igvm(in)) __builtin_trap();
    return;
  }
  // One measurement per input (they cost a SHA-384 per page); the options follow the size.
  const bool kvm = in.size() % 2 == 0;
  auto m = measure_igvm(in, {.native_zero = !kvm, .check_kvm = kvm});
  if (m && (m->digest.size() != 48 || m->vcpus == 0)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  check(in);
  if (size >= 24) {
    std::vector<uint8_t> fixed(data, data + size);
    const uint64_t vh = rd32(data + 8), vs = rd32(data + 12);
    if (vh <= size && vs <= size - vh) {
      for (int i = 0; i < 4; ++i) fixed[20 + static_cast<size_t>(i)] = 0;
      uint32_t crc = cove::attest::igvm_crc32(std::span(fixed).subspan(vh, vs),
                                              cove::attest::igvm_crc32(std::span(fixed).first(24)));
      for (int i = 0; i < 4; ++i) fixed[20 + static_cast<size_t>(i)] = static_cast<uint8_t>(crc >> (8 * i));
      check(fixed);
    }
  }
  return 0;
}

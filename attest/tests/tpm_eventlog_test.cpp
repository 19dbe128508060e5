// TCG crypto-agile event log: parsing and replay on logs built here (valid and tampered).
#include <doctest/doctest.h>
#include <openssl/sha.h>

#include <cstring>
#include <string>
#include <vector>

#include "cove/attest/snp_report.hpp"
#include "cove/attest/tpm_eventlog.hpp"

using namespace cove::attest;
using bytes = std::vector<uint8_t>;

namespace {

struct le_writer {
  bytes b;
  le_writer& u8(uint8_t v) {
    b.push_back(v);
    return *this;
  }
  le_writer& u16(uint16_t v) { return u8(static_cast<uint8_t>(v)).u8(static_cast<uint8_t>(v >> 8)); }
  le_writer& u32(uint32_t v) { return u16(static_cast<uint16_t>(v)).u16(static_cast<uint16_t>(v >> 16)); }
  le_writer& raw(const bytes& v) {
    b.insert(b.end(), v.begin(), v.end());
    return *this;
  }
};

bytes sha(const bytes& in, std::size_t len = 32) {
  bytes out(64);
  if (len == 32) {
    SHA256(in.data(), in.size(), out.data());
  } else {
    SHA1(in.data(), in.size(), out.data());
  }
  out.resize(len);
  return out;
}

bytes str(const char* s, std::size_t n) {
  return bytes(s, s + n);
}

// A log with sha1 + sha256 banks: header, StartupLocality(3), then `events` as (pcr, data).
struct log_builder {
  le_writer w;
  log_builder() {
    le_writer spec;
    spec.raw(str("Spec ID Event03\0", 16)).u32(0).u8(0).u8(2).u8(0).u8(2).u32(2);
    spec.u16(0x0004).u16(20).u16(0x000B).u16(32).u8(0);
    w.u32(0).u32(tcg_ev_no_action).raw(bytes(20, 0)).u32(static_cast<uint32_t>(spec.b.size())).raw(spec.b);
  }
  log_builder& no_action(const bytes& data) {
    w.u32(0).u32(tcg_ev_no_action).u32(2).u16(0x0004).raw(bytes(20, 0)).u16(0x000B).raw(bytes(32, 0));
    w.u32(static_cast<uint32_t>(data.size())).raw(data);
    return *this;
  }
  log_builder& event(uint32_t pcr, const bytes& data, uint32_t type = 0x80000001) {
    w.u32(pcr).u32(type).u32(2).u16(0x0004).raw(sha(data, 20)).u16(0x000B).raw(sha(data));
    w.u32(static_cast<uint32_t>(data.size())).raw(data);
    return *this;
  }
};

bytes extend(bytes pcr, const bytes& data) {
  auto d = sha(data);
  pcr.insert(pcr.end(), d.begin(), d.end());
  return sha(pcr);
}

}  // namespace

TEST_CASE("tpm eventlog: parse and replay a constructed log") {
  log_builder b;
  b.no_action(str("StartupLocality\0\3", 17));
  b.event(0, str("firmware", 8)).event(7, str("secure boot on", 14)).event(0, str("more firmware", 13));
  b.event(4, str("bootloader", 10)).event(18, str("drtm", 4));
  auto log = parse_tcg_event_log(b.w.b);
  REQUIRE_MESSAGE(log, log.error().to_string());
  CHECK(log->algorithms.size() == 2);
  CHECK(log->startup_locality == 3);
  CHECK(log->events.size() == 6);

  bytes pcr0(32, 0);
  pcr0[31] = 3;
  pcr0 = extend(extend(pcr0, str("firmware", 8)), str("more firmware", 13));
  auto replay = replay_tcg_event_log(*log);
  CHECK(replay[0] == pcr0);
  CHECK(replay[7] == extend(bytes(32, 0), str("secure boot on", 14)));
  CHECK(replay[4] == extend(bytes(32, 0), str("bootloader", 10)));
  CHECK(replay[18] == extend(bytes(32, 0xff), str("drtm", 4)));
  CHECK(replay[1] == bytes(32, 0));
  CHECK(replay[17] == bytes(32, 0xff));

  tpm_pcr_values quoted{{0, replay[0]}, {1, replay[1]}, {4, replay[4]}, {7, replay[7]}, {18, replay[18]}};
  CHECK(check_tcg_event_log(*log, quoted));
  std::vector<uint32_t> only{7};
  CHECK(check_tcg_event_log(*log, quoted, only));

  SUBCASE("a quoted value that the log does not produce names the first such PCR") {
    quoted[7][0] ^= 1;
    quoted[18][0] ^= 1;
    auto r = check_tcg_event_log(*log, quoted);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == cove::errc::attestation_failed);
    CHECK(r.error().message.find("does not replay pcr[7]") != std::string::npos);
  }
  SUBCASE("a PCR asked for but not quoted") {
    std::vector<uint32_t> want{9};
    CHECK(check_tcg_event_log(*log, quoted, want).error().message.find("pcr[9] is not quoted") !=
          std::string::npos);
  }
}

TEST_CASE("tpm eventlog: a tampered log does not replay") {
  log_builder good;
  good.event(4, str("bootloader", 10)).event(5, str("cmdline", 7));
  auto log = parse_tcg_event_log(good.w.b);
  REQUIRE(log);
  auto replay = replay_tcg_event_log(*log);
  tpm_pcr_values quoted{{4, replay[4]}, {5, replay[5]}};

  log_builder evil;  // a different bootloader, the same cmdline
  evil.event(4, str("bootkit", 7)).event(5, str("cmdline", 7));
  auto bad = parse_tcg_event_log(evil.w.b);
  REQUIRE(bad);
  auto r = check_tcg_event_log(*bad, quoted);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("pcr[4]") != std::string::npos);

  log_builder dropped;  // an event removed
  dropped.event(5, str("cmdline", 7));
  auto d = parse_tcg_event_log(dropped.w.b);
  REQUIRE(d);
  CHECK(check_tcg_event_log(*d, quoted).error().message.find("pcr[4]") != std::string::npos);

  // Flipping a byte of the sha256 digest of the first event (header 4+4+20+4+spec, then
  // pcr 4, type 4, count 4, sha1 alg 2 + 20, sha256 alg 2).
  auto bytes_ = good.w.b;
  std::size_t spec_size = 16 + 4 + 4 + 4 + 8 + 1;
  std::size_t off = 32 + spec_size + 12 + 22 + 2;
  bytes_[off] ^= 1;
  auto flipped = parse_tcg_event_log(bytes_);
  REQUIRE(flipped);
  CHECK(check_tcg_event_log(*flipped, quoted).error().message.find("does not replay pcr[4]") !=
        std::string::npos);
}

TEST_CASE("tpm eventlog: malformed logs give clear errors") {
  log_builder b;
  b.event(0, str("x", 1)).event(7, str("yy", 2));
  const auto& good = b.w.b;
  for (std::size_t n = 0; n < good.size(); ++n) {
    auto r = parse_tcg_event_log(std::span(good).first(n));
    // A cut exactly at an event boundary is a shorter valid log; anything else fails.
    if (r) CHECK(n >= 32 + 37);
  }
  CHECK(parse_tcg_event_log(bytes{}).error().message.find("truncated header") != std::string::npos);

  auto not_agile = good;
  not_agile[32] = 'X';  // Spec ID signature
  CHECK(parse_tcg_event_log(not_agile).error().message.find("Spec ID Event03") != std::string::npos);

  auto big_pcr = good;
  big_pcr[32 + 37] = 24;  // first event's PCR index
  CHECK(parse_tcg_event_log(big_pcr).error().message.find("PCR index 24") != std::string::npos);

  auto huge = good;  // last event's size field -> 0xffffffff
  std::size_t last_size = good.size() - 2 - 4;
  huge[last_size] = huge[last_size + 1] = huge[last_size + 2] = huge[last_size + 3] = 0xff;
  CHECK(parse_tcg_event_log(huge).error().message.find("exceeds 1 MiB") != std::string::npos);

  // sha1-only header.
  le_writer spec;
  spec.raw(str("Spec ID Event03\0", 16)).u32(0).u8(0).u8(2).u8(0).u8(2).u32(1).u16(0x0004).u16(20).u8(0);
  le_writer w;
  w.u32(0).u32(tcg_ev_no_action).raw(bytes(20, 0)).u32(static_cast<uint32_t>(spec.b.size())).raw(spec.b);
  CHECK(parse_tcg_event_log(w.b).error().message.find("no sha256 bank") != std::string::npos);
}

#pragma once
// Frames on an agent's TLS link to the bridge (bridge/README.md, "Wire format").
//
// Every frame is u32 big-endian length (of what follows, at most max_frame_body)
// then a u8 op and the op's fields; strings are u16 big-endian length + bytes:
//   hello   agent→bridge   data = BridgeHello FlatBuffer ("COVB")
//   welcome bridge→agent   sid = seconds the admission is valid, data = session id
//   refuse  bridge→agent   data = reason (UTF-8); the bridge then closes
//   sub     agent→bridge   sid, subject
//   unsub   agent→bridge   sid
//   pub     agent→bridge   subject, data
//   msg     bridge→agent   sid, subject, reply, data
//   err     bridge→agent   data = why an operation was refused (the link stays up)
//   ping    either         sid = id;  pong: the peer answers with the same id once
//   pong    either         everything sent before the ping has been handled
//   close   bridge→agent   data = reason; the bridge then closes
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cove/expected.hpp"

namespace cove::bridge {

enum class op : uint8_t {
  hello = 1,
  welcome = 2,
  refuse = 3,
  sub = 4,
  unsub = 5,
  pub = 6,
  msg = 7,
  err = 8,
  ping = 9,
  pong = 10,
  close = 11,
};

/// The largest frame body: a full NATS payload (1 MiB) plus subjects and header.
inline constexpr uint32_t max_frame_body = (1u << 20) + 1024;

struct frame {
  op kind = op::ping;
  uint32_t sid = 0;  // sub/unsub/msg: subscription id; welcome: validity (s); ping/pong: id
  std::string subject;
  std::string reply;
  std::vector<uint8_t> data;
};

/// Appends the encoded frame (length prefix included) to `out`. errc::too_large when
/// the body would exceed max_frame_body or a subject exceeds 65535 bytes.
expected<void> encode(const frame& f, std::vector<uint8_t>& out);

/// encode() without f.data: the length prefix counts f.data, which the caller sends
/// right after (saves copying half-megabyte payloads).
expected<void> encode_header(const frame& f, std::vector<uint8_t>& out);

/// Decodes one frame body (without the length prefix). Unknown ops, truncated or
/// trailing fields are errc::invalid_request naming what is wrong.
expected<frame> decode(std::span<const uint8_t> body);

/// Splits a byte stream into frames.
class decoder {
 public:
  void feed(std::span<const uint8_t> bytes);
  /// The next complete frame, nullopt when more bytes are needed, or an error (bad
  /// length or body); after an error the stream is unusable.
  expected<std::optional<frame>> next();

 private:
  std::vector<uint8_t> buf_;
  size_t pos_ = 0;
};

std::string_view to_string(op o) noexcept;

}  // namespace cove::bridge

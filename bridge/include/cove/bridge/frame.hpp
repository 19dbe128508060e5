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

/// Splits a byte stream into frames. A state machine over the frame's fields: the
/// header fields are collected in a small buffer, and a frame's data is written
/// straight into the frame's own vector, so a payload is copied once from wherever
/// the bytes come from (see want()/got(): the TLS link decrypts into it directly).
class decoder {
 public:
  /// Decodes `bytes` (any split); next() hands out the frames.
  void feed(std::span<const uint8_t> bytes);
  /// The next complete frame, nullopt when more bytes are needed, or an error (bad
  /// length or body); after an error the stream is unusable.
  expected<std::optional<frame>> next();

  /// Zero-copy input: where the next bytes of the stream belong (never empty; at most
  /// the rest of the field being read, so nothing past the current frame). Write up
  /// to its size there, then call got() with the count. Only when next() holds no
  /// frame (i.e. after next() returned nullopt or before any feed()).
  std::span<uint8_t> want();
  /// Accounts for `n` bytes written into want(): a complete frame, nullopt, or an
  /// error (the same as next() would give).
  expected<std::optional<frame>> got(size_t n);

 private:
  enum class stage : uint8_t { length, kind, sid, subject_len, subject, reply_len, reply, data, failed };
  expected<std::optional<frame>> advance();  // after the field in progress is complete
  void expect(stage s, size_t n);

  stage stage_ = stage::length;
  size_t need_ = 4;     // bytes of the current field still missing
  size_t left_ = 0;     // bytes of the frame body not yet consumed (after the length)
  uint8_t small_[4]{};  // length, sid and string-length fields
  size_t small_at_ = 0;
  frame cur_;
  std::optional<error> error_;
  std::vector<frame> ready_;  // decoded by feed(), handed out by next()
  size_t ready_at_ = 0;
};

std::string_view to_string(op o) noexcept;

}  // namespace cove::bridge

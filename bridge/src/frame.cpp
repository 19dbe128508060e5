#include "cove/bridge/frame.hpp"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace cove::bridge {

namespace {

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

void put_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  if (n == 0) return;
  size_t at = out.size();
  out.resize(at + n);
  std::memcpy(out.data() + at, p, n);
}

void put_str(std::vector<uint8_t>& out, const std::string& s) {
  out.push_back(static_cast<uint8_t>(s.size() >> 8));
  out.push_back(static_cast<uint8_t>(s.size()));
  put_bytes(out, s.data(), s.size());
}

bool has_sid(op o) {
  return o == op::welcome || o == op::sub || o == op::unsub || o == op::msg || o == op::ping || o == op::pong;
}
bool has_subject(op o) {
  return o == op::sub || o == op::pub || o == op::msg;
}
bool has_reply(op o) {
  return o == op::msg;
}
bool has_data(op o) {
  return o != op::sub && o != op::unsub && o != op::ping && o != op::pong;
}

class reader {
 public:
  explicit reader(std::span<const uint8_t> b) : b_(b) {}
  bool u8(uint8_t& v) {
    if (b_.size() - pos_ < 1) return false;
    v = b_[pos_++];
    return true;
  }
  bool u32(uint32_t& v) {
    if (b_.size() - pos_ < 4) return false;
    v = (uint32_t{b_[pos_]} << 24) | (uint32_t{b_[pos_ + 1]} << 16) | (uint32_t{b_[pos_ + 2]} << 8) |
        uint32_t{b_[pos_ + 3]};
    pos_ += 4;
    return true;
  }
  bool str(std::string& s) {
    if (b_.size() - pos_ < 2) return false;
    size_t n = (size_t{b_[pos_]} << 8) | size_t{b_[pos_ + 1]};
    pos_ += 2;
    if (b_.size() - pos_ < n) return false;
    s.assign(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  std::span<const uint8_t> rest() {
    auto r = b_.subspan(pos_);
    pos_ = b_.size();
    return r;
  }
  [[nodiscard]] bool done() const { return pos_ == b_.size(); }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

}  // namespace

std::string_view to_string(op o) noexcept {
  switch (o) {
    case op::hello:
      return "hello";
    case op::welcome:
      return "welcome";
    case op::refuse:
      return "refuse";
    case op::sub:
      return "sub";
    case op::unsub:
      return "unsub";
    case op::pub:
      return "pub";
    case op::msg:
      return "msg";
    case op::err:
      return "err";
    case op::ping:
      return "ping";
    case op::pong:
      return "pong";
    case op::close:
      return "close";
  }
  return "unknown";
}

expected<void> encode(const frame& f, std::vector<uint8_t>& out) {
  if (auto h = encode_header(f, out); !h) return h;
  if (has_data(f.kind)) put_bytes(out, f.data.data(), f.data.size());
  return ok();
}

expected<void> encode_header(const frame& f, std::vector<uint8_t>& out) {
  if (f.subject.size() > 0xffff || f.reply.size() > 0xffff)
    return make_error(errc::too_large, "bridge frame: subject or reply longer than 65535 bytes");
  size_t body = 1 + (has_sid(f.kind) ? 4 : 0) + (has_subject(f.kind) ? 2 + f.subject.size() : 0) +
                (has_reply(f.kind) ? 2 + f.reply.size() : 0) + (has_data(f.kind) ? f.data.size() : 0);
  if (body > max_frame_body)
    return make_error(errc::too_large,
                      fmt::format("bridge frame: {} bytes, the limit is {}", body, max_frame_body));
  out.reserve(out.size() + 4 + body - (has_data(f.kind) ? f.data.size() : 0));
  put_u32(out, static_cast<uint32_t>(body));
  out.push_back(static_cast<uint8_t>(f.kind));
  if (has_sid(f.kind)) put_u32(out, f.sid);
  if (has_subject(f.kind)) put_str(out, f.subject);
  if (has_reply(f.kind)) put_str(out, f.reply);
  return ok();
}

expected<frame> decode(std::span<const uint8_t> body) {
  reader r(body);
  uint8_t kind = 0;
  if (!r.u8(kind)) return make_error(errc::invalid_request, "bridge frame: empty");
  if (kind < static_cast<uint8_t>(op::hello) || kind > static_cast<uint8_t>(op::close))
    return make_error(errc::invalid_request, fmt::format("bridge frame: unknown op {}", kind));
  frame f;
  f.kind = static_cast<op>(kind);
  auto truncated = [&](std::string_view field) {
    return make_error(errc::invalid_request,
                      fmt::format("bridge frame {}: truncated {}", to_string(f.kind), field));
  };
  if (has_sid(f.kind) && !r.u32(f.sid)) return truncated("id");
  if (has_subject(f.kind) && !r.str(f.subject)) return truncated("subject");
  if (has_reply(f.kind) && !r.str(f.reply)) return truncated("reply");
  if (has_data(f.kind)) {
    auto d = r.rest();
    f.data.assign(d.begin(), d.end());
  }
  if (!r.done())
    return make_error(errc::invalid_request,
                      fmt::format("bridge frame {}: trailing bytes", to_string(f.kind)));
  return f;
}

void decoder::feed(std::span<const uint8_t> bytes) {
  while (!bytes.empty() && !error_) {
    auto into = want();
    size_t n = std::min(into.size(), bytes.size());
    std::memcpy(into.data(), bytes.data(), n);
    bytes = bytes.subspan(n);
    auto f = got(n);
    if (f && *f) ready_.push_back(std::move(**f));
  }
}

expected<std::optional<frame>> decoder::next() {
  if (ready_at_ < ready_.size()) {
    frame f = std::move(ready_[ready_at_++]);
    if (ready_at_ == ready_.size()) {
      ready_.clear();
      ready_at_ = 0;
    }
    return std::optional<frame>{std::move(f)};
  }
  if (error_) return *error_;
  return std::optional<frame>{};
}

std::span<uint8_t> decoder::want() {
  switch (stage_) {
    case stage::subject:
      return {reinterpret_cast<uint8_t*>(cur_.subject.data()) + (cur_.subject.size() - need_), need_};
    case stage::reply:
      return {reinterpret_cast<uint8_t*>(cur_.reply.data()) + (cur_.reply.size() - need_), need_};
    case stage::data:
      return {cur_.data.data() + (cur_.data.size() - need_), need_};
    case stage::failed:
      return {small_, 1};  // got() reports the error
    default:
      return {small_ + small_at_, need_};
  }
}

expected<std::optional<frame>> decoder::got(size_t n) {
  if (error_) return *error_;
  n = std::min(n, need_);
  need_ -= n;
  small_at_ += n;
  if (need_ > 0) return std::optional<frame>{};
  auto r = advance();
  if (!r) {
    stage_ = stage::failed;
    error_ = r.error();
  }
  return r;
}

void decoder::expect(stage s, size_t n) {
  stage_ = s;
  need_ = n;
  small_at_ = 0;
}

expected<std::optional<frame>> decoder::advance() {
  auto be = [this](size_t n) {
    uint32_t v = 0;
    for (size_t i = 0; i < n; ++i) v = (v << 8) | small_[i];
    return v;
  };
  auto truncated = [&](std::string_view field) {
    return make_error(errc::invalid_request,
                      fmt::format("bridge frame {}: truncated {}", to_string(cur_.kind), field));
  };
  // Starts reading a field of n bytes out of the body's remaining `left_`.
  auto field = [&](stage s, size_t n, std::string_view name) -> expected<void> {
    if (n > left_) return truncated(name);
    left_ -= n;
    expect(s, n);
    return ok();
  };
  // One loop turn per completed field; zero-length fields complete at once.
  for (;;) {
    switch (stage_) {
      case stage::length: {
        uint32_t len = be(4);
        if (len == 0 || len > max_frame_body)
          return make_error(errc::invalid_request,
                            fmt::format("bridge frame: length {} outside 1..{}", len, max_frame_body));
        left_ = len - 1;
        expect(stage::kind, 1);
        return std::optional<frame>{};
      }
      case stage::kind: {
        uint8_t kind = small_[0];
        if (kind < static_cast<uint8_t>(op::hello) || kind > static_cast<uint8_t>(op::close))
          return make_error(errc::invalid_request, fmt::format("bridge frame: unknown op {}", kind));
        cur_ = frame{.kind = static_cast<op>(kind)};
        if (has_sid(cur_.kind)) {
          if (auto e = field(stage::sid, 4, "id"); !e) return e.error();
          return std::optional<frame>{};
        }
        stage_ = stage::sid;  // skipped: fall through to what follows it
        continue;
      }
      case stage::sid:
        if (has_sid(cur_.kind)) cur_.sid = be(4);
        if (has_subject(cur_.kind)) {
          if (auto e = field(stage::subject_len, 2, "subject"); !e) return e.error();
          return std::optional<frame>{};
        }
        stage_ = stage::subject;
        continue;
      case stage::subject_len: {
        size_t n = be(2);
        if (auto e = field(stage::subject, n, "subject"); !e) return e.error();
        cur_.subject.resize(n);
        if (n > 0) return std::optional<frame>{};
        continue;
      }
      case stage::subject:
        if (has_reply(cur_.kind)) {
          if (auto e = field(stage::reply_len, 2, "reply"); !e) return e.error();
          return std::optional<frame>{};
        }
        stage_ = stage::reply;
        continue;
      case stage::reply_len: {
        size_t n = be(2);
        if (auto e = field(stage::reply, n, "reply"); !e) return e.error();
        cur_.reply.resize(n);
        if (n > 0) return std::optional<frame>{};
        continue;
      }
      case stage::reply:
        if (has_data(cur_.kind)) {
          size_t n = left_;
          left_ = 0;
          expect(stage::data, n);
          cur_.data.resize(n);
          if (n > 0) return std::optional<frame>{};
          continue;
        }
        if (left_ != 0)
          return make_error(errc::invalid_request,
                            fmt::format("bridge frame {}: trailing bytes", to_string(cur_.kind)));
        [[fallthrough]];
      case stage::data: {
        frame done = std::move(cur_);
        cur_ = frame{};
        expect(stage::length, 4);
        return std::optional<frame>{std::move(done)};
      }
      case stage::failed:
        return make_error(errc::invalid_request, "bridge frame: the stream already failed");
    }
  }
}

}  // namespace cove::bridge

#include "cove/bridge/channel.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <mutex>

#include <fmt/format.h>
#include <openssl/err.h>

namespace cove::bridge {

using clock = std::chrono::steady_clock;

namespace {

int poll_ms(clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<long long>(left, INT_MAX));
}

/// Waits for `events` on fd until the deadline. false on timeout.
bool wait_fd(int fd, short events, clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int ms = poll_ms(deadline);
    int r = ::poll(&p, 1, ms);
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

/// OpenSSL writes to sockets with write(2): a peer that went away must be an error
/// (EPIPE), not a SIGPIPE that kills the process.
void ignore_sigpipe() {
  static std::once_flag once;
  std::call_once(once, [] { std::signal(SIGPIPE, SIG_IGN); });
}

void set_nonblocking(int fd) {
  ignore_sigpipe();
  int flags = fcntl(fd, F_GETFL, 0);
  if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

std::string ssl_io_error(SSL* ssl, int rc, std::string_view what) {
  int e = SSL_get_error(ssl, rc);
  if (e == SSL_ERROR_ZERO_RETURN) return "the peer closed the link";
  if (e == SSL_ERROR_SYSCALL) {
    if (ERR_peek_error() == 0)
      return errno != 0 ? fmt::format("{}: {}", what, std::strerror(errno)) : "the peer closed the link";
  }
  return ssl_error_text(what);
}

}  // namespace

expected<int> dial_tcp(const std::string& address, std::chrono::milliseconds timeout) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
    return make_error(errc::invalid_request, "bridge address '" + address + "': expected HOST:PORT");
  std::string host = address.substr(0, colon), port = address.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0)
    return make_error(errc::unavailable, fmt::format("bridge address '{}': {}", address, gai_strerror(rc)));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);
  auto deadline = clock::now() + timeout;
  std::string last = "no address";
  for (auto* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last = std::strerror(errno);
      continue;
    }
    set_nonblocking(fd);
    int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      if (wait_fd(fd, POLLOUT, deadline)) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        rc = err == 0 ? 0 : -1;
        errno = err;
      } else {
        errno = ETIMEDOUT;
      }
    }
    if (rc == 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    last = std::strerror(errno);
    ::close(fd);
  }
  return make_error(errc::unavailable, fmt::format("cannot reach the bridge at {}: {}", address, last));
}

expected<void> handshake(SSL* ssl, int fd, bool server, std::chrono::milliseconds timeout) {
  set_nonblocking(fd);
  auto deadline = clock::now() + timeout;
  for (;;) {
    ERR_clear_error();
    errno = 0;
    int rc = server ? SSL_accept(ssl) : SSL_connect(ssl);
    if (rc == 1) return ok();
    int e = SSL_get_error(ssl, rc);
    short want = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (want == 0) return make_error(errc::unavailable, ssl_io_error(ssl, rc, "TLS handshake"));
    if (!wait_fd(fd, want, deadline)) return make_error(errc::timeout, "TLS handshake: no answer in time");
  }
}

expected<void> write_all(SSL* ssl, int fd, std::span<const uint8_t> bytes, clock::time_point deadline) {
  size_t off = 0;
  while (off < bytes.size()) {
    ERR_clear_error();
    errno = 0;
    int n =
        SSL_write(ssl, bytes.data() + off, static_cast<int>(std::min<size_t>(bytes.size() - off, INT_MAX)));
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    int e = SSL_get_error(ssl, n);
    short want = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (want == 0) return make_error(errc::unavailable, ssl_io_error(ssl, n, "bridge write"));
    if (!wait_fd(fd, want, deadline)) return make_error(errc::timeout, "bridge write: peer not reading");
  }
  return ok();
}

expected<frame> read_frame(SSL* ssl, int fd, decoder& dec, clock::time_point deadline) {
  if (auto f = dec.next(); !f || *f) return f ? std::move(**f) : expected<frame>(f.error());
  for (;;) {
    // Exactly up to the end of this frame: what follows stays in the TLS buffer.
    auto into = dec.want();
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(ssl, into.data(), static_cast<int>(std::min<size_t>(into.size(), INT_MAX)));
    if (n > 0) {
      auto f = dec.got(static_cast<size_t>(n));
      if (!f) return f.error();
      if (*f) return std::move(**f);
      continue;
    }
    int e = SSL_get_error(ssl, n);
    short want = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (want == 0) return make_error(errc::unavailable, ssl_io_error(ssl, n, "bridge read"));
    if (!wait_fd(fd, want, deadline))
      return make_error(errc::timeout, "bridge: no frame from the peer in time");
  }
}

std::shared_ptr<channel> channel::start(
    ssl_ptr ssl, int fd, callbacks cb, limits lim, decoder pending,
    const std::function<void(const std::shared_ptr<channel>&)>& before_io) {
  std::shared_ptr<channel> c(new channel());
  c->ssl_ = std::move(ssl);
  c->fd_ = fd;
  c->cb_ = std::move(cb);
  c->lim_ = lim;
  c->in_ = std::move(pending);
  c->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  set_nonblocking(fd);
  if (before_io) before_io(c);
  c->thread_ = std::thread([raw = c.get()] { raw->run(); });
  return c;
}

channel::~channel() {
  if (thread_.joinable()) {
    if (io_thread_.load() == std::this_thread::get_id()) {
      thread_.detach();  // destroyed from our own on_closed: run() touches nothing after it
    } else {
      close("shut down");
      thread_.join();
    }
  }
  if (fd_ >= 0) ::close(fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void channel::wake() {
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

bool channel::open() const {
  std::lock_guard lock(mu_);
  return !closed_ && !closing_;
}

size_t channel::queued_bytes() const {
  std::lock_guard lock(mu_);
  return queued_;
}

expected<void> channel::send(const frame& f, std::chrono::milliseconds max_wait) {
  std::vector<uint8_t> bytes;
  if (auto e = encode(f, bytes); !e) return e;
  return enqueue(std::move(bytes), {}, max_wait);
}

expected<void> channel::send(frame&& f, std::chrono::milliseconds max_wait) {
  std::vector<uint8_t> head;
  if (auto e = encode_header(f, head); !e) return e;
  return enqueue(std::move(head), std::move(f.data), max_wait);
}

expected<void> channel::enqueue(std::vector<uint8_t> bytes, std::vector<uint8_t> body,
                                std::chrono::milliseconds max_wait) {
  {
    std::unique_lock lock(mu_);
    // The I/O thread itself never waits (it is the one that drains the queue).
    if (std::this_thread::get_id() != io_thread_.load()) {
      bool room = space_.wait_for(lock, max_wait,
                                  [&] { return closed_ || closing_ || queued_ <= lim_.max_queued_bytes; });
      if (!room) return make_error(errc::timeout, "bridge link: the peer is not reading (queue full)");
    }
    if (closed_ || closing_) return make_error(errc::unavailable, "bridge link closed: " + close_reason_);
    // Header and payload are adjacent in the queue: one frame on the wire.
    queued_ += bytes.size() + body.size();
    out_.push_back(std::move(bytes));
    if (!body.empty()) out_.push_back(std::move(body));
  }
  wake();
  return ok();
}

void channel::close(const std::string& reason, std::optional<frame> last) {
  {
    std::lock_guard lock(mu_);
    if (closed_ || closing_) return;
    if (last) {
      std::vector<uint8_t> bytes;
      if (encode(*last, bytes)) {
        queued_ += bytes.size();
        out_.push_back(std::move(bytes));
      }
    }
    closing_ = true;
    close_reason_ = reason;
  }
  space_.notify_all();
  wake();
}

void channel::run() {
  io_thread_ = std::this_thread::get_id();
  SSL* ssl = ssl_.get();
  std::vector<uint8_t> cur;
  size_t cur_off = 0;
  std::string reason;
  auto flush_deadline = clock::time_point::max();
  bool expired = false;

  auto fail = [&](std::string why) {
    if (reason.empty()) reason = std::move(why);
  };

  // Frames the handshake's decoder completed but nobody took yet.
  for (;;) {
    auto f = in_.next();
    if (!f) {
      fail(f.error().message);
      break;
    }
    if (!*f) break;
    if (cb_.on_frame) cb_.on_frame(std::move(**f));
  }

  while (reason.empty()) {
    // ---- write: drain the queue until the socket would block
    bool want_pollout = false;
    for (;;) {
      if (cur_off == cur.size()) {
        std::lock_guard lock(mu_);
        if (out_.empty()) {
          cur.clear();
          cur_off = 0;
          if (closing_) {
            fail(close_reason_);
          }
          break;
        }
        cur = std::move(out_.front());
        out_.pop_front();
        queued_ -= cur.size();
        cur_off = 0;
        space_.notify_all();
      }
      ERR_clear_error();
      errno = 0;
      int n = SSL_write(ssl, cur.data() + cur_off,
                        static_cast<int>(std::min<size_t>(cur.size() - cur_off, INT_MAX)));
      if (n > 0) {
        cur_off += static_cast<size_t>(n);
        continue;
      }
      int e = SSL_get_error(ssl, n);
      if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        want_pollout = e == SSL_ERROR_WANT_WRITE;
        break;
      }
      fail(ssl_io_error(ssl, n, "bridge write"));
      break;
    }
    if (!reason.empty()) break;

    // ---- read: everything available, frames to the callback. SSL_read decrypts
    // straight into the decoder's field (a payload lands in its frame's vector).
    for (;;) {
      auto into = in_.want();
      ERR_clear_error();
      errno = 0;
      int n = SSL_read(ssl, into.data(), static_cast<int>(std::min<size_t>(into.size(), INT_MAX)));
      if (n > 0) {
        auto f = in_.got(static_cast<size_t>(n));
        if (!f) {
          fail(f.error().message);
          break;
        }
        if (*f && cb_.on_frame) cb_.on_frame(std::move(**f));
        continue;
      }
      int e = SSL_get_error(ssl, n);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
      fail(ssl_io_error(ssl, n, "bridge read"));
      break;
    }
    if (!reason.empty()) break;

    auto now = clock::now();
    if (!expired && now >= lim_.close_at) {
      expired = true;
      close(lim_.expiry_reason,
            frame{.kind = op::close, .data = {lim_.expiry_reason.begin(), lim_.expiry_reason.end()}});
    }
    {
      std::lock_guard lock(mu_);
      if (closing_ && flush_deadline == clock::time_point::max())
        flush_deadline = now + std::chrono::seconds(2);
    }
    if (now >= flush_deadline) {
      std::lock_guard lock(mu_);
      fail(close_reason_);
      break;
    }
    bool have_out = cur_off < cur.size();
    {
      std::lock_guard lock(mu_);
      have_out = have_out || !out_.empty() || closing_;
    }
    auto wake_at = std::min(expired ? clock::time_point::max() : lim_.close_at, flush_deadline);
    wake_at = std::min(wake_at, now + std::chrono::seconds(1));
    std::array<pollfd, 2> fds{pollfd{fd_, static_cast<short>(POLLIN | (want_pollout ? POLLOUT : 0)), 0},
                              pollfd{wake_fd_, POLLIN, 0}};
    if (have_out && !want_pollout && cur_off == cur.size()) {
      // queued frames and a writable socket: loop straight back
      std::lock_guard lock(mu_);
      if (!out_.empty()) continue;
    }
    int r = ::poll(fds.data(), fds.size(), poll_ms(wake_at));
    if (r < 0 && errno != EINTR) fail(fmt::format("bridge poll: {}", std::strerror(errno)));
    if (fds[1].revents & POLLIN) {
      uint64_t v = 0;
      [[maybe_unused]] auto n = ::read(wake_fd_, &v, sizeof v);
    }
    if ((fds[0].revents & (POLLERR | POLLHUP)) && !(fds[0].revents & POLLIN))
      fail("the peer closed the link");
  }

  SSL_shutdown(ssl);  // best effort close_notify
  ::shutdown(fd_, SHUT_RDWR);
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    if (close_reason_.empty()) close_reason_ = reason;
    out_.clear();
    queued_ = 0;
  }
  space_.notify_all();
  auto on_closed = std::move(cb_.on_closed);
  cb_.on_frame = nullptr;
  if (on_closed) on_closed(reason);  // may destroy *this: nothing below
}

}  // namespace cove::bridge

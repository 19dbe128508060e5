#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>

#include "cove/agent/atls.hpp"
#include "cove/c_handle.hpp"
#include "cove/log.hpp"

namespace cove::agent::atls {

namespace {

using ssl_ctx_handle = c_handle<SSL_CTX, SSL_CTX_free>;
using ssl_handle = c_handle<SSL, SSL_free>;
using pkey_handle = c_handle<EVP_PKEY, EVP_PKEY_free>;
using x509_handle = c_handle<X509, X509_free>;

constexpr size_t max_connections = 64;

/// A peer that goes away mid-write must give EPIPE, not a SIGPIPE that kills the agent
/// (OpenSSL writes with plain write(2)).
void ignore_sigpipe() {
  static std::once_flag once;
  std::call_once(once, [] { std::signal(SIGPIPE, SIG_IGN); });
}

void set_nonblocking(int fd, bool on) {
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
}

/// Ephemeral ECDSA P-256 self-signed certificate, as cocos's proxy makes one.
expected<std::pair<x509_handle, pkey_handle>> ephemeral_identity() {
  pkey_handle key(EVP_EC_gen("P-256"));
  x509_handle cert(X509_new());
  if (!key || !cert) return make_error(errc::crypto_failed, "attested TLS: cannot create an ephemeral key");
  X509_set_version(cert.get(), 2);
  uint8_t serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  c_handle<BIGNUM, BN_free> bn(BN_bin2bn(serial, sizeof serial, nullptr));
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("cocos-atls-ephemeral"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("cove"), -1, -1,
                             0);
  X509_set_issuer_name(cert.get(), name);
  X509_set_pubkey(cert.get(), key.get());
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
  if (auto* ext = X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name, "DNS:localhost")) {
    X509_add_ext(cert.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) {
    ERR_clear_error();
    return make_error(errc::crypto_failed, "attested TLS: cannot sign the ephemeral certificate");
  }
  return std::pair{std::move(cert), std::move(key)};
}

int select_h2(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
              unsigned int inlen, void*) {
  static const unsigned char h2[] = {2, 'h', '2'};
  unsigned char* o = nullptr;
  if (SSL_select_next_proto(&o, outlen, h2, sizeof h2, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = o;
  return SSL_TLSEXT_ERR_OK;
}

expected<int> listen_on(const std::string& hostport) {
  auto colon = hostport.rfind(':');
  if (colon == std::string::npos)
    return make_error(errc::invalid_request, "--grpc-listen: HOST:PORT expected");
  std::string host = hostport.substr(0, colon), port = hostport.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr)
    return make_error(errc::invalid_request, "--grpc-listen " + hostport + ": cannot resolve");
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  bool bound = fd >= 0 && bind(fd, res->ai_addr, res->ai_addrlen) == 0 && listen(fd, 64) == 0;
  freeaddrinfo(res);
  if (!bound) {
    if (fd >= 0) close(fd);
    return make_error(errc::unavailable, "--grpc-listen " + hostport + ": cannot bind: " + strerror(errno));
  }
  return fd;
}

int local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

int connect_unix(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (fd < 0 || path.size() >= sizeof sa.sun_path) {
    if (fd >= 0) close(fd);
    return -1;
  }
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

class server_impl final : public server {
 public:
  server_impl(config cfg, evidence_fn ev) : cfg_(std::move(cfg)), evidence_(std::move(ev)) {}
  ~server_impl() override { stop(); }

  expected<void> start() {
    ignore_sigpipe();
    ctx_.reset(SSL_CTX_new(TLS_server_method()));
    if (!ctx_) return make_error(errc::crypto_failed, "attested TLS: SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx_.get(), TLS1_3_VERSION);
    SSL_CTX_set_alpn_select_cb(ctx_.get(), select_h2, nullptr);
    SSL_CTX_set_mode(ctx_.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (cfg_.cert_file.empty()) {
      auto id = ephemeral_identity();
      if (!id) return id.error();
      cert_ = std::move(id->first);
      key_ = std::move(id->second);
    } else {
      FILE* f = fopen(cfg_.cert_file.c_str(), "r");
      if (f != nullptr) {
        cert_.reset(PEM_read_X509(f, nullptr, nullptr, nullptr));
        fclose(f);
      }
      f = fopen(cfg_.key_file.c_str(), "r");
      if (f != nullptr) {
        key_.reset(PEM_read_PrivateKey(f, nullptr, nullptr, nullptr));
        fclose(f);
      }
      ERR_clear_error();
      if (!cert_ || !key_)
        return make_error(errc::invalid_request, "--cert/--key: cannot read a PEM certificate and key");
      char group[32] = {};
      size_t glen = 0;
      if (EVP_PKEY_get_base_id(key_.get()) != EVP_PKEY_EC ||
          EVP_PKEY_get_group_name(key_.get(), group, sizeof group, &glen) != 1 ||
          (std::string_view(group, glen) != "prime256v1" && std::string_view(group, glen) != "P-256"))
        return make_error(
            errc::invalid_request,
            "--key: attested TLS signs the authenticator with ECDSA P-256; the key is not P-256");
    }
    if (SSL_CTX_use_certificate(ctx_.get(), cert_.get()) != 1 ||
        SSL_CTX_use_PrivateKey(ctx_.get(), key_.get()) != 1 || SSL_CTX_check_private_key(ctx_.get()) != 1) {
      ERR_clear_error();
      return make_error(errc::invalid_request, "attested TLS: the certificate and key do not match");
    }
    if (!cfg_.client_ca_file.empty()) {
      if (SSL_CTX_load_verify_locations(ctx_.get(), cfg_.client_ca_file.c_str(), nullptr) != 1) {
        ERR_clear_error();
        return make_error(errc::invalid_request, "--client-ca: cannot load " + cfg_.client_ca_file);
      }
      SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
    auto fd = listen_on(cfg_.listen);
    if (!fd) return fd.error();
    listen_fd_ = *fd;
    port_ = local_port(listen_fd_);
    stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    acceptor_ = std::thread([this] { accept_loop(); });
    return ok();
  }

  [[nodiscard]] int port() const noexcept override { return port_; }

  void stop() override {
    if (stop_fd_ < 0) return;
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof one);
    if (acceptor_.joinable()) acceptor_.join();
    {
      std::lock_guard lock(mu_);
      for (int fd : active_fds_) shutdown(fd, SHUT_RDWR);  // unblocks handshakes in progress
    }
    for (auto& c : connections_) c.thread.join();
    connections_.clear();
    close(listen_fd_);
    close(stop_fd_);
    stop_fd_ = -1;
  }

 private:
  struct connection {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };

  void accept_loop() {
    for (;;) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0 && errno != EINTR) return;
      if (fds[1].revents != 0) return;
      if ((fds[0].revents & POLLIN) == 0) continue;
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      connections_.remove_if([](connection& c) {
        if (!c.done->load()) return false;
        c.thread.join();
        return true;
      });
      if (connections_.size() >= max_connections) {
        spdlog::warn("attested TLS: {} connections open; refusing another", connections_.size());
        close(fd);
        continue;
      }
      auto done = std::make_shared<std::atomic<bool>>(false);
      {
        std::lock_guard lock(mu_);
        active_fds_.push_back(fd);
      }
      connections_.push_back({std::thread([this, fd, done] {
                                serve(fd);
                                {
                                  std::lock_guard lock(mu_);
                                  std::erase(active_fds_, fd);
                                }
                                close(fd);
                                done->store(true);
                              }),
                              done});
    }
  }

  void serve(int fd) {
    timeval tv{10, 0};  // the handshake and the authenticator exchange must not hang forever
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssl_handle ssl(SSL_new(ctx_.get()));
    if (!ssl) return;
    SSL_set_fd(ssl.get(), fd);
    if (SSL_accept(ssl.get()) != 1) {
      spdlog::info("attested TLS: handshake failed: {}", ERR_reason_error_string(ERR_peek_last_error())
                                                             ? ERR_reason_error_string(ERR_peek_last_error())
                                                             : "connection closed");
      ERR_clear_error();
      return;
    }
    auto frame = read_frame(ssl.get());
    if (!frame) return spdlog::info("attested TLS: {}", frame.error().message);
    if (frame->first != frame_request)
      return spdlog::info("attested TLS: expected an authenticator request frame, got type {}", frame->first);
    auto req = parse_request(frame->second);
    if (!req) return spdlog::info("{}", req.error().message);
    auto auth = make_authenticator(ssl.get(), *req, cert_.get(), key_.get(), evidence_);
    if (!auth) return spdlog::warn("{}", auth.error().message);
    if (auto w = write_frame(ssl.get(), frame_authenticator, *auth); !w) return;
    int backend = connect_unix(cfg_.backend);
    if (backend < 0) return spdlog::warn("attested TLS: cannot reach the gRPC server at {}", cfg_.backend);
    timeval none{0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    relay(ssl.get(), backend, stop_fd_);
    close(backend);
    SSL_shutdown(ssl.get());
    ERR_clear_error();
  }

  config cfg_;
  evidence_fn evidence_;
  ssl_ctx_handle ctx_;
  x509_handle cert_;
  pkey_handle key_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;
  int port_ = 0;
  std::thread acceptor_;
  std::list<connection> connections_;  // acceptor thread only (and stop() after it ended)
  std::mutex mu_;
  std::vector<int> active_fds_;
};

}  // namespace

void relay(SSL* ssl, int plain_fd, int stop_fd) {
  ignore_sigpipe();
  int tls_fd = SSL_get_fd(ssl);
  set_nonblocking(tls_fd, true);
  set_nonblocking(plain_fd, true);
  std::vector<uint8_t> to_plain(64 * 1024), to_tls(64 * 1024);
  size_t plain_have = 0, plain_off = 0, tls_have = 0, tls_off = 0;
  bool tls_eof = false, plain_eof = false;
  for (;;) {
    bool progress = false;
    short tls_events = 0, plain_events = 0;
    // TLS -> plain
    if (plain_have == 0 && !tls_eof) {
      size_t n = 0;
      int rc = SSL_read_ex(ssl, to_plain.data(), to_plain.size(), &n);
      if (rc == 1) {
        plain_have = n;
        plain_off = 0;
        progress = true;
      } else {
        int e = SSL_get_error(ssl, rc);
        if (e == SSL_ERROR_WANT_READ) {
          tls_events |= POLLIN;
        } else if (e == SSL_ERROR_WANT_WRITE) {
          tls_events |= POLLOUT;
        } else {
          tls_eof = true;
        }
        ERR_clear_error();
      }
    }
    if (plain_have > 0) {
      ssize_t n = send(plain_fd, to_plain.data() + plain_off, plain_have, MSG_NOSIGNAL);
      if (n > 0) {
        plain_off += static_cast<size_t>(n);
        plain_have -= static_cast<size_t>(n);
        progress = true;
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        plain_events |= POLLOUT;
      } else {
        return;
      }
    }
    // plain -> TLS
    if (tls_have == 0 && !plain_eof) {
      ssize_t n = read(plain_fd, to_tls.data(), to_tls.size());
      if (n > 0) {
        tls_have = static_cast<size_t>(n);
        tls_off = 0;
        progress = true;
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        plain_events |= POLLIN;
      } else {
        plain_eof = true;
      }
    }
    if (tls_have > 0) {
      size_t n = 0;
      int rc = SSL_write_ex(ssl, to_tls.data() + tls_off, tls_have, &n);
      if (rc == 1) {
        tls_off += n;
        tls_have -= n;
        progress = true;
      } else {
        int e = SSL_get_error(ssl, rc);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_WRITE) {
          tls_events |= POLLOUT;
        } else if (e == SSL_ERROR_WANT_READ) {
          tls_events |= POLLIN;
        } else {
          return;
        }
      }
    }
    if ((tls_eof && plain_have == 0) || (plain_eof && tls_have == 0)) return;
    if (progress) continue;
    pollfd fds[3] = {{tls_fd, tls_events, 0}, {plain_fd, plain_events, 0}, {stop_fd, POLLIN, 0}};
    if (poll(fds, 3, -1) < 0 && errno != EINTR) return;
    if (fds[2].revents != 0) return;
    if ((fds[0].revents | fds[1].revents) & (POLLERR | POLLNVAL)) return;
  }
}

expected<std::unique_ptr<server>> server::start(const config& cfg, evidence_fn evidence) {
  auto s = std::make_unique<server_impl>(cfg, std::move(evidence));
  if (auto r = s->start(); !r) return r.error();
  return std::unique_ptr<server>(std::move(s));
}

}  // namespace cove::agent::atls

// AMD KDS client. OpenSSL's HTTP client (OSSL_HTTP_open) makes the connection, with the
// TLS BIO pushed by its bio_update callback; the GET is written and the response read on
// that BIO here, because OpenSSL 3.0's OSSL_HTTP_exchange/OSSL_HTTP_get turn every non-200
// status into an error without its headers — and a 429's Retry-After is what we need.
#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/http.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <ctime>

#include "cove/attest/collateral.hpp"

namespace cove::attest {

namespace {

constexpr std::size_t max_head = 64u << 10;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<uint64_t> decimal(std::string_view s, std::size_t max_digits) {
  if (s.empty() || s.size() > max_digits) return std::nullopt;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

/// The newest OpenSSL error as text (and the queue cleared).
std::string ssl_error(std::string_view fallback) {
  unsigned long last = 0;
  const char* data = nullptr;
  int flags = 0;
  for (unsigned long e; (e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) != 0;) last = e;
  if (last == 0) return std::string(fallback);
  char buf[256];
  ERR_error_string_n(last, buf, sizeof buf);
  return buf;
}

struct ctx_free {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};

}  // namespace

expected<http_response_head> parse_http_head(std::string_view raw) {
  auto end = raw.find("\r\n\r\n");
  if (end == std::string_view::npos || end + 4 > max_head) {
    if (raw.size() >= max_head || end != std::string_view::npos)
      return make_error(errc::invalid_request, "http: response header block over 64 KiB");
    return make_error(errc::unavailable, "http: incomplete response header");
  }
  http_response_head h;
  h.header_size = end + 4;
  auto head = raw.substr(0, end);
  auto eol = head.find("\r\n");
  auto status_line = head.substr(0, eol);
  // HTTP/1.x NNN[ reason]
  if (status_line.size() < 12 || !status_line.starts_with("HTTP/1.") ||
      !std::isdigit(static_cast<unsigned char>(status_line[7])) || status_line[8] != ' ' ||
      (status_line.size() > 12 && status_line[12] != ' '))
    return make_error(errc::invalid_request, "http: malformed status line");
  auto code = decimal(status_line.substr(9, 3), 3);
  if (!code || *code < 100) return make_error(errc::invalid_request, "http: malformed status code");
  h.status = static_cast<int>(*code);
  auto rest = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
  while (!rest.empty()) {
    auto e = rest.find("\r\n");
    auto line = rest.substr(0, e);
    rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
    auto colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos)
      return make_error(errc::invalid_request, "http: malformed header line");
    auto name = line.substr(0, colon);
    if (name.find_first_of(" \t") != std::string_view::npos)
      return make_error(errc::invalid_request, "http: malformed header name");
    auto value = trim(line.substr(colon + 1));
    if (iequals(name, "Content-Length")) {
      auto n = decimal(value, 18);
      if (!n) return make_error(errc::invalid_request, "http: malformed Content-Length");
      if (h.content_length && *h.content_length != *n)
        return make_error(errc::invalid_request, "http: conflicting Content-Length headers");
      h.content_length = static_cast<std::size_t>(*n);
    } else if (iequals(name, "Transfer-Encoding")) {
      if (!iequals(value, "identity"))
        return make_error(errc::invalid_request, "http: transfer coding '" +
                                                     std::string(value.substr(0, 32)) +
                                                     "' not supported (HTTP/1.0 request)");
    } else if (iequals(name, "Retry-After")) {
      if (auto s = decimal(value, 9)) h.retry_after = std::chrono::seconds(*s);  // HTTP-dates: ignored
    }
  }
  return h;
}

expected<fetch_response> parse_http_response(std::string_view raw, std::size_t max_body) {
  auto h = parse_http_head(raw);
  if (!h) return std::move(h).error();
  auto body = raw.substr(h->header_size);
  if (h->content_length) {
    if (*h->content_length > max_body)
      return make_error(errc::too_large, fmt::format("http: response body of {} bytes, over {}",
                                                     *h->content_length, max_body));
    if (body.size() < *h->content_length)
      return make_error(errc::unavailable, fmt::format("http: truncated response: {} of {} body bytes",
                                                       body.size(), *h->content_length));
    body = body.substr(0, *h->content_length);
  }
  if (body.size() > max_body)
    return make_error(errc::too_large, fmt::format("http: response body over {} bytes", max_body));
  return fetch_response{h->status, std::string(body), h->retry_after};
}

struct kds_provider::impl {
  kds_options o;
  std::string host, port, host_header, prefix;
  bool tls = false;
  bool ip = false;
  std::unique_ptr<SSL_CTX, ctx_free> ctx;
};

kds_provider::kds_provider(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
kds_provider::~kds_provider() = default;

expected<std::shared_ptr<kds_provider>> kds_provider::make(kds_options o) {
  auto bad = [&](std::string_view why) {
    return make_error(errc::invalid_request, fmt::format("kds: base URL '{}': {}", o.base_url, why));
  };
  const bool https = o.base_url.starts_with("https://");
  if (!https && !o.base_url.starts_with("http://")) return bad("not http:// or https://");
  if (!https && o.base_url == kds_default_url) return bad("the default KDS is https only");
  char *user = nullptr, *host = nullptr, *port = nullptr, *path = nullptr, *query = nullptr, *frag = nullptr;
  int ssl = 0;
  if (OSSL_HTTP_parse_url(o.base_url.c_str(), &ssl, &user, &host, &port, nullptr, &path, &query, &frag) !=
      1) {
    ERR_clear_error();
    return bad("not a URL (http(s)://host[:port][/prefix])");
  }
  auto m = std::make_unique<impl>();
  std::string u = user != nullptr ? user : "", q = query != nullptr ? query : "",
              f = frag != nullptr ? frag : "";
  m->host = host != nullptr ? host : "";
  m->port = port != nullptr ? port : "";
  m->prefix = path != nullptr ? path : "";
  for (char* s : {user, host, port, path, query, frag}) OPENSSL_free(s);
  if (!u.empty() || !q.empty() || !f.empty()) return bad("user info, query and fragment are not allowed");
  if (m->host.empty()) return bad("no host");
  while (m->prefix.ends_with('/')) m->prefix.pop_back();
  if (o.timeout.count() < 1) return bad("the timeout must be at least 1 s");
  if (o.max_response == 0) return bad("the response cap must be positive");
  m->tls = https;
  unsigned char addr[16];
  m->ip = inet_pton(AF_INET, m->host.c_str(), addr) == 1 || inet_pton(AF_INET6, m->host.c_str(), addr) == 1;
  const bool default_port = m->port == (https ? "443" : "80");
  auto h = m->host.find(':') != std::string::npos ? "[" + m->host + "]" : m->host;
  m->host_header = default_port ? h : h + ":" + m->port;
  if (https) {
    m->ctx.reset(SSL_CTX_new(TLS_client_method()));
    if (!m->ctx || SSL_CTX_set_min_proto_version(m->ctx.get(), TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_default_verify_paths(m->ctx.get()) != 1)
      return make_error(errc::crypto_failed,
                        "kds: TLS setup: " + ssl_error("cannot load the system CA store"));
    SSL_CTX_set_verify(m->ctx.get(), SSL_VERIFY_PEER, nullptr);
  }
  m->o = std::move(o);
  return std::shared_ptr<kds_provider>(new kds_provider(std::move(m)));
}

std::string kds_provider::url_of(std::string_view path) const {
  return fmt::format("{}://{}{}/{}", impl_->tls ? "https" : "http", impl_->host_header, impl_->prefix, path);
}

namespace {

struct tls_arg {
  const kds_provider::impl* m;
  BIO* io = nullptr;  // the BIO requests go through (the TLS BIO on top of the socket)
};

// OSSL_HTTP_bio_cb_t: on connect, push a TLS BIO (server name, host check) for https.
// On disconnect the chain is left as is: OSSL_HTTP_close frees all of it.
BIO* kds_bio_update(BIO* bio, void* arg, int connect, int detail) {
  auto* a = static_cast<tls_arg*>(arg);
  if (connect == 0) return bio;
  if (detail == 0) {  // plain http
    a->io = bio;
    return bio;
  }
  BIO* sbio = BIO_new_ssl(a->m->ctx.get(), 1);
  if (sbio == nullptr) return nullptr;
  SSL* ssl = nullptr;
  BIO_get_ssl(sbio, &ssl);
  const char* host = a->m->host.c_str();
  const bool ok = a->m->ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1
                           : SSL_set_tlsext_host_name(ssl, host) == 1 && SSL_set1_host(ssl, host) == 1;
  if (!ok) {
    BIO_free(sbio);
    return nullptr;
  }
  a->io = BIO_push(sbio, bio);
  return a->io;
}

}  // namespace

expected<fetch_response> kds_provider::fetch(std::string_view path) {
  const impl& m = *impl_;
  const auto url = url_of(path);
  const auto timeout = static_cast<int>(std::min<std::chrono::seconds::rep>(m.o.timeout.count(), 86400));
  const std::time_t max_time = std::time(nullptr) + timeout;
  ERR_clear_error();
  tls_arg arg{&m};
  // proxy "": never a proxy (OpenSSL would otherwise read http(s)_proxy).
  OSSL_HTTP_REQ_CTX* rctx = OSSL_HTTP_open(m.host.c_str(), m.port.c_str(), "", nullptr, m.tls ? 1 : 0,
                                           nullptr, nullptr, kds_bio_update, &arg, 0, timeout);
  if (rctx == nullptr) {
    const bool late = std::time(nullptr) >= max_time;
    return make_error(
        late ? errc::timeout : errc::unavailable,
        fmt::format("{}: cannot connect: {}", url, ssl_error(late ? "timed out" : "connect failure")));
  }
  struct closer {
    OSSL_HTTP_REQ_CTX* r;
    ~closer() { OSSL_HTTP_close(r, 1); }
  } close_at_end{rctx};
  BIO* io = arg.io;
  if (io == nullptr) return make_error(errc::internal, url + ": no connection BIO");

  // Waits for the socket after a retryable BIO call; an error once the deadline passes.
  auto wait = [&](const char* what) -> expected<void> {
    int w = BIO_wait(io, max_time, 50);
    if (w > 0) return {};
    ERR_clear_error();
    if (w == 0)
      return make_error(errc::timeout, fmt::format("{}: timed out after {} s ({})", url, timeout, what));
    return make_error(errc::unavailable, fmt::format("{}: {} failed", url, what));
  };

  if (m.tls) {
    for (;;) {
      if (BIO_do_handshake(io) > 0) break;
      if (BIO_should_retry(io)) {
        if (auto w = wait("TLS handshake"); !w) return w.error();
        continue;
      }
      SSL* ssl = nullptr;
      BIO_get_ssl(io, &ssl);
      long v = ssl != nullptr ? SSL_get_verify_result(ssl) : X509_V_OK;
      if (v != X509_V_OK) {
        ERR_clear_error();
        return make_error(errc::crypto_failed,
                          fmt::format("{}: TLS: the server's certificate does not verify "
                                      "against the system CA store: {}",
                                      url, X509_verify_cert_error_string(v)));
      }
      return make_error(errc::unavailable, fmt::format("{}: TLS handshake: {}", url, ssl_error("failed")));
    }
  }

  const std::string req = fmt::format(
      "GET {}/{} HTTP/1.0\r\nHost: {}\r\nUser-Agent: cove\r\nAccept: */*\r\nConnection: close\r\n\r\n",
      m.prefix, path, m.host_header);
  for (std::size_t off = 0; off < req.size();) {
    int n = BIO_write(io, req.data() + off, static_cast<int>(req.size() - off));
    if (n > 0) {
      off += static_cast<std::size_t>(n);
    } else if (BIO_should_retry(io)) {
      if (auto w = wait("sending the request"); !w) return w.error();
    } else {
      return make_error(errc::unavailable, fmt::format("{}: send: {}", url, ssl_error("connection closed")));
    }
  }
  (void)BIO_flush(io);

  std::string buf;
  const std::size_t cap = max_head + m.o.max_response;
  char chunk[16384];
  for (;;) {
    int n = BIO_read(io, chunk, sizeof chunk);
    if (n > 0) {
      buf.append(chunk, static_cast<std::size_t>(n));
      if (buf.size() > cap)
        return make_error(errc::too_large, fmt::format("{}: response over {} bytes", url, m.o.max_response));
      if (buf.find("\r\n\r\n") != std::string::npos) {
        auto h = parse_http_head(buf);
        if (!h) return make_error(h.error().code, fmt::format("{}: {}", url, h.error().message));
        if (h->content_length && *h->content_length > m.o.max_response)
          return make_error(errc::too_large, fmt::format("{}: response of {} bytes, over {}", url,
                                                         *h->content_length, m.o.max_response));
        if (h->content_length && buf.size() >= h->header_size + *h->content_length) break;
      }
    } else if (BIO_should_retry(io)) {
      if (auto w = wait("reading the response"); !w) return w.error();
    } else {
      ERR_clear_error();  // end of stream (the server closes after an HTTP/1.0 response)
      break;
    }
  }
  auto r = parse_http_response(buf, m.o.max_response);
  if (!r) return make_error(r.error().code, fmt::format("{}: {}", url, r.error().message));
  return r;
}

}  // namespace cove::attest

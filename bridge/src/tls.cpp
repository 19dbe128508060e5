#include "cove/bridge/tls.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstdio>

#include <fmt/format.h>

#include "cove/bus/authz.hpp"
#include "cove/crypto/x509.hpp"

namespace cove::bridge {

namespace fs = std::filesystem;

namespace {

using pkey = c_handle<EVP_PKEY, EVP_PKEY_free>;

error tls_error(std::string_view what) {
  return error{errc::internal, ssl_error_text(what)};
}

expected<void> generate_identity(const tls_identity& id) {
  pkey key{EVP_EC_gen("P-256")};
  if (!key) return tls_error("bridge identity: EC key");
  // Self-signed and pinned by agents as is: a CA (it signs itself) that names
  // where agents dial it.
  auto cert = crypto::issue_certificate(key.get(), "cove-bridge", nullptr, key.get(), 3650,
                                        {{NID_subject_alt_name, "DNS:cove-bridge,IP:127.0.0.1"},
                                         {NID_basic_constraints, "critical,CA:TRUE"},
                                         {NID_key_usage, "critical,digitalSignature,keyCertSign"}});
  if (!cert) return make_error(cert.error().code, "bridge identity: " + cert.error().message);
  auto key_pem = crypto::to_pem(nullptr, key.get());
  auto cert_pem = crypto::to_pem(cert->get(), nullptr);
  if (!key_pem || !cert_pem) return tls_error("bridge identity: PEM");
  // The bus's private-file writer (0600 from creation, O_NOFOLLOW, fsync, atomic rename).
  auto written = bus::authz::write_private_file(id.key, *key_pem);
  OPENSSL_cleanse(key_pem->data(), key_pem->size());
  if (!written) return written;
  if (auto w = bus::authz::write_private_file(id.cert, *cert_pem); !w) return w;
  // The certificate is public: agents (possibly another user) pin it.
  std::error_code ec;
  fs::permissions(
      id.cert,
      fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read, ec);
  if (ec)
    return make_error(errc::internal, "cannot set permissions of " + id.cert.string() + ": " + ec.message());
  return ok();
}

/// Half-megabyte chunks cross the link: read many TLS records per recv() (read-ahead
/// into a 256 KiB buffer) instead of two syscalls per 16 KiB record.
void tune_for_bulk(SSL_CTX* ctx) {
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, 256 * 1024);
}

}  // namespace

std::string ssl_error_text(std::string_view what) {
  std::string out(what);
  bool first = true;
  while (unsigned long e = ERR_get_error()) {
    std::array<char, 256> buf{};
    ERR_error_string_n(e, buf.data(), buf.size());
    out += first ? ": " : "; ";
    out += buf.data();
    first = false;
  }
  return out;
}

expected<tls_identity> ensure_identity(const fs::path& dir) {
  tls_identity id{dir / "cert.pem", dir / "key.pem"};
  std::error_code ec;
  if (fs::exists(id.cert, ec) && fs::exists(id.key, ec)) return id;
  fs::create_directories(dir, ec);
  if (ec) return make_error(errc::internal, "bridge identity dir " + dir.string() + ": " + ec.message());
  fs::permissions(dir, fs::perms::owner_all, ec);
  if (auto g = generate_identity(id); !g) return g.error();
  return id;
}

expected<ssl_ctx> server_context(const tls_identity& id) {
  ssl_ctx ctx{SSL_CTX_new(TLS_server_method())};
  if (!ctx) return tls_error("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), id.cert.c_str()) != 1)
    return tls_error("bridge certificate " + id.cert.string());
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), id.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return tls_error("bridge key " + id.key.string());
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return tls_error("bridge key does not match its certificate");
  tune_for_bulk(ctx.get());
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx.get(), 0);  // every link is a full handshake: a fresh binding
  return ctx;
}

expected<ssl_ctx> client_context(const fs::path& ca_file) {
  ssl_ctx ctx{SSL_CTX_new(TLS_client_method())};
  if (!ctx) return tls_error("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  if (SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) != 1)
    return tls_error("bridge CA " + ca_file.string());
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  tune_for_bulk(ctx.get());
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  return ctx;
}

expected<std::array<uint8_t, 32>> channel_binding(SSL* ssl) {
  static constexpr std::string_view label = "EXPORTER-Channel-Binding";
  if (SSL_version(ssl) != TLS1_3_VERSION)
    return make_error(errc::invalid_request, "channel binding: the link is not TLS 1.3");
  std::array<uint8_t, 32> out{};
  if (SSL_export_keying_material(ssl, out.data(), out.size(), label.data(), label.size(), nullptr, 0, 0) != 1)
    return tls_error("channel binding: SSL_export_keying_material");
  return out;
}

}  // namespace cove::bridge

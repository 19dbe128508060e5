#include "cove/bridge/tls.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <cstdio>

#include <fmt/format.h>

#include "cove/bus/authz.hpp"

namespace cove::bridge {

namespace fs = std::filesystem;

namespace {

using pkey = c_handle<EVP_PKEY, EVP_PKEY_free>;
using x509 = c_handle<X509, X509_free>;
using x509_ext = c_handle<X509_EXTENSION, X509_EXTENSION_free>;
using bio = c_handle<BIO, BIO_free_all>;

error tls_error(std::string_view what) {
  return error{errc::internal, ssl_error_text(what)};
}

std::string bio_text(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string{};
}

expected<void> generate_identity(const tls_identity& id) {
  pkey key{EVP_EC_gen("P-256")};
  if (!key) return tls_error("bridge identity: EC key");
  x509 cert{X509_new()};
  if (!cert) return tls_error("bridge identity: X509_new");
  X509_set_version(cert.get(), 2);
  std::array<uint8_t, 16> serial{};
  if (RAND_bytes(serial.data(), serial.size()) != 1) return tls_error("bridge identity: serial");
  serial[0] &= 0x7f;
  c_handle<BIGNUM, BN_free> bn{BN_bin2bn(serial.data(), serial.size(), nullptr)};
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())))
    return tls_error("bridge identity: serial");
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 24 * 3600);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("cove-bridge"),
                             -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  X509_set_pubkey(cert.get(), key.get());
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, "DNS:cove-bridge,IP:127.0.0.1"},
                            std::pair{NID_basic_constraints, "critical,CA:TRUE"},
                            std::pair{NID_key_usage, "critical,digitalSignature,keyCertSign"}}) {
    x509_ext ext{X509V3_EXT_conf_nid(nullptr, &ctx, nid, value)};
    if (!ext || X509_add_ext(cert.get(), ext.get(), -1) != 1) return tls_error("bridge identity: extension");
  }
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) return tls_error("bridge identity: sign");
  bio kb{BIO_new(BIO_s_mem())}, cb{BIO_new(BIO_s_mem())};
  if (!kb || !cb ||
      PEM_write_bio_PrivateKey(kb.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1 ||
      PEM_write_bio_X509(cb.get(), cert.get()) != 1)
    return tls_error("bridge identity: PEM");
  // The bus's private-file writer (0600 from creation, O_NOFOLLOW, fsync, atomic rename).
  if (auto w = bus::authz::write_private_file(id.key, bio_text(kb.get())); !w) return w;
  if (auto w = bus::authz::write_private_file(id.cert, bio_text(cb.get())); !w) return w;
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

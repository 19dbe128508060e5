#pragma once
// TLS 1.3 for the bridge link (OpenSSL 3.0): the bridge's self-signed identity,
// server and client contexts, and the RFC 9266 channel binding both ends derive.
#include <openssl/ssl.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>

#include "cove/c_handle.hpp"
#include "cove/expected.hpp"

namespace cove::bridge {

using ssl_ctx = c_handle<SSL_CTX, SSL_CTX_free>;
using ssl_ptr = c_handle<SSL, SSL_free>;

/// The name in the bridge certificate (SAN DNS) that agents check.
inline constexpr std::string_view bridge_tls_name = "cove-bridge";

/// Files of the bridge's TLS identity in `dir`: cert.pem (self-signed P-256,
/// SAN DNS:cove-bridge, IP:127.0.0.1; agents pin it as their CA) and key.pem (0600).
struct tls_identity {
  std::filesystem::path cert;
  std::filesystem::path key;
};

/// Loads the identity from `dir`, generating it on first use.
expected<tls_identity> ensure_identity(const std::filesystem::path& dir);

/// TLS 1.3-only server context with the identity's certificate and key.
expected<ssl_ctx> server_context(const tls_identity& id);

/// TLS 1.3-only client context that trusts only `ca_file` and checks the peer is
/// `bridge_tls_name`.
expected<ssl_ctx> client_context(const std::filesystem::path& ca_file);

/// RFC 9266 tls-exporter channel binding: 32 bytes exported with the label
/// "EXPORTER-Channel-Binding" and no context. Both ends of one TLS 1.3 session
/// derive the same value; any other session (a relay's) derives another.
expected<std::array<uint8_t, 32>> channel_binding(SSL* ssl);

/// The OpenSSL error queue as text (drained), prefixed with `what`.
std::string ssl_error_text(std::string_view what);

}  // namespace cove::bridge

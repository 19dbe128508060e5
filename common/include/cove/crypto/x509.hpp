#pragma once
// Issuing X.509 certificates for cove's own TLS endpoints: the bus CA and server
// certificate (bus/authz) and the bridge's self-signed identity (bridge/tls).
#include <openssl/types.h>
#include <openssl/x509.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cove/c_handle.hpp"
#include "cove/expected.hpp"

namespace cove::crypto {

using x509_handle = c_handle<X509, X509_free>;

/// errc::crypto_failed "<what>: <OpenSSL's first queued error>"; clears the queue.
error openssl_error(std::string_view what);

/// An X.509 v3 extension in OpenSSL's config syntax: {NID_key_usage, "critical,keyCertSign"}.
using x509_extension = std::pair<int, std::string>;

/// A certificate for `key` with subject "O=cove, CN=<cn>", a random positive 128-bit
/// serial, valid from an hour ago for `days` days, with `extensions`, signed (SHA-256)
/// by `issuer_key` under `issuer`'s name — or self-signed when `issuer` is null
/// (then `issuer_key` is `key`'s private half).
expected<x509_handle> issue_certificate(EVP_PKEY* key, std::string_view cn, X509* issuer,
                                        EVP_PKEY* issuer_key, long days,
                                        const std::vector<x509_extension>& extensions);

/// The PEM text of `cert` and/or `key` (either may be null). The key's
/// intermediate buffer is wiped; the caller owns (and should wipe) the result.
expected<std::string> to_pem(X509* cert, EVP_PKEY* key);

}  // namespace cove::crypto

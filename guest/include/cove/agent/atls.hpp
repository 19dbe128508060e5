#pragma once
// Attested TLS as cocos HEAD does it (cocos-interfaces.md §4.4): after a TLS 1.3
// handshake the client sends one frame with an RFC 9261 authenticator request that
// offers the `cmw_attestation` extension (0xFF00); the server answers with an exported
// authenticator (Certificate, CertificateVerify, Finished) whose leaf carries, in
// 0xFF00, a CMW JSON object with the EAT evidence bound to this TLS session; then the
// same connection carries HTTP/2 (gRPC). Both halves live here: the agent's server
// side and a client side for tests and tools.
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cove/expected.hpp"

namespace cove::agent::atls {

using bytes = std::vector<uint8_t>;

inline constexpr uint8_t frame_request = 1;
inline constexpr uint8_t frame_authenticator = 2;
inline constexpr size_t max_frame = 16u << 20;
inline constexpr uint16_t ext_signature_algorithms = 0x000d;
inline constexpr uint16_t ext_cmw_attestation = 0xff00;
inline constexpr uint16_t scheme_ecdsa_p256_sha256 = 0x0403;

/// One frame: type (1 byte), big-endian u32 length, payload (<= 16 MiB). Blocking SSL I/O.
expected<void> write_frame(SSL* ssl, uint8_t type, std::span<const uint8_t> payload);
expected<std::pair<uint8_t, bytes>> read_frame(SSL* ssl);

struct authenticator_request {
  bytes raw;      // the whole handshake message (type 17), as received
  bytes context;  // certificate_request_context
  std::vector<uint16_t> schemes;
  bool offers_attestation = false;
};

/// A ClientCertificateRequest (17) with signature_algorithms = {0x0403} and an empty 0xFF00.
bytes make_request(std::span<const uint8_t> context);

/// Parses an authenticator request; errc::invalid_request for anything malformed, for
/// trailing bytes, or when 0xFF00 is not offered.
expected<authenticator_request> parse_request(std::span<const uint8_t> msg);

/// Produces the evidence for report_data / vTPM nonce (the agent's EAT).
using evidence_fn = std::function<expected<bytes>(const std::array<uint8_t, 64>& report_data,
                                                  const std::array<uint8_t, 32>& nonce)>;

/// The server's authenticator for `req` on the established TLS 1.3 connection `ssl`,
/// signed by `key` (ECDSA P-256) for the leaf certificate `leaf`.
expected<bytes> make_authenticator(SSL* ssl, const authenticator_request& req, X509* leaf, EVP_PKEY* key,
                                   const evidence_fn& evidence);

struct verified_authenticator {
  bytes leaf_der;
  std::string cmw_json;
  bytes evidence;                         // the EAT (decoded from the CMW)
  std::array<uint8_t, 64> report_data{};  // what the evidence must carry: SHA-512(binding)
  std::array<uint8_t, 32> nonce{};        // SHA-256(exported)
};

/// Client side: checks the authenticator for `request` (context echo, the leaf's
/// signature, Finished, 0xFF00 on the leaf, the binder recomputed from this session)
/// and returns the evidence with the report data it must be bound to. Checking the
/// evidence itself (hardware signature, policy) is the caller's job.
expected<verified_authenticator> verify_authenticator(SSL* ssl, std::span<const uint8_t> request,
                                                      std::span<const uint8_t> authenticator);

/// Copies bytes both ways between the TLS connection `ssl` (its socket is made
/// non-blocking) and the plain socket `plain_fd` until either side closes or `stop_fd`
/// becomes readable. Neither descriptor is closed.
void relay(SSL* ssl, int plain_fd, int stop_fd);

/// The agent's aTLS listener (cocos's ingress proxy): terminates TLS 1.3 (ALPN h2), runs
/// the authenticator exchange with evidence from `evidence`, then relays the connection
/// to the plaintext gRPC server on the Unix socket `backend`. Without cert/key it uses an
/// ephemeral ECDSA P-256 self-signed certificate (CN cocos-atls-ephemeral, 24 h), as
/// cocos does; a configured key must be ECDSA P-256.
class server {
 public:
  struct config {
    std::string listen;  // HOST:PORT
    std::string cert_file, key_file;
    std::string client_ca_file;  // set: client certificates required (cocos "maTLS")
    std::string backend;         // Unix socket path of the plaintext gRPC server
  };
  static expected<std::unique_ptr<server>> start(const config& cfg, evidence_fn evidence);
  virtual ~server() = default;
  [[nodiscard]] virtual int port() const noexcept = 0;
  virtual void stop() = 0;
};

}  // namespace cove::agent::atls

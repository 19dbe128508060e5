#pragma once
// The cocos front door: cocos's agent.AgentService (proto/agent/agent.proto) over
// gRPC, so that the unmodified cocos CLI can drive a cove computation. The server
// only translates: every decision about state, manifest, hashes and keys is taken
// by the agent (cocos_backend, implemented on the agent's single queue thread), the
// same state machine and manifest the bus path uses. See guest/README.md.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cove/agent/cocos_auth.hpp"
#include "cove/expected.hpp"
#include "cove/manifest.hpp"

namespace cove::agent {

struct cocos_front_config {
  std::string listen;                 // HOST:PORT; port 0 picks a free one
  std::string tls = "none";           // none | tls | atls (TLS 1.3 + Exported Authenticator, §4.4)
  std::filesystem::path cert;         // PEM; tls
  std::filesystem::path key;          // PEM; tls
  std::filesystem::path client_ca;    // PEM; set with tls = mTLS (client certificate required)
  std::filesystem::path port_file;    // written (atomically) with the bound port once serving
  std::filesystem::path staging_dir;  // where uploads are spooled before the agent checks them
  std::filesystem::path socket_path;  // atls: the plaintext gRPC server's Unix socket (0600)
  uint64_t max_upload_bytes = 64ull << 30;
};

/// Checks the config; the error names the offending option.
expected<void> validate(const cocos_front_config& cfg);

/// An opened result file handed from the agent to the server thread.
struct result_file {
  int fd = -1;  // owned by the receiver
  uint64_t size = 0;
};

/// What the front door asks of the agent. Every call is thread-safe.
class cocos_backend {
 public:
  virtual ~cocos_backend() = default;
  /// Before any byte is accepted: a manifest is loaded, the state accepts this kind of
  /// upload, and `signature` verifies under a key the manifest declares for `r`.
  virtual expected<void> cocos_authorize_upload(cocos::role r, const std::vector<uint8_t>& signature) = 0;
  /// The spooled algorithm at `part` (hash `digest`) is checked against the manifest and, if
  /// still wanted, moved into place. `type`/`args` come from the upload's metadata (empty:
  /// the manifest's). On error the caller removes `part`.
  virtual expected<void> cocos_accept_algorithm(const std::filesystem::path& part, const sha3_digest& digest,
                                                std::optional<algo_type> type,
                                                std::optional<std::vector<std::string>> args,
                                                const std::vector<uint8_t>& signature) = 0;
  /// The spooled dataset: matched by filename (else by hash) with a pending manifest
  /// entry whose key made `signature`; `decompress` extracts it as a zip into datasets/.
  virtual expected<void> cocos_accept_dataset(const std::filesystem::path& part, const std::string& filename,
                                              const sha3_digest& digest, bool decompress,
                                              const std::vector<uint8_t>& signature) = 0;
  /// A consumer's download: checks the signature and the state, opens the result zip.
  virtual expected<result_file> cocos_open_result(const std::vector<uint8_t>& signature) = 0;
  /// The download ended successfully (ConsumingResults -> Complete).
  virtual void cocos_result_delivered() = 0;
  /// Evidence (an EAT token, §4.3) with REPORT_DATA = report_data and nonce = vtpm_nonce, for
  /// cocos platform type `type` (0 SNP .. 4 TDX).
  virtual expected<std::vector<uint8_t>> cocos_attestation(const std::array<uint8_t, 64>& report_data,
                                                           const std::array<uint8_t, 32>& vtpm_nonce,
                                                           int type) = 0;
};

/// A running gRPC server. Destroying it (or shutdown()) stops it: in-flight calls get a
/// short grace period and are then cancelled.
class cocos_front {
 public:
  /// Binds and starts serving; returns once the port is bound (and port_file written).
  static expected<std::unique_ptr<cocos_front>> start(const cocos_front_config& cfg, cocos_backend& backend);
  virtual ~cocos_front() = default;
  [[nodiscard]] virtual int port() const noexcept = 0;
  virtual void shutdown() = 0;
};

}  // namespace cove::agent

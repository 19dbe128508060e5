#include "cove/agent/cocos_front.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "agent.grpc.pb.h"
#include "cove/agent/atls.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/hash.hpp"
#include "cove/log.hpp"

namespace cove::agent {

namespace fs = std::filesystem;
using bytes = std::vector<uint8_t>;

namespace {

constexpr size_t chunk_size = 1 << 20;          // cocos streams 1 MiB per message
constexpr int max_message = 4 << 20;            // Go gRPC's default receive limit
constexpr int max_parallel_uploads = 8;         // bounds the spooled bytes on disk
constexpr uint64_t max_requirements = 1 << 20;  // only to report a clear error

grpc::StatusCode to_grpc(errc e) {
  switch (e) {
    case errc::invalid_request:
    case errc::hash_mismatch:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case errc::not_found:
      return grpc::StatusCode::NOT_FOUND;
    case errc::already_exists:
      return grpc::StatusCode::ALREADY_EXISTS;
    case errc::unauthorized:
      return grpc::StatusCode::UNAUTHENTICATED;
    case errc::wrong_state:
    case errc::algorithm_failed:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case errc::too_large:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case errc::timeout:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    case errc::unavailable:
      return grpc::StatusCode::UNAVAILABLE;
    default:
      return grpc::StatusCode::INTERNAL;
  }
}

grpc::Status status_of(const error& e) {
  return {to_grpc(e.code), e.message};
}

grpc::Status status(grpc::StatusCode c, std::string msg) {
  return {c, std::move(msg)};
}

/// All values of metadata key `key` (gRPC lower-cases keys).
std::vector<std::string> metadata(const grpc::ServerContext* ctx, std::string_view key) {
  std::vector<std::string> out;
  auto [lo, hi] = ctx->client_metadata().equal_range(grpc::string_ref(key.data(), key.size()));
  for (auto it = lo; it != hi; ++it) out.emplace_back(it->second.data(), it->second.size());
  return out;
}

/// The one `signature` value, decoded; `user-id`, if sent, must name this rpc's role.
expected<bytes> signature_of(const grpc::ServerContext* ctx, cocos::role r) {
  auto sigs = metadata(ctx, "signature");
  if (sigs.empty())
    return make_error(errc::unauthorized,
                      fmt::format("missing 'signature' metadata: sign the string '{}' with "
                                  "the key the manifest declares (cocos-cli does this)",
                                  cocos::role_string(r)));
  if (sigs.size() != 1)
    return make_error(errc::unauthorized, "exactly one 'signature' metadata value is required");
  auto users = metadata(ctx, "user-id");
  for (const auto& u : users)
    if (u != cocos::role_string(r))
      return make_error(errc::invalid_request, fmt::format("user-id '{}' does not match this rpc's role '{}'",
                                                           u, cocos::role_string(r)));
  return cocos::decode_signature(sigs.front());
}

/// Spools uploaded bytes to a 0600 file while hashing them.
class spool {
 public:
  spool() = default;
  spool(const spool&) = delete;
  spool& operator=(const spool&) = delete;
  ~spool() {
    close_fd();
    if (!kept_ && !path_.empty()) {
      std::error_code ec;
      fs::remove(path_, ec);
    }
  }
  expected<void> open(fs::path p) {
    path_ = std::move(p);
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0)
      return make_error(errc::internal, "cannot create the staging file: " + std::string(strerror(errno)));
    return ok();
  }
  expected<void> append(std::string_view data) {
    hasher_.update(data);
    size_ += data.size();
    while (!data.empty()) {
      ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        return make_error(errc::internal, "writing the staging file: " + std::string(strerror(errno)));
      data.remove_prefix(static_cast<size_t>(n));
    }
    return ok();
  }
  expected<sha3_digest> finish() {
    if (::fsync(fd_) != 0) return make_error(errc::internal, "fsync of the staging file failed");
    close_fd();
    return hasher_.finish();
  }
  void keep() { kept_ = true; }  // the agent moved it (or tried to: it removes on error below)
  [[nodiscard]] uint64_t size() const { return size_; }
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  void close_fd() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  fs::path path_;
  int fd_ = -1;
  bool kept_ = false;
  uint64_t size_ = 0;
  crypto::sha3_256 hasher_;
};

/// Sends `file-size` and then the payload in 1 MiB messages.
template <class Response>
grpc::Status send_payload(grpc::ServerContext* ctx, grpc::ServerWriter<Response>* w, const bytes& payload) {
  ctx->AddInitialMetadata("file-size", std::to_string(payload.size()));
  w->SendInitialMetadata();
  for (size_t off = 0; off < payload.size(); off += chunk_size) {
    Response r;
    r.set_file(payload.data() + off, std::min(chunk_size, payload.size() - off));
    if (!w->Write(r)) return status(grpc::StatusCode::CANCELLED, "the client went away");
  }
  return grpc::Status::OK;
}

class service final : public ::agent::AgentService::Service {
 public:
  service(const cocos_front_config& cfg, cocos_backend& backend) : cfg_(cfg), backend_(backend) {}

  grpc::Status Algo(grpc::ServerContext* ctx, grpc::ServerReader<::agent::AlgoRequest>* reader,
                    ::agent::AlgoResponse* /*resp*/) override {
    auto sig = signature_of(ctx, cocos::role::algorithm_provider);
    if (!sig) return reject("Algo", sig.error());
    std::optional<algo_type> type;
    auto types = metadata(ctx, "algo_type");
    // cocos-cli always sends algo_type; the Go agent crashes without it. Missing or empty:
    // the manifest's type (which defaults to bin).
    if (!types.empty() && !types.front().empty()) {
      const auto& t = types.front();
      if (t == "bin") {
        type = algo_type::bin;
      } else if (t == "python") {
        type = algo_type::python;
      } else {
        return reject(
            "Algo",
            make_error(errc::invalid_request,
                       fmt::format("algo_type '{}' is not supported by this agent (bin, python)", t)));
      }
    }
    std::optional<std::vector<std::string>> args;
    if (auto a = metadata(ctx, "algo_args"); !a.empty()) args = std::move(a);
    if (auto r = backend_.cocos_authorize_upload(cocos::role::algorithm_provider, *sig); !r)
      return reject("Algo", r.error());
    upload_slot slot(in_flight_);
    if (!slot)
      return reject("Algo", make_error(errc::unavailable, "too many uploads in progress; retry later"));
    spool file;
    if (auto o = file.open(next_part()); !o) return reject("Algo", o.error());
    ::agent::AlgoRequest msg;
    uint64_t requirements = 0;
    while (reader->Read(&msg)) {
      requirements += msg.requirements().size();
      if (requirements > max_requirements) break;
      if (file.size() + msg.algorithm().size() > cfg_.max_upload_bytes)
        return reject("Algo",
                      make_error(errc::too_large, fmt::format("algorithm exceeds the limit of {} bytes",
                                                              cfg_.max_upload_bytes)));
      if (auto a = file.append(msg.algorithm()); !a) return reject("Algo", a.error());
    }
    if (ctx->IsCancelled()) return status(grpc::StatusCode::CANCELLED, "upload cancelled by the client");
    if (requirements > 0)
      return reject("Algo", make_error(errc::invalid_request,
                                       "requirements are not supported: the CVM has no network for pip; "
                                       "the image must provide the algorithm's dependencies"));
    if (file.size() == 0)
      return reject("Algo", make_error(errc::invalid_request, "algorithm binary is required"));
    auto digest = file.finish();
    if (!digest) return reject("Algo", digest.error());
    file.keep();
    auto r = backend_.cocos_accept_algorithm(file.path(), *digest, type, std::move(args), *sig);
    if (!r) {
      std::error_code ec;
      fs::remove(file.path(), ec);
      return reject("Algo", r.error());
    }
    return grpc::Status::OK;
  }

  grpc::Status Data(grpc::ServerContext* ctx, grpc::ServerReader<::agent::DataRequest>* reader,
                    ::agent::DataResponse* /*resp*/) override {
    auto sig = signature_of(ctx, cocos::role::data_provider);
    if (!sig) return reject("Data", sig.error());
    bool decompress = false;
    if (auto d = metadata(ctx, "decompress"); !d.empty()) {
      if (d.front() == "true") {
        decompress = true;
      } else if (d.front() != "false" && !d.front().empty()) {
        return reject("Data",
                      make_error(errc::invalid_request, "decompress: \"true\" or \"false\" expected"));
      }
    }
    if (auto r = backend_.cocos_authorize_upload(cocos::role::data_provider, *sig); !r)
      return reject("Data", r.error());
    upload_slot slot(in_flight_);
    if (!slot)
      return reject("Data", make_error(errc::unavailable, "too many uploads in progress; retry later"));
    spool file;
    if (auto o = file.open(next_part()); !o) return reject("Data", o.error());
    ::agent::DataRequest msg;
    std::string filename;
    while (reader->Read(&msg)) {
      if (!msg.filename().empty()) filename = msg.filename();
      if (file.size() + msg.dataset().size() > cfg_.max_upload_bytes)
        return reject("Data", make_error(errc::too_large, fmt::format("dataset exceeds the limit of {} bytes",
                                                                      cfg_.max_upload_bytes)));
      if (auto a = file.append(msg.dataset()); !a) return reject("Data", a.error());
    }
    if (ctx->IsCancelled()) return status(grpc::StatusCode::CANCELLED, "upload cancelled by the client");
    if (file.size() == 0) return reject("Data", make_error(errc::invalid_request, "dataset is required"));
    auto digest = file.finish();
    if (!digest) return reject("Data", digest.error());
    file.keep();
    auto r = backend_.cocos_accept_dataset(file.path(), filename, *digest, decompress, *sig);
    if (!r) {
      std::error_code ec;
      fs::remove(file.path(), ec);
      return reject("Data", r.error());
    }
    return grpc::Status::OK;
  }

  grpc::Status Result(grpc::ServerContext* ctx, const ::agent::ResultRequest* /*req*/,
                      grpc::ServerWriter<::agent::ResultResponse>* w) override {
    auto sig = signature_of(ctx, cocos::role::consumer);
    if (!sig) return reject("Result", sig.error());
    auto f = backend_.cocos_open_result(*sig);
    if (!f) return reject("Result", f.error());
    struct closer {
      int fd;
      ~closer() { ::close(fd); }
    } close_it{f->fd};
    ctx->AddInitialMetadata("file-size", std::to_string(f->size));
    w->SendInitialMetadata();
    bytes buf(chunk_size);
    uint64_t sent = 0;
    while (sent < f->size) {
      ssize_t n = ::pread(f->fd, buf.data(), std::min<uint64_t>(chunk_size, f->size - sent),
                          static_cast<off_t>(sent));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return status(grpc::StatusCode::INTERNAL, "reading the result file failed");
      ::agent::ResultResponse r;
      r.set_file(buf.data(), static_cast<size_t>(n));
      if (!w->Write(r)) return status(grpc::StatusCode::CANCELLED, "the client went away");
      sent += static_cast<uint64_t>(n);
    }
    backend_.cocos_result_delivered();
    return grpc::Status::OK;
  }

  grpc::Status Attestation(grpc::ServerContext* ctx, const ::agent::AttestationRequest* req,
                           grpc::ServerWriter<::agent::AttestationResponse>* w) override {
    if (req->teenonce().size() > 64)
      return reject("Attestation", make_error(errc::invalid_request,
                                              "malformed report data, expect less or equal to 64 bytes"));
    if (req->vtpmnonce().size() > 32)
      return reject("Attestation", make_error(errc::invalid_request,
                                              "malformed vTPM nonce, expect less or equal to 32 bytes"));
    if (req->type() < 0 || req->type() > 4)
      return reject("Attestation",
                    make_error(errc::invalid_request,
                               fmt::format("invalid attestation type {} (0 SNP, 1 vTPM, 2 SNP-vTPM, "
                                           "3 Azure, 4 TDX)",
                                           req->type())));
    std::array<uint8_t, 64> report_data{};
    std::array<uint8_t, 32> nonce{};
    std::copy(req->teenonce().begin(), req->teenonce().end(), report_data.begin());
    std::copy(req->vtpmnonce().begin(), req->vtpmnonce().end(), nonce.begin());
    auto ev = backend_.cocos_attestation(report_data, nonce, req->type());
    if (!ev) return reject("Attestation", ev.error());
    return send_payload(ctx, w, *ev);
  }

  grpc::Status IMAMeasurements(grpc::ServerContext* /*ctx*/, const ::agent::IMAMeasurementsRequest* /*req*/,
                               grpc::ServerWriter<::agent::IMAMeasurementsResponse>* /*w*/) override {
    // A cove CVM's kernel does not keep an IMA runtime list, and --tee sim has no TPM for PCR10.
    return reject(
        "IMAMeasurements",
        make_error(errc::wrong_state,
                   "IMA measurements are not available: this agent has no IMA runtime measurement list "
                   "(/sys/kernel/security/integrity/ima/ascii_runtime_measurements) and no PCR10 to "
                   "vouch for it"));
  }

  grpc::Status AzureAttestationToken(grpc::ServerContext* /*ctx*/,
                                     const ::agent::AttestationTokenRequest* /*req*/,
                                     ::agent::AttestationTokenResponse* /*resp*/) override {
    return status(grpc::StatusCode::UNIMPLEMENTED, "AzureAttestationToken: this agent does not run on Azure");
  }

 private:
  /// A slot among the parallel uploads, released on scope exit.
  class upload_slot {
   public:
    explicit upload_slot(std::atomic<int>& n) : n_(n) { ok_ = n_.fetch_add(1) < max_parallel_uploads; }
    ~upload_slot() { n_.fetch_sub(1); }
    upload_slot(const upload_slot&) = delete;
    upload_slot& operator=(const upload_slot&) = delete;
    explicit operator bool() const { return ok_; }

   private:
    std::atomic<int>& n_;
    bool ok_ = false;
  };

  fs::path next_part() { return cfg_.staging_dir / fmt::format("cocos-{}.part", ++counter_); }

  static grpc::Status reject(std::string_view rpc, const error& e) {
    spdlog::info("cocos {} -> {}: {}", rpc, to_string(e.code), e.message);
    return status_of(e);
  }

  const cocos_front_config& cfg_;
  cocos_backend& backend_;
  std::atomic<int> in_flight_{0};
  std::atomic<uint64_t> counter_{0};
};

expected<std::string> read_pem(const fs::path& p, std::string_view what) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return make_error(errc::invalid_request, fmt::format("{} {}: cannot read", what, p.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().find("-----BEGIN") == std::string::npos)
    return make_error(errc::invalid_request, fmt::format("{} {}: not PEM", what, p.string()));
  return ss.str();
}

class front_impl final : public cocos_front {
 public:
  front_impl(const cocos_front_config& cfg, cocos_backend& backend)
      : cfg_(cfg), backend_(backend), service_(cfg_, backend) {}
  ~front_impl() override { shutdown(); }

  expected<void> start() {
    std::shared_ptr<grpc::ServerCredentials> creds;
    if (cfg_.tls == "none") {
      creds = grpc::InsecureServerCredentials();
    } else if (cfg_.tls == "tls") {
      auto cert = read_pem(cfg_.cert, "--cert");
      if (!cert) return cert.error();
      auto key = read_pem(cfg_.key, "--key");
      if (!key) return key.error();
      grpc::SslServerCredentialsOptions opts(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
      if (!cfg_.client_ca.empty()) {
        auto ca = read_pem(cfg_.client_ca, "--client-ca");
        if (!ca) return ca.error();
        opts.pem_root_certs = *ca;
        opts.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
      }
      opts.pem_key_cert_pairs.push_back({*key, *cert});
      creds = grpc::SslServerCredentials(opts);
    } else if (cfg_.tls == "atls") {
      // As cocos's ingress proxy: gRPC in plaintext on a Unix socket only this agent's
      // aTLS listener connects to; the listener terminates TLS and attests the session.
      creds = grpc::InsecureServerCredentials();
    } else {
      return make_error(errc::invalid_request, fmt::format("--grpc-tls {}: not supported", cfg_.tls));
    }
    std::string address = cfg_.listen;
    if (cfg_.tls == "atls") {
      std::error_code ec;
      fs::remove(cfg_.socket_path, ec);
      address = "unix:" + cfg_.socket_path.string();
    }
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();  // as cocos: grpcurl works without .proto
                                                                 // files
    grpc::ServerBuilder b;
    b.AddListeningPort(address, creds, &port_);
    b.RegisterService(&service_);
    b.SetMaxReceiveMessageSize(max_message);
    b.SetMaxSendMessageSize(max_message);
    grpc::ResourceQuota quota("cove-agent-cocos");
    quota.SetMaxThreads(32);
    b.SetResourceQuota(quota);
    server_ = b.BuildAndStart();
    if (!server_ || port_ == 0)
      return make_error(errc::unavailable, fmt::format("--grpc-listen {}: cannot bind", address));
    if (cfg_.tls == "atls") {
      fs::permissions(cfg_.socket_path, fs::perms::owner_read | fs::perms::owner_write);
      atls::server::config ac{.listen = cfg_.listen,
                              .cert_file = cfg_.cert.string(),
                              .key_file = cfg_.key.string(),
                              .client_ca_file = cfg_.client_ca.string(),
                              .backend = cfg_.socket_path.string()};
      auto s = atls::server::start(
          ac, [this](const std::array<uint8_t, 64>& rd, const std::array<uint8_t, 32>& n) {
            return backend_.cocos_attestation(rd, n, 0);
          });
      if (!s) return s.error();
      atls_ = std::move(*s);
      port_ = atls_->port();
    }
    if (auto* health = server_->GetHealthCheckService()) {
      health->SetServingStatus("agent", true);
      health->SetServingStatus("", true);
    }
    if (!cfg_.port_file.empty()) {
      auto tmp = cfg_.port_file;
      tmp += ".tmp";
      {
        std::ofstream out(tmp, std::ios::trunc);
        out << port_ << "\n";
        if (!out) return make_error(errc::internal, "cannot write " + tmp.string());
      }
      std::error_code ec;
      fs::rename(tmp, cfg_.port_file, ec);
      if (ec) return make_error(errc::internal, "cannot write " + cfg_.port_file.string());
    }
    spdlog::info("cocos AgentService on {} (port {}, {}{})", cfg_.listen, port_, cfg_.tls,
                 cfg_.client_ca.empty() ? "" : ", client certificates required");
    return ok();
  }

  [[nodiscard]] int port() const noexcept override { return port_; }

  void shutdown() override {
    if (atls_) {
      atls_->stop();  // closes the attested connections first
      atls_.reset();
      std::error_code ec;
      fs::remove(cfg_.socket_path, ec);
    }
    if (!server_) return;
    if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
    server_.reset();
  }

 private:
  cocos_front_config cfg_;
  cocos_backend& backend_;
  service service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<atls::server> atls_;
  int port_ = 0;
};

}  // namespace

expected<void> validate(const cocos_front_config& cfg) {
  if (cfg.listen.empty()) return make_error(errc::invalid_request, "--grpc-listen: HOST:PORT required");
  if (cfg.tls != "none" && cfg.tls != "tls" && cfg.tls != "atls")
    return make_error(errc::invalid_request, "--grpc-tls: none, tls or atls expected");
  if (cfg.tls == "tls" && (cfg.cert.empty() || cfg.key.empty()))
    return make_error(errc::invalid_request, "--grpc-tls tls needs --cert and --key");
  if (cfg.tls == "atls" && cfg.cert.empty() != cfg.key.empty())
    return make_error(errc::invalid_request,
                      "--grpc-tls atls: give both --cert and --key, or neither (ephemeral)");
  if (cfg.tls == "atls" && cfg.socket_path.empty())
    return make_error(errc::invalid_request, "atls: the internal gRPC socket path is empty");
  if (cfg.tls == "none" && (!cfg.cert.empty() || !cfg.key.empty() || !cfg.client_ca.empty()))
    return make_error(errc::invalid_request, "--cert/--key/--client-ca need --grpc-tls tls");
  if (cfg.staging_dir.empty()) return make_error(errc::invalid_request, "staging dir: empty");
  return ok();
}

expected<std::unique_ptr<cocos_front>> cocos_front::start(const cocos_front_config& cfg,
                                                          cocos_backend& backend) {
  if (auto v = validate(cfg); !v) return v.error();
  auto f = std::make_unique<front_impl>(cfg, backend);
  if (auto s = f->start(); !s) return s.error();
  return std::unique_ptr<cocos_front>(std::move(f));
}

}  // namespace cove::agent

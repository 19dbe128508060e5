// Attested TLS on the cocos front door (cove-agent --grpc-tls atls), the way cocos HEAD's
// CLI does it: TLS 1.3, an RFC 9261 authenticator request offering cmw_attestation, the
// agent's exported authenticator with EAT evidence bound to this session, then gRPC
// (HTTP/2) on the same connection. The client half is cove::agent::atls.
#include <doctest/doctest.h>

#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "agent.grpc.pb.h"
#include "cove/agent/atls.hpp"
#include "cove/agent/cocos_auth.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/keys.hpp"
#include "cove/manifest.hpp"
#include "cove/test/process.hpp"
#include "fixture.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using namespace cove;
using bytes = std::vector<uint8_t>;

using cove::itest::must;
using cove::itest::read_file;

int tcp_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  return fd;
}

/// A TLS 1.3 client connection with ALPN h2 and no certificate check (as cocos-cli
/// without a server CA: trust comes from the authenticator).
struct tls_client {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  int fd = -1;
  explicit tls_client(int port) {
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    static const unsigned char alpn[] = {2, 'h', '2'};
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn);
    fd = tcp_connect(port);
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    REQUIRE_MESSAGE(SSL_connect(ssl) == 1, "TLS 1.3 handshake with the agent");
  }
  ~tls_client() {
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    ERR_clear_error();
  }
};

/// The 1184-byte SNP report inside an EAT: after the text key "raw_report".
std::string raw_report(const bytes& eat) {
  std::string s(eat.begin(), eat.end());
  auto at = s.find(std::string("\x6araw_report\x59\x04\xa0", 14));
  REQUIRE(at != std::string::npos);
  return s.substr(at + 14, 1184);
}

struct atls_agent {
  test::temp_dir dir{"cove-grpc-atls"};
  crypto::private_key key = must(crypto::private_key::generate(crypto::key_type::ed25519), "key");
  test::child_process proc;
  int port = 0;
  explicit atls_agent(std::vector<std::string> extra = {}) {
    manifest m;
    m.id = "atls";
    m.algorithm.user_key = key.public_key().der();
    m.result_consumers.push_back(key.public_key().der());
    { std::ofstream(dir.path() / "manifest.json") << to_json(m); }
    auto port_file = dir.path() / "port";
    std::vector<std::string> argv = {(cove::itest::bin_dir() / "cove-agent").string(),
                                     "--manifest",
                                     (dir.path() / "manifest.json").string(),
                                     "--grpc-listen",
                                     "127.0.0.1:0",
                                     "--grpc-tls",
                                     "atls",
                                     "--grpc-port-file",
                                     port_file.string(),
                                     "--work-dir",
                                     (dir.path() / "work").string(),
                                     "--log-level",
                                     "debug"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proc = must(test::child_process::spawn(argv, {}, dir.path(), "agent"), "spawn");
    bool up = test::wait_until(
        [&] {
          REQUIRE(proc.running());
          return fs::exists(port_file);
        },
        test::deadline_in(30s));
    REQUIRE_MESSAGE(up, "cove-agent --grpc-tls atls did not start; logs in " << dir.path());
    port = std::stoi(read_file(port_file));
  }
  ~atls_agent() {
    if (proc.running()) {
      auto status = proc.terminate(10s);
      CHECK_MESSAGE(status == 0, "cove-agent wait status " << status.value_or(-1) << "\n"
                                                           << read_file(dir.path() / "agent.stderr")
                                                           << read_file(dir.path() / "agent.stdout"));
    }
  }
};

}  // namespace

TEST_CASE("attested TLS: the authenticator binds the evidence to the session, then gRPC runs over it") {
  atls_agent agent;
  tls_client c(agent.port);
  const unsigned char* proto = nullptr;
  unsigned int proto_len = 0;
  SSL_get0_alpn_selected(c.ssl, &proto, &proto_len);
  CHECK(std::string(reinterpret_cast<const char*>(proto), proto_len) == "h2");

  bytes context(32);
  crypto::random_bytes(context);
  auto request = cove::agent::atls::make_request(context);
  must(cove::agent::atls::write_frame(c.ssl, cove::agent::atls::frame_request, request), "send request");
  auto [type, authenticator] = must(cove::agent::atls::read_frame(c.ssl), "read authenticator");
  REQUIRE(type == cove::agent::atls::frame_authenticator);
  auto v =
      must(cove::agent::atls::verify_authenticator(c.ssl, request, authenticator), "verify authenticator");
  CHECK(v.cmw_json.find("\"media_type\":\"application/eat+cwt\"") != std::string::npos);
  // The evidence is bound to this TLS session: REPORT_DATA = SHA-512(binding).
  auto report = raw_report(v.evidence);
  CHECK(report.substr(0x50, 64) == std::string(v.report_data.begin(), v.report_data.end()));
  std::string eat(v.evidence.begin(), v.evidence.end());
  CHECK(eat.find(std::string(v.nonce.begin(), v.nonce.end())) != std::string::npos);

  // A changed byte in the authenticator is refused.
  auto tampered = authenticator;
  tampered[tampered.size() - 1] ^= 1;
  CHECK_FALSE(cove::agent::atls::verify_authenticator(c.ssl, request, tampered));

  // gRPC over the attested connection: a local plaintext socket relays into it.
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  REQUIRE(listen(lfd, 1) == 0);
  socklen_t len = sizeof sa;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len);
  int stop = eventfd(0, EFD_CLOEXEC);
  std::thread relay([&] {
    int fd = accept(lfd, nullptr, nullptr);
    if (fd < 0) return;
    cove::agent::atls::relay(c.ssl, fd, stop);
    close(fd);
  });
  {
    auto stub = ::agent::AgentService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(ntohs(sa.sin_port)), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    ::agent::AttestationRequest req;
    req.set_teenonce("over aTLS");
    auto r = stub->Attestation(&ctx, req);
    ::agent::AttestationResponse msg;
    std::string payload;
    while (r->Read(&msg)) payload += msg.file();
    auto s = r->Finish();
    REQUIRE_MESSAGE(s.ok(), s.error_message());
    CHECK(static_cast<uint8_t>(payload[0]) == 0xd2);

    // 3 MiB through the relay: signed, but not the manifest's algorithm.
    grpc::ClientContext up;
    up.set_deadline(std::chrono::system_clock::now() + 30s);
    up.AddMetadata("signature", crypto::base64_encode(must(cove::agent::cocos::sign_role(
                                    agent.key, cove::agent::cocos::role::algorithm_provider))));
    ::agent::AlgoResponse resp;
    auto w = stub->Algo(&up, &resp);
    ::agent::AlgoRequest chunk;
    chunk.set_algorithm(std::string(1 << 20, 'a'));
    for (int i = 0; i < 3; ++i) w->Write(chunk);
    w->WritesDone();
    auto st = w->Finish();
    CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(st.error_message().find("does not match the manifest") != std::string::npos);
  }
  uint64_t one = 1;
  (void)!write(stop, &one, sizeof one);
  shutdown(lfd, SHUT_RDWR);
  relay.join();
  close(lfd);
  close(stop);
}

TEST_CASE("attested TLS: requests without the attestation offer and plaintext clients are refused") {
  atls_agent agent;
  {
    tls_client c(agent.port);
    // signature_algorithms only: no cmw_attestation (0xFF00) offer.
    bytes exts = {0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03};
    bytes body = {0x00, 0x00, static_cast<uint8_t>(exts.size())};
    body.insert(body.end(), exts.begin(), exts.end());
    bytes request = {17, 0, 0, static_cast<uint8_t>(body.size())};
    request.insert(request.end(), body.begin(), body.end());
    must(cove::agent::atls::write_frame(c.ssl, cove::agent::atls::frame_request, request), "send");
    CHECK_FALSE(cove::agent::atls::read_frame(c.ssl));  // the agent closes the connection
  }
  {
    auto stub = ::agent::AgentService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(agent.port), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    auto r = stub->Attestation(&ctx, ::agent::AttestationRequest{});
    ::agent::AttestationResponse msg;
    CHECK_FALSE(r->Read(&msg));
    CHECK_FALSE(r->Finish().ok());
  }
  auto logs = read_file(agent.dir.path() / "agent.stdout") + read_file(agent.dir.path() / "agent.stderr");
  CHECK(logs.find("does not offer cmw_attestation") != std::string::npos);
}

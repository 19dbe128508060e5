// The cocos front door of a standalone cove-agent, driven by a grpc++ client generated
// from proto/agent/agent.proto: the full algo -> data -> result journey, attestation, the
// health service, and the failure paths (unsigned, wrong key, wrong hash, wrong state,
// oversized, bad attestation requests). No bus: `cove-agent --manifest ... --grpc-listen`.
#include <doctest/doctest.h>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <vector>

#include "agent.grpc.pb.h"
#include "cove/agent/cocos_auth.hpp"
#include "cove/attest/sim_store.hpp"
#include "cove/bus/connection.hpp"
#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/crypto/hash.hpp"
#include "cove/crypto/keys.hpp"
#include "cove/manifest.hpp"
#include "cove/schemas/envelope_generated.h"
#include "cove/test/nats_server.hpp"
#include "cove/test/process.hpp"
#include "cove/zip.hpp"
#include "fixture.hpp"
#include "grpc_health.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using namespace cove;
using bytes = std::vector<uint8_t>;
using cove::itest::health_status;

using cove::itest::must;
using cove::itest::read_file;
using cove::itest::write_file;

std::string signature(const crypto::private_key& k, cove::agent::cocos::role r) {
  return crypto::base64_encode(must(cove::agent::cocos::sign_role(k, r), "sign"));
}

/// A standalone agent serving the cocos front door on a free port.
class agent_process {
 public:
  agent_process(const fs::path& dir, const fs::path& manifest, std::vector<std::string> extra = {},
                const std::string& name = "agent") {
    port_file_ = dir / (name + ".port");
    std::vector<std::string> argv = {(cove::itest::bin_dir() / "cove-agent").string(),
                                     "--tee",
                                     "sim",
                                     "--manifest",
                                     manifest.string(),
                                     "--grpc-listen",
                                     "127.0.0.1:0",
                                     "--grpc-port-file",
                                     port_file_.string(),
                                     "--work-dir",
                                     (dir / (name + "-work")).string(),
                                     "--log-level",
                                     "debug"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proc_ = must(test::child_process::spawn(argv, {}, dir, name), "spawn cove-agent");
    bool up = test::wait_until(
        [&] {
          REQUIRE(proc_.running());
          return fs::exists(port_file_);
        },
        test::deadline_in(30s));
    REQUIRE_MESSAGE(up, "cove-agent did not start serving; logs in " << dir);
    port_ = std::stoi(read_file(port_file_));
    REQUIRE(port_ > 0);
  }
  ~agent_process() {
    if (proc_.running()) {
      auto status = proc_.terminate(10s);
      CHECK_MESSAGE(status == 0, "cove-agent exit status " << status.value_or(-1));
    }
  }
  [[nodiscard]] std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  test::child_process& proc() { return proc_; }

 private:
  fs::path port_file_;
  test::child_process proc_;
  int port_ = 0;
};

/// Participants, inputs and the manifest of one computation.
struct world {
  test::temp_dir dir{"cove-grpc-agent"};
  crypto::private_key algo_key = must(crypto::private_key::generate(crypto::key_type::ecdsa_p256), "key");
  crypto::private_key data_a_key = must(crypto::private_key::generate(crypto::key_type::ed25519), "key");
  crypto::private_key data_b_key = must(crypto::private_key::generate(crypto::key_type::rsa, 2048), "key");
  crypto::private_key consumer_key = must(crypto::private_key::generate(crypto::key_type::rsa, 2048), "key");
  // A bin algorithm (a shell script): concatenates the datasets into results/out.txt.
  std::string algorithm = "#!/bin/sh\nset -e\ncat datasets/a.csv datasets/b.csv > results/out.txt\n";
  std::string data_a = "id,value\n1,10\n2,20\n";
  std::string data_b;  // > 2 MiB: several 1 MiB messages
  fs::path manifest_file;

  world() {
    data_b.reserve(2621440 + 16);
    for (int i = 0; data_b.size() < 2621440; ++i) data_b += "row," + std::to_string(i) + "\n";
    manifest m;
    m.id = "grpc-journey";
    m.name = "cocos front door";
    m.algorithm.hash = crypto::sha3_256_of(algorithm);
    m.algorithm.user_key = algo_key.public_key().der();
    m.datasets.push_back({"a.csv", crypto::sha3_256_of(data_a), data_a_key.public_key().der()});
    m.datasets.push_back({"b.csv", crypto::sha3_256_of(data_b), data_b_key.public_key().der()});
    m.result_consumers.push_back(consumer_key.public_key().der());
    manifest_file = dir.path() / "manifest.json";
    write_file(manifest_file, to_json(m));
  }
};

grpc::Status upload_algo(::agent::AgentService::Stub& stub, const std::string& algo,
                         const std::vector<std::pair<std::string, std::string>>& md) {
  grpc::ClientContext ctx;
  for (const auto& [k, v] : md) ctx.AddMetadata(k, v);
  ::agent::AlgoResponse resp;
  auto w = stub.Algo(&ctx, &resp);
  // Two messages: the server concatenates them.
  size_t half = algo.size() / 2;
  ::agent::AlgoRequest a;
  a.set_algorithm(algo.substr(0, half));
  w->Write(a);
  a.set_algorithm(algo.substr(half));
  w->Write(a);
  w->WritesDone();
  return w->Finish();
}

grpc::Status upload_data(::agent::AgentService::Stub& stub, const std::string& filename,
                         const std::string& data,
                         const std::vector<std::pair<std::string, std::string>>& md) {
  grpc::ClientContext ctx;
  for (const auto& [k, v] : md) ctx.AddMetadata(k, v);
  ::agent::DataResponse resp;
  auto w = stub.Data(&ctx, &resp);
  constexpr size_t chunk = 1 << 20;  // as cocos-cli
  for (size_t off = 0; off < data.size(); off += chunk) {
    ::agent::DataRequest d;
    d.set_dataset(data.substr(off, chunk));
    d.set_filename(filename);
    if (!w->Write(d)) break;
  }
  w->WritesDone();
  return w->Finish();
}

struct download {
  grpc::Status status;
  std::string payload;
  std::string file_size;  // the header
};

download get_result(::agent::AgentService::Stub& stub,
                    const std::vector<std::pair<std::string, std::string>>& md) {
  grpc::ClientContext ctx;
  for (const auto& [k, v] : md) ctx.AddMetadata(k, v);
  auto r = stub.Result(&ctx, ::agent::ResultRequest{});
  download d;
  ::agent::ResultResponse msg;
  while (r->Read(&msg)) d.payload += msg.file();
  d.status = r->Finish();
  auto h = ctx.GetServerInitialMetadata().find("file-size");
  if (h != ctx.GetServerInitialMetadata().end()) d.file_size.assign(h->second.data(), h->second.size());
  return d;
}

download get_attestation(::agent::AgentService::Stub& stub, const std::string& tee, const std::string& vtpm,
                         int type) {
  grpc::ClientContext ctx;
  ::agent::AttestationRequest req;
  req.set_teenonce(tee);
  req.set_vtpmnonce(vtpm);
  req.set_type(type);
  auto r = stub.Attestation(&ctx, req);
  download d;
  ::agent::AttestationResponse msg;
  while (r->Read(&msg)) d.payload += msg.file();
  d.status = r->Finish();
  auto h = ctx.GetServerInitialMetadata().find("file-size");
  if (h != ctx.GetServerInitialMetadata().end()) d.file_size.assign(h->second.data(), h->second.size());
  return d;
}

using md = std::vector<std::pair<std::string, std::string>>;

}  // namespace

TEST_CASE("cocos front door: algo -> data -> result journey, attestation and the failure paths") {
  world w;
  agent_process agent(w.dir.path(), w.manifest_file);
  auto channel = grpc::CreateChannel(agent.address(), grpc::InsecureChannelCredentials());
  auto stub = ::agent::AgentService::NewStub(channel);
  using cove::agent::cocos::role;
  const md algo_md = {{"signature", signature(w.algo_key, role::algorithm_provider)},
                      {"user-id", "algorithm-provider"}};
  const md consumer_md = {{"signature", signature(w.consumer_key, role::consumer)}, {"user-id", "consumer"}};
  const md a_md = {{"signature", signature(w.data_a_key, role::data_provider)}, {"user-id", "data-provider"}};
  const md b_md = {{"signature", signature(w.data_b_key, role::data_provider)}};

  CHECK(health_status(channel, "agent") == 1);  // SERVING

  // Nothing is ready yet, and datasets are refused before the algorithm.
  auto early = get_result(*stub, consumer_md);
  CHECK(early.status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(early.status.error_message().find("not yet ready") != std::string::npos);
  auto data_first = upload_data(*stub, "a.csv", w.data_a, a_md);
  CHECK(data_first.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(data_first.error_message().find("upload the algorithm first") != std::string::npos);

  // Algorithm: unsigned, signed by the wrong key, wrong bytes -- all refused.
  auto unsigned_algo = upload_algo(*stub, w.algorithm, {{"algo_type", "bin"}});
  CHECK(unsigned_algo.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(unsigned_algo.error_message().find("missing 'signature'") != std::string::npos);
  auto wrong_key =
      upload_algo(*stub, w.algorithm, {{"signature", signature(w.data_a_key, role::algorithm_provider)}});
  CHECK(wrong_key.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  auto garbage_sig = upload_algo(*stub, w.algorithm, {{"signature", "not base64!"}});
  CHECK(garbage_sig.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  auto wrong_hash = upload_algo(*stub, w.algorithm + "# tampered\n", algo_md);
  CHECK(wrong_hash.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(wrong_hash.error_message().find("does not match the manifest") != std::string::npos);
  auto bad_type = upload_algo(*stub, w.algorithm, [&] {
    auto m = algo_md;
    m.emplace_back("algo_type", "docker");
    return m;
  }());
  CHECK(bad_type.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  auto wrong_user =
      upload_algo(*stub, w.algorithm, {{"signature", algo_md[0].second}, {"user-id", "consumer"}});
  CHECK(wrong_user.error_code() == grpc::StatusCode::INVALID_ARGUMENT);

  // The real algorithm, without algo_type metadata (the Go agent would crash): bin.
  auto algo_ok = upload_algo(*stub, w.algorithm, algo_md);
  REQUIRE_MESSAGE(algo_ok.ok(), algo_ok.error_message());
  auto again = upload_algo(*stub, w.algorithm, algo_md);
  CHECK(again.error_code() == grpc::StatusCode::ALREADY_EXISTS);

  // Datasets: unknown content, the other provider's key, then the real ones.
  auto unknown = upload_data(*stub, "c.csv", "not declared\n", a_md);
  CHECK(unknown.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(unknown.error_message().find("not a pending dataset") != std::string::npos);
  auto wrong_hash_data = upload_data(*stub, "a.csv", w.data_a + "x", a_md);
  CHECK(wrong_hash_data.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  auto other_key = upload_data(*stub, "a.csv", w.data_a, b_md);
  CHECK(other_key.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(other_key.error_message().find("other than the one the manifest declares") != std::string::npos);
  auto a_ok = upload_data(*stub, "a.csv", w.data_a, a_md);
  REQUIRE_MESSAGE(a_ok.ok(), a_ok.error_message());
  auto a_again = upload_data(*stub, "a.csv", w.data_a, a_md);
  CHECK(a_again.error_code() == grpc::StatusCode::ALREADY_EXISTS);
  // b.csv under another name: matched by its hash.
  auto b_ok = upload_data(*stub, "renamed.csv", w.data_b, b_md);
  REQUIRE_MESSAGE(b_ok.ok(), b_ok.error_message());

  // The run starts by itself; Result answers FAILED_PRECONDITION until it is done.
  CHECK(get_result(*stub, {}).status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(get_result(*stub, {{"signature", a_md[0].second}}).status.error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
  download result;
  bool done = test::wait_until(
      [&] {
        result = get_result(*stub, consumer_md);
        REQUIRE_MESSAGE(
            (result.status.ok() || result.status.error_code() == grpc::StatusCode::FAILED_PRECONDITION),
            result.status.error_message());
        return result.status.ok();
      },
      test::deadline_in(60s));
  REQUIRE_MESSAGE(done, result.status.error_message());
  CHECK(result.file_size == std::to_string(result.payload.size()));
  bytes zip(result.payload.begin(), result.payload.end());
  auto entries = must(list_zip(zip), "zip");
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].name == "out.txt");
  test::temp_dir out("cove-grpc-result");
  must(extract_zip(zip, out.path()), "extract");
  CHECK(read_file(out.path() / "out.txt") == w.data_a + w.data_b);
  // Complete: later downloads still work; uploads are over.
  CHECK(get_result(*stub, consumer_md).status.ok());
  CHECK(upload_data(*stub, "a.csv", w.data_a, a_md).error_code() == grpc::StatusCode::FAILED_PRECONDITION);

  // Attestation: an EAT (COSE_Sign1, tag 18) whose SNP report carries our report data.
  std::string tee(64, '\0'), vtpm(32, '\0');
  crypto::random_bytes({reinterpret_cast<uint8_t*>(tee.data()), tee.size()});
  crypto::random_bytes({reinterpret_cast<uint8_t*>(vtpm.data()), vtpm.size()});
  auto att = get_attestation(*stub, tee, vtpm, 0);
  REQUIRE_MESSAGE(att.status.ok(), att.status.error_message());
  CHECK(att.file_size == std::to_string(att.payload.size()));
  REQUIRE(att.payload.size() > 1184);
  CHECK(static_cast<uint8_t>(att.payload[0]) == 0xd2);
  // "raw_report" is followed by a 1184-byte byte string: 0x59 0x04 0xa0.
  auto key = att.payload.find(std::string("\x6araw_report\x59\x04\xa0", 14));
  REQUIRE(key != std::string::npos);
  std::string report = att.payload.substr(key + 14, 1184);
  CHECK(report.substr(0x50, 64) == tee);
  CHECK(att.payload.find(vtpm) != std::string::npos);  // eat_nonce
  // A short teeNonce is zero-padded to 64 bytes.
  auto padded = get_attestation(*stub, "abc", "", 0);
  REQUIRE(padded.status.ok());
  auto pk = padded.payload.find(std::string("\x6araw_report\x59\x04\xa0", 14));
  REQUIRE(pk != std::string::npos);
  CHECK(padded.payload.substr(pk + 14 + 0x50, 64) == std::string("abc") + std::string(61, '\0'));

  auto too_long = get_attestation(*stub, std::string(65, 'x'), "", 0);
  CHECK(too_long.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(too_long.status.error_message().find("expect less or equal to 64 bytes") != std::string::npos);
  CHECK(get_attestation(*stub, "", std::string(33, 'x'), 0).status.error_code() ==
        grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(get_attestation(*stub, "", "", 5).status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(get_attestation(*stub, "", "", 4).status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);

  {
    grpc::ClientContext ctx;
    auto r = stub->IMAMeasurements(&ctx, ::agent::IMAMeasurementsRequest{});
    ::agent::IMAMeasurementsResponse msg;
    CHECK_FALSE(r->Read(&msg));
    auto s = r->Finish();
    CHECK(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK(s.error_message().find("IMA") != std::string::npos);
  }
  {
    grpc::ClientContext ctx;
    ::agent::AttestationTokenResponse resp;
    CHECK(stub->AzureAttestationToken(&ctx, ::agent::AttestationTokenRequest{}, &resp).error_code() ==
          grpc::StatusCode::UNIMPLEMENTED);
  }
}

TEST_CASE("cocos front door: oversized uploads and a failing algorithm") {
  world w;
  w.algorithm = "#!/bin/sh\necho broken >&2\nexit 3\n";
  manifest m = must(parse_manifest_json(read_file(w.manifest_file)), "manifest");
  m.algorithm.hash = crypto::sha3_256_of(w.algorithm);
  m.datasets.clear();
  write_file(w.manifest_file, to_json(m));
  agent_process agent(w.dir.path(), w.manifest_file, {"--max-upload", "64"});
  auto stub = ::agent::AgentService::NewStub(
      grpc::CreateChannel(agent.address(), grpc::InsecureChannelCredentials()));
  using cove::agent::cocos::role;
  const md algo_md = {{"signature", signature(w.algo_key, role::algorithm_provider)}, {"algo_type", "bin"}};
  auto big = upload_algo(*stub, std::string(100, 'x'), algo_md);
  CHECK(big.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(big.error_message().find("exceeds the limit of 64 bytes") != std::string::npos);
  REQUIRE(upload_algo(*stub, w.algorithm, algo_md).ok());
  // No datasets: it runs at once and fails; Result reports the failure.
  grpc::Status last;
  bool failed = test::wait_until(
      [&] {
        last = get_result(*stub, {{"signature", signature(w.consumer_key, role::consumer)}}).status;
        return last.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
               last.error_message().find("exit status 3") != std::string::npos;
      },
      test::deadline_in(30s));
  CHECK_MESSAGE(failed, last.error_message());
}

TEST_CASE("cove-agent refuses a bad front door configuration clearly") {
  test::temp_dir dir("cove-grpc-agent-cfg");
  auto run = [&](std::vector<std::string> extra, const std::string& name) {
    std::vector<std::string> argv = {(cove::itest::bin_dir() / "cove-agent").string(), "--grpc-listen",
                                     "127.0.0.1:0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto p = must(test::child_process::spawn(argv, {}, dir.path(), name), "spawn");
    auto status = p.wait_for_exit(test::deadline_in(30s));
    REQUIRE(status.has_value());
    return read_file(dir.path() / (name + ".stderr")) + read_file(dir.path() / (name + ".stdout"));
  };
  CHECK(run({"--grpc-tls", "atls", "--cert", "x.pem"}, "atls").find("both --cert and --key") !=
        std::string::npos);
  CHECK(run({"--grpc-tls", "tls"}, "nocert").find("needs --cert and --key") != std::string::npos);
  write_file(dir.path() / "bad.json", "{\"id\": 3}");
  CHECK(run({"--manifest", (dir.path() / "bad.json").string()}, "badmanifest").find("--manifest") !=
        std::string::npos);
}

TEST_CASE("cocos front door beside the bus: one computation, both doors see the same state") {
  world w;
  auto nats = must(test::nats_server::start(), "nats-server");
  auto root = must(attest::generate_sim_root(), "sim root");
  auto chip = must(attest::issue_sim_vcek(root), "sim chip");
  auto sim_dir = w.dir.path() / "sim";
  must(attest::save_sim_identity(chip, root, sim_dir), "save sim");
  agent_process agent(w.dir.path(), w.manifest_file,
                      {"--nats", nats.url(), "--cvm-id", "both-doors", "--sim-dir", sim_dir.string()});
  auto bus = must(bus::connection::connect({.url = nats.url(), .name = "itest"}), "connect");
  auto status = [&] {
    flatbuffers::FlatBufferBuilder b(64);
    auto req = v1::CreateStatusRequestDirect(b, "both-doors");
    auto subject = *bus::cvm_subject("both-doors", "status");
    auto r =
        must(bus::request_typed<v1::ComputationStatus>(*bus, subject, bus::finish(b, req, {}, "itest"), 5s),
             "status");
    std::vector<std::string> pending;
    if (r.body->pending() != nullptr)
      for (const auto* p : *r.body->pending()) pending.push_back(p->str());
    return std::pair{r.body->state(), pending};
  };
  // --manifest loaded it; the bus reports it.
  auto [s0, p0] = status();
  CHECK(s0 == v1::AgentState::ReceivingAlgorithm);
  CHECK(p0 == std::vector<std::string>{"algorithm", "a.csv", "b.csv"});

  auto stub = ::agent::AgentService::NewStub(
      grpc::CreateChannel(agent.address(), grpc::InsecureChannelCredentials()));
  using cove::agent::cocos::role;
  REQUIRE(
      upload_algo(*stub, w.algorithm, {{"signature", signature(w.algo_key, role::algorithm_provider)}}).ok());
  REQUIRE(upload_data(*stub, "a.csv", w.data_a, {{"signature", signature(w.data_a_key, role::data_provider)}})
              .ok());
  // The gRPC uploads moved the one state machine the bus sees.
  auto [s1, p1] = status();
  CHECK(s1 == v1::AgentState::ReceivingData);
  CHECK(p1 == std::vector<std::string>{"b.csv"});

  // A bus stop wipes what came in over gRPC; gRPC then has no manifest.
  flatbuffers::FlatBufferBuilder b(64);
  auto stop = v1::CreateComputationStopDirect(b, "both-doors", "grpc-journey");
  auto subject = *bus::cvm_subject("both-doors", "stop");
  must(bus::request_typed<v1::ComputationStatus>(*bus, subject, bus::finish(b, stop, {}, "itest"), 5s),
       "stop");
  auto late =
      upload_data(*stub, "b.csv", w.data_b, {{"signature", signature(w.data_b_key, role::data_provider)}});
  CHECK(late.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(late.error_message().find("no computation manifest loaded") != std::string::npos);
}

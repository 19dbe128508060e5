// coved starts an agent with its cocos front door (`cove cvm create --cocos-grpc`,
// CvmCreate.cocos_grpc): the CVM info names the address, the computation is started
// on the bus, and a grpc++ client from proto/agent/agent.proto (cocos's
// agent.AgentService) uploads, waits and downloads the result through it.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <future>

#include "agent.grpc.pb.h"
#include "cove/agent/cocos_auth.hpp"
#include "cove/crypto/encoding.hpp"
#include "cove/zip.hpp"
#include "fixture.hpp"
#include "grpc_health.hpp"

using namespace cove;
using namespace cove::itest;
using cove::agent::cocos::role;

namespace {

std::string signature(const crypto::private_key& k, role r) {
  return crypto::base64_encode(must(cove::agent::cocos::sign_role(k, r), "sign"));
}

expected<bus::reply<v1::CvmInfo>> create_with_door(cluster& c) {
  flatbuffers::FlatBufferBuilder b(64);
  auto req = v1::CreateCvmCreate(b, v1::Backend::process, v1::Tee::sim, 0, 0, /*cocos_grpc=*/true);
  return bus::request_typed<v1::CvmInfo>(c.bus(), bus::subjects::manager_create,
                                         bus::finish(b, req, {}, "itest"), 30s);
}

}  // namespace

TEST_CASE(
    "cocos front door of a managed CVM: create --cocos-grpc, start on the bus, upload and fetch over gRPC") {
  cluster c({"--cocos-grpc-tls", "none"});
  auto created = must(create_with_door(c), "create");
  const std::string cvm = created.body->id()->str();
  REQUIRE(created.body->cocos_grpc_address() != nullptr);
  const std::string address = created.body->cocos_grpc_address()->str();
  REQUIRE(address.starts_with("127.0.0.1:"));
  // The info on the bus says the same.
  auto info = must(c.cvm_info(cvm), "info");
  CHECK(info.body->cocos_grpc_address()->str() == address);
  // A CVM created without it has none.
  auto plain = must(c.cvm_info(c.create_cvm()), "info");
  CHECK((plain.body->cocos_grpc_address() == nullptr || plain.body->cocos_grpc_address()->size() == 0));

  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  REQUIRE_MESSAGE(
      test::wait_until([&] { return health_status(channel, "agent") == 1; }, test::deadline_in(20s)),
      "the agent's front door never answered on " << address << "; logs in " << c.dir());

  auto owner = c.make_participant("owner");
  auto consumer = c.make_participant("consumer");
  const std::string algo_text = "#!/bin/sh\ncat datasets/* | wc -l > results/lines\n";
  auto algo = c.make_file("algo.sh", algo_text, true);
  const std::string rows = "1\n2\n3\n4\n";
  auto data = c.make_file("rows.csv", rows);
  auto m = make_manifest("door-1", algo, algo_type::bin, owner, {{data, &owner}}, {&consumer});
  CHECK(must(c.start_computation(cvm, m), "start") == "ReceivingAlgorithm");

  auto stub = ::agent::AgentService::NewStub(channel);
  {  // An unsigned upload is refused and changes nothing.
    grpc::ClientContext ctx;
    ::agent::AlgoResponse resp;
    auto w = stub->Algo(&ctx, &resp);
    ::agent::AlgoRequest a;
    a.set_algorithm(algo_text);
    w->Write(a);
    w->WritesDone();
    CHECK(w->Finish().error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("signature", signature(owner.key, role::algorithm_provider));
    ::agent::AlgoResponse resp;
    auto w = stub->Algo(&ctx, &resp);
    ::agent::AlgoRequest a;
    a.set_algorithm(algo_text);
    w->Write(a);
    w->WritesDone();
    auto s = w->Finish();
    REQUIRE_MESSAGE(s.ok(), s.error_message());
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("signature", signature(owner.key, role::data_provider));
    ::agent::DataResponse resp;
    auto w = stub->Data(&ctx, &resp);
    ::agent::DataRequest d;
    d.set_dataset(rows);
    d.set_filename("rows.csv");
    w->Write(d);
    w->WritesDone();
    auto s = w->Finish();
    REQUIRE_MESSAGE(s.ok(), s.error_message());
  }
  // The bus sees the run the gRPC uploads started.
  auto st = c.wait_for_state(cvm, "ConsumingResults", 60s);
  REQUIRE_MESSAGE(st.state == "ConsumingResults", st.message);

  grpc::ClientContext ctx;
  ctx.AddMetadata("signature", signature(consumer.key, role::consumer));
  auto reader = stub->Result(&ctx, ::agent::ResultRequest{});
  std::string zip;
  ::agent::ResultResponse msg;
  while (reader->Read(&msg)) zip += msg.file();
  auto s = reader->Finish();
  REQUIRE_MESSAGE(s.ok(), s.error_message());
  auto zip_file = c.dir() / "result.zip";
  write_file(zip_file, zip);
  auto out = c.dir() / "result";
  must(extract_zip(zip_file, out), "unzip");
  CHECK(read_file(out / "lines") == "4\n");
}

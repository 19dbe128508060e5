#include "cove/gateway/manager_gateway.hpp"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <fstream>

#include "cove/bus/envelope.hpp"
#include "cove/bus/subjects.hpp"
#include "cove/gateway/mapping.hpp"
#include "manager.grpc.pb.h"

namespace cove::gateway {

namespace {

constexpr std::string_view sender = "coved.manager-grpc";

expected<std::string> read_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error(errc::invalid_request, fmt::format("{}: cannot read {}", what, path));
  return std::string{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

class service final : public ::manager::ManagerService::Service {
 public:
  explicit service(manager_gateway_config cfg) : cfg_(std::move(cfg)) {}

  grpc::Status CreateVm(grpc::ServerContext*, const ::manager::CreateReq* req,
                        ::manager::CreateRes* res) override {
    auto ttl = parse_go_duration(req->ttl());
    if (!ttl) return to_grpc_status(ttl.error());
    if (!req->agent_cvm_server_url().empty())
      spdlog::info(
          "manager-grpc: CreateVm: agent_cvm_server_url '{}' ignored; coved itself talks to "
          "the orchestrator (--cvms-url)",
          req->agent_cvm_server_url());
    flatbuffers::FlatBufferBuilder b(64);
    // cocos's manager forwards the agent's gRPC port: ask for the cocos front door.
    auto create = v1::CreateCvmCreate(b, cfg_.backend, cfg_.tee, *ttl, 0, /*cocos_grpc=*/true);
    auto r = bus::request_typed<v1::CvmInfo>(*cfg_.bus, bus::subjects::manager_create,
                                             bus::finish(b, create, {}, sender), cfg_.create_timeout);
    if (!r) return fail("CreateVm", r.error());
    if (r->body->id() == nullptr) return {grpc::StatusCode::INTERNAL, "the manager sent no CVM id"};
    res->set_cvm_id(r->body->id()->str());
    // Where the agent's agent.AgentService is reachable on this host (loopback).
    std::string address = r->body->cocos_grpc_address() ? r->body->cocos_grpc_address()->str() : "";
    res->set_forwarded_port(address.substr(address.rfind(':') + 1));
    spdlog::info("manager-grpc: CreateVm -> {}", res->cvm_id());
    return grpc::Status::OK;
  }

  grpc::Status RemoveVm(grpc::ServerContext*, const ::manager::RemoveReq* req,
                        google::protobuf::Empty*) override {
    auto r = info(bus::subjects::manager_remove, req->cvm_id(), cfg_.create_timeout);
    if (!r) return fail("RemoveVm", r.error());
    spdlog::info("manager-grpc: RemoveVm {}", req->cvm_id());
    return grpc::Status::OK;
  }

  grpc::Status CVMInfo(grpc::ServerContext*, const ::manager::CVMInfoReq* req,
                       ::manager::CVMInfoRes* res) override {
    auto r = info(bus::subjects::manager_info, req->id(), cfg_.request_timeout);
    if (!r) return fail("CVMInfo", r.error());
    const v1::CvmInfo* i = r->body;
    res->set_id(req->id());
    res->set_cpu_num(1);
    res->set_cpu_type(fmt::format("{}/{}", v1::EnumNameBackend(i->backend()), v1::EnumNameTee(i->tee())));
    res->set_eos_version("cove 0.1");
    res->set_ovmf_version("");
    res->set_kernel_cmd("");
    return grpc::Status::OK;
  }

  grpc::Status AttestationPolicy(grpc::ServerContext*, const ::manager::AttestationPolicyReq* req,
                                 ::manager::AttestationPolicyRes* res) override {
    auto r = info(bus::subjects::manager_info, req->id(), cfg_.request_timeout);
    if (!r) return fail("AttestationPolicy", r.error());
    res->set_id(req->id());
    // cove's policy JSON (attest/README.md), like cocos's legacy JSON policy; not a CoRIM.
    res->set_info(r->body->policy_json() ? r->body->policy_json()->str() : std::string());
    return grpc::Status::OK;
  }

 private:
  expected<bus::reply<v1::CvmInfo>> info(std::string_view subject, const std::string& id,
                                         std::chrono::milliseconds timeout) {
    if (id.empty()) return make_error(errc::invalid_request, "a CVM id is required");
    if (!bus::valid_id(id))
      return make_error(errc::not_found, fmt::format("no CVM '{}' (cove ids match [a-z0-9-]{{1,64}})", id));
    flatbuffers::FlatBufferBuilder b(64);
    auto ref = v1::CreateCvmRef(b, b.CreateString(id));
    return bus::request_typed<v1::CvmInfo>(*cfg_.bus, subject, bus::finish(b, ref, {}, sender), timeout);
  }

  static grpc::Status fail(const char* rpc, const error& e) {
    spdlog::info("manager-grpc: {}: {}", rpc, e.to_string());
    return to_grpc_status(e);
  }

  manager_gateway_config cfg_;
};

}  // namespace

expected<void> validate(const manager_gateway_config& cfg) {
  if (cfg.listen.empty() || cfg.listen.rfind(':') == std::string::npos)
    return make_error(errc::invalid_request, "--manager-grpc-listen: expected HOST:PORT");
  if (cfg.cert_file.empty() != cfg.key_file.empty())
    return make_error(errc::invalid_request, "--manager-grpc-cert and --manager-grpc-key go together");
  if (!cfg.bus) return make_error(errc::invalid_request, "manager gateway: no bus connection");
  return ok();
}

struct manager_gateway::impl {
  std::unique_ptr<service> svc;
  std::unique_ptr<grpc::Server> server;
};

manager_gateway::manager_gateway(std::unique_ptr<impl> p, std::string address) noexcept
    : impl_(std::move(p)), address_(std::move(address)) {}

manager_gateway::~manager_gateway() {
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  impl_->server->Wait();
}

expected<std::unique_ptr<manager_gateway>> manager_gateway::start(manager_gateway_config cfg) {
  if (auto v = validate(cfg); !v) return v.error();
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!cfg.cert_file.empty()) {
    auto cert = read_file(cfg.cert_file, "--manager-grpc-cert");
    if (!cert) return cert.error();
    auto key = read_file(cfg.key_file, "--manager-grpc-key");
    if (!key) return key.error();
    grpc::SslServerCredentialsOptions o;
    o.pem_key_cert_pairs.push_back({*key, *cert});
    creds = grpc::SslServerCredentials(o);
  }
  auto p = std::make_unique<impl>();
  std::string listen = cfg.listen;
  p->svc = std::make_unique<service>(std::move(cfg));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, creds, &port);
  builder.RegisterService(p->svc.get());
  p->server = builder.BuildAndStart();
  if (!p->server || port == 0)
    return make_error(errc::unavailable, fmt::format("--manager-grpc-listen: cannot listen on {}", listen));
  std::string address = listen.substr(0, listen.rfind(':')) + ":" + std::to_string(port);
  spdlog::info("manager-grpc: manager.ManagerService on {}", address);
  return std::unique_ptr<manager_gateway>(new manager_gateway(std::move(p), std::move(address)));
}

}  // namespace cove::gateway

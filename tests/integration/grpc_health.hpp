#pragma once
// grpc.health.v1.Health/Check from a test, with hand-encoded messages (no health stubs).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

namespace cove::itest {

/// The serving status of `service` (1 = SERVING, 2 = NOT_SERVING, 0 = UNKNOWN);
/// a failed call is minus its gRPC status code, an unreadable answer -100.
inline int health_status(const std::shared_ptr<grpc::Channel>& ch, const std::string& service,
                         std::chrono::seconds deadline = std::chrono::seconds(5)) {
  grpc::GenericStub stub(ch);
  std::string req = std::string("\x0a", 1) + static_cast<char>(service.size()) + service;
  grpc::Slice slice(req);
  grpc::ByteBuffer in(&slice, 1), out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &in, &out,
                 [&](grpc::Status s) { done.set_value(std::move(s)); });
  auto s = done.get_future().get();
  if (!s.ok()) return -static_cast<int>(s.error_code());
  std::vector<grpc::Slice> slices;
  (void)out.Dump(&slices);
  std::string resp;
  for (const auto& sl : slices) resp.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  if (resp.size() == 2 && resp[0] == 0x08) return resp[1];
  return resp.empty() ? 0 : -100;  // status UNKNOWN is encoded as an empty message
}

}  // namespace cove::itest

#pragma once
// The cvms.Service/Process call, by hand. grpc_cpp_plugin cannot generate C++
// for cocos's cvms.proto: its service is named `Service`, and the plugin's
// server class `cvms::Service::Service` is not valid C++ (a member may not
// have its class's name). Only the messages are generated (cvms.pb.h); these
// few lines do what the generated stub would, with the same method path, so
// the wire is exactly cocos's.
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/impl/rpc_service_method.h>
#include <grpcpp/impl/service_type.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/method_handler.h>
#include <grpcpp/support/sync_stream.h>

#include <memory>

#include "cvms.pb.h"

namespace cove::gateway {

/// "/cvms.Service/Process": bidirectional, ClientStreamMessage up, ServerStreamMessage down.
inline constexpr const char* cvms_process_method = "/cvms.Service/Process";

using cvms_client_stream = grpc::ClientReaderWriter<cvms::ClientStreamMessage, cvms::ServerStreamMessage>;
using cvms_server_stream = grpc::ServerReaderWriter<cvms::ServerStreamMessage, cvms::ClientStreamMessage>;

/// Opens a Process stream on `channel` (blocking, like the generated Stub::Process).
inline std::unique_ptr<cvms_client_stream> open_cvms_process(grpc::ChannelInterface* channel,
                                                             grpc::ClientContext* ctx) {
  grpc::internal::RpcMethod method(cvms_process_method, grpc::internal::RpcMethod::BIDI_STREAMING);
  return std::unique_ptr<cvms_client_stream>(
      grpc::internal::ClientReaderWriterFactory<cvms::ClientStreamMessage, cvms::ServerStreamMessage>::Create(
          channel, method, ctx));
}

/// Server side (for CVMS servers, e.g. the tests'): override Process, register with a ServerBuilder.
class cvms_service : public grpc::Service {
 public:
  cvms_service() {
    AddMethod(new grpc::internal::RpcServiceMethod(
        cvms_process_method, grpc::internal::RpcMethod::BIDI_STREAMING,
        new grpc::internal::BidiStreamingHandler<cvms_service, cvms::ClientStreamMessage,
                                                 cvms::ServerStreamMessage>(
            [](cvms_service* self, grpc::ServerContext* ctx, cvms_server_stream* stream) {
              return self->Process(ctx, stream);
            },
            this)));
  }
  virtual grpc::Status Process(grpc::ServerContext*, cvms_server_stream*) {
    return {grpc::StatusCode::UNIMPLEMENTED, "Process"};
  }
};

}  // namespace cove::gateway

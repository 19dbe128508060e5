// Fuzzes what a cvms server (untrusted: anything on the network path to it)
// sends coved: bytes -> ServerStreamMessage; run request chunks through the
// assembler; every complete ComputationRunReq through manifest_from_run_request.
// Also parse_go_duration (manager.CreateReq.ttl) on the raw bytes.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cove/gateway/mapping.hpp"

using namespace cove::gateway;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  (void)parse_go_duration(bytes);
  cvms::ServerStreamMessage m;
  if (!m.ParseFromString(bytes)) return 0;
  if (m.has_runreq()) {
    (void)manifest_from_run_request(m.runreq());
  } else if (m.has_runreqchunks()) {
    run_request_assembler a;
    auto chunk = m.runreqchunks();
    // Feed the chunk's data as the whole request and as the first half + last.
    cvms::RunReqChunks first = chunk;
    first.set_is_last(false);
    first.set_data(chunk.data().substr(0, chunk.data().size() / 2));
    (void)a.add(first);
    cvms::RunReqChunks last = chunk;
    last.set_is_last(true);
    last.set_data(chunk.data().substr(chunk.data().size() / 2));
    if (auto r = a.add(last); r && r->request) (void)manifest_from_run_request(*r->request);
    if (a.pending() != 0) std::abort();
  }
  return 0;
}

// Fuzz target: decode_heartbeat on arbitrary bytes (what any agent, or anyone on an open
// bus, can publish on cove.v1.cvm.<id>.heartbeat), and the CvmStats reply body.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "cove/bus/envelope.hpp"
#include "cove/monitor/health.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> buf(data, data + size);  // the bus hands actors aligned copies
  auto hb = cove::monitor::decode_heartbeat("cove.v1.cvm.cvm-0123456789.heartbeat", buf);
  if (hb) {
    cove::monitor::health_tracker h({});
    (void)h.on_heartbeat(*hb, cove::monitor::steady_clock::now());
  }
  if (auto s = cove::bus::body_as<cove::v1::CvmStats>(buf)) {
    const auto& x = **s;
    volatile size_t sink = 0;
    for (const auto* str : {x.cvm_id(), x.agent_state(), x.source(), x.run_state(), x.detail()})
      if (str) sink = sink + str->size();
    sink = sink + x.heartbeats() + x.cpu_time_ns() + x.memory_bytes() + x.processes();
  }
  return 0;
}

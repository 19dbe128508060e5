// Fuzz target: parse_proc_stat on arbitrary bytes. /proc/<pid>/stat carries the command
// name an algorithm chose for itself, so the monitor parses attacker-shaped text.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cove/monitor/stats_source.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto st = cove::monitor::parse_proc_stat(std::string_view(reinterpret_cast<const char*>(data), size));
  if (st) (void)cove::monitor::proc_state_name(st->state);
  return 0;
}

#pragma once
// cove logs through spdlog (CAF's own logging is compiled out in Debian's build).
#include <spdlog/spdlog.h>

#include <string_view>

namespace cove::log {

/// Sets up the process-wide logger writing to stderr as "<component> <level> <text>".
/// `level` is one of trace, debug, info, warn, error, off.
void init(std::string_view component, std::string_view level = "info");

}  // namespace cove::log

#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cove::bus {

/// A received message, copied out of the natsMsg (so `data` is heap-aligned,
/// safe for FlatBuffers).
struct message {
  std::string subject;
  std::string reply;
  std::vector<uint8_t> data;
  /// True for the server's "503 no responders" status message, which only
  /// reaches reply inboxes (see natsMsg_IsNoResponders).
  bool no_responders = false;
};

}  // namespace cove::bus

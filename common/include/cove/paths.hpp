#pragma once
// Default locations shared by coved and the CLI.
#include <filesystem>
#include <string>

namespace cove {

/// $COVE_STATE_DIR, else /var/lib/cove for root, else $XDG_STATE_HOME/cove
/// (default ~/.local/state/cove).
std::filesystem::path default_state_dir();

/// The bus URL a client should use: $COVE_NATS_URL, else the URL an embedded
/// coved wrote to <state_dir>/nats.url, else nats://127.0.0.1:4222.
std::string default_nats_url(const std::filesystem::path& state_dir = default_state_dir());

}  // namespace cove

#include "cove/paths.hpp"

#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace cove {

std::filesystem::path default_state_dir() {
  if (const char* d = std::getenv("COVE_STATE_DIR"); d != nullptr && *d != '\0') return d;
  if (geteuid() == 0) return "/var/lib/cove";
  if (const char* x = std::getenv("XDG_STATE_HOME"); x != nullptr && *x != '\0')
    return std::filesystem::path(x) / "cove";
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0')
    return std::filesystem::path(h) / ".local" / "state" / "cove";
  return "/tmp/cove";
}

std::string default_nats_url(const std::filesystem::path& state_dir) {
  if (const char* u = std::getenv("COVE_NATS_URL"); u != nullptr && *u != '\0') return u;
  std::ifstream f(state_dir / "nats.url");
  std::string url;
  if (f && std::getline(f, url) && !url.empty()) return url;
  return "nats://127.0.0.1:4222";
}

}  // namespace cove

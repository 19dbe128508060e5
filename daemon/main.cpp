#include <iostream>

#include "cove/daemon/daemon.hpp"

int main(int argc, char** argv) {
  auto cfg = cove::daemon::load_config(argc, argv);
  if (!cfg) {
    if (cfg.error().code == cove::errc::none) return 0;  // --help
    std::cerr << "coved: " << cfg.error().message << '\n';
    return 2;
  }
  return cove::daemon::run(*cfg);
}

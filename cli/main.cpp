#include "cove/cli/cli.hpp"

int main(int argc, char** argv) {
  return cove::cli::run(argc, argv);
}

#pragma once
// The `cove` command line. main() only calls run().
namespace cove::cli {

/// Parses argv, runs one command, returns the process exit code:
/// 0 success, 1 the operation failed (message on stderr), 2 usage error.
int run(int argc, char** argv);

}  // namespace cove::cli

#pragma once
// Reads a file and seals it chunk by chunk on its own thread, ahead of the requests
// for it, so that reading and sealing a result overlap the agent's replies. At most
// `depth` sealed chunks wait (memory stays flat); buffers are recycled.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "cove/crypto/seal.hpp"
#include "cove/expected.hpp"

namespace cove::agent {

class sealed_reader {
 public:
  sealed_reader() = default;
  sealed_reader(const sealed_reader&) = delete;
  sealed_reader& operator=(const sealed_reader&) = delete;
  /// Stops the thread and closes the file.
  ~sealed_reader();

  /// Opens `path` and starts sealing it with `sealer` in `chunks` chunks of
  /// `chunk_size` plaintext bytes (the last one shorter, or empty for an empty file;
  /// it carries the final tag).
  expected<void> open(const std::filesystem::path& path, crypto::seal_stream sealer, uint64_t chunks,
                      size_t chunk_size, size_t depth = 4);

  /// The next sealed chunk, in order; waits until it is ready. The first read or
  /// seal error, errc::internal if the file is shorter than announced,
  /// errc::wrong_state after the last chunk.
  expected<std::vector<uint8_t>> next();

  /// Returns a buffer from next() for reuse.
  void recycle(std::vector<uint8_t> buf);

 private:
  void run(crypto::seal_stream sealer, uint64_t chunks, size_t chunk_size);
  void stop();

  int fd_ = -1;
  size_t depth_ = 4;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<uint8_t>> ready_;
  std::vector<std::vector<uint8_t>> free_;
  bool closing_ = false;
  bool done_ = false;  // the last chunk is sealed
  std::optional<error> failure_;
  std::thread thread_;
};

}  // namespace cove::agent

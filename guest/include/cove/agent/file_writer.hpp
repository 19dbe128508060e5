#pragma once
// Writes a stream of buffers to a file on its own thread, and optionally hashes them
// there (SHA3-256), so that hashing and storing an upload overlap decrypting the next
// chunk. At most `depth` buffers wait; the producer blocks beyond that (memory stays
// flat). Buffers are recycled.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "cove/crypto/hash.hpp"
#include "cove/expected.hpp"

namespace cove::agent {

class file_writer {
 public:
  file_writer() = default;
  file_writer(const file_writer&) = delete;
  file_writer& operator=(const file_writer&) = delete;
  /// Stops the thread and closes the file (the file is left as it is).
  ~file_writer();

  /// Creates (truncates) `path` with mode 0600 and starts the writer thread. With
  /// `sha3`, the thread also hashes every byte before it writes it (see digest()).
  expected<void> open(const std::filesystem::path& path, size_t depth = 4, bool sha3 = false);

  /// A buffer to fill (recycled from earlier writes when possible). Its size and
  /// contents are whatever the previous write left: resize or assign it.
  std::vector<uint8_t> take_buffer();

  /// Queues `buf` for writing; blocks while `depth` buffers are waiting.
  /// Returns the first write error, if one happened already.
  expected<void> write(std::vector<uint8_t> buf);

  /// Waits for every queued buffer and closes the file.
  expected<void> finish();

  /// After a successful finish() of a writer opened with `sha3`: the SHA3-256 of
  /// every byte written. Empty (std::nullopt) otherwise.
  std::optional<crypto::sha3_digest> digest() const { return digest_; }

 private:
  void run();
  void stop();

  int fd_ = -1;
  size_t depth_ = 4;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<uint8_t>> queue_;
  std::vector<std::vector<uint8_t>> free_;
  bool closing_ = false;
  bool busy_ = false;
  std::optional<error> failure_;
  std::optional<crypto::sha3_256> hasher_;  // touched by the writer thread only, until finish()
  std::optional<crypto::sha3_digest> digest_;
  std::thread thread_;
};

}  // namespace cove::agent

#include "cove/agent/sealed_reader.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace cove::agent {

sealed_reader::~sealed_reader() {
  stop();
}

expected<void> sealed_reader::open(const std::filesystem::path& path, crypto::seal_stream sealer,
                                   uint64_t chunks, size_t chunk_size, size_t depth) {
  stop();
  if (chunk_size == 0 || chunks == 0)
    return make_error(errc::invalid_request, "sealed_reader: nothing to read");
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0)
    return make_error(errc::internal, std::string("cannot open the file: ") + std::strerror(errno));
  depth_ = depth == 0 ? 1 : depth;
  closing_ = false;
  done_ = false;
  failure_.reset();
  ready_.clear();
  thread_ = std::thread(
      [this, s = std::move(sealer), chunks, chunk_size]() mutable { run(std::move(s), chunks, chunk_size); });
  return ok();
}

expected<std::vector<uint8_t>> sealed_reader::next() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !ready_.empty() || failure_ || done_; });
  if (ready_.empty())
    return failure_ ? *failure_ : make_error(errc::wrong_state, "sealed_reader: every chunk was read");
  auto b = std::move(ready_.front());
  ready_.pop_front();
  cv_.notify_all();
  return b;
}

void sealed_reader::recycle(std::vector<uint8_t> buf) {
  std::lock_guard lock(mu_);
  if (free_.size() < depth_ + 1) free_.push_back(std::move(buf));
}

void sealed_reader::run(crypto::seal_stream sealer, uint64_t chunks, size_t chunk_size) {
  std::vector<uint8_t> plain(chunk_size);
  auto fail = [&](error e) {
    std::lock_guard lock(mu_);
    if (!failure_) failure_ = std::move(e);
    cv_.notify_all();
  };
  for (uint64_t seq = 0; seq < chunks; ++seq) {
    size_t got = 0;
    while (got < chunk_size) {
      ssize_t n = ::read(fd_, plain.data() + got, chunk_size - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail(make_error(errc::internal, std::string("read failed: ") + std::strerror(errno)));
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    bool last = seq + 1 == chunks;
    if (got < chunk_size && !last)
      return fail(make_error(errc::internal, "the file is shorter than announced"));
    std::vector<uint8_t> out;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return closing_ || ready_.size() < depth_; });
      if (closing_) return;
      if (!free_.empty()) {
        out = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (auto r = sealer.push(std::span(plain).first(got), last, out); !r) return fail(r.error());
    std::lock_guard lock(mu_);
    ready_.push_back(std::move(out));
    if (last) done_ = true;
    cv_.notify_all();
  }
}

void sealed_reader::stop() {
  {
    std::lock_guard lock(mu_);
    closing_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

}  // namespace cove::agent

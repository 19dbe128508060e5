#include "cove/agent/file_writer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace cove::agent {

file_writer::~file_writer() {
  stop();
}

expected<void> file_writer::open(const std::filesystem::path& path, size_t depth, bool sha3) {
  stop();
  digest_.reset();
  hasher_.reset();
  if (sha3) hasher_.emplace();
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd_ < 0)
    return make_error(errc::internal, std::string("cannot create the upload file: ") + std::strerror(errno));
  depth_ = depth == 0 ? 1 : depth;
  closing_ = false;
  failure_.reset();
  thread_ = std::thread([this] { run(); });
  return ok();
}

std::vector<uint8_t> file_writer::take_buffer() {
  std::lock_guard lock(mu_);
  if (free_.empty()) return {};
  auto b = std::move(free_.back());
  free_.pop_back();
  return b;
}

expected<void> file_writer::write(std::vector<uint8_t> buf) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return failure_ || queue_.size() < depth_; });
  if (failure_) return *failure_;
  queue_.push_back(std::move(buf));
  cv_.notify_all();
  return ok();
}

expected<void> file_writer::finish() {
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return failure_ || (queue_.empty() && !busy_); });
  }
  stop();  // joins the thread: the hasher is ours now
  std::lock_guard lock(mu_);
  if (failure_) return *failure_;
  if (hasher_) {
    digest_ = hasher_->finish();
    hasher_.reset();
  }
  return ok();
}

void file_writer::run() {
  for (;;) {
    std::vector<uint8_t> buf;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return closing_ || !queue_.empty(); });
      if (queue_.empty()) return;  // closing
      buf = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    if (hasher_) hasher_->update(buf);
    size_t off = 0;
    std::optional<error> err;
    while (off < buf.size()) {
      ssize_t n = ::write(fd_, buf.data() + off, buf.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        err =
            make_error(errc::internal, std::string("write failed: ") + std::strerror(n < 0 ? errno : ENOSPC));
        break;
      }
      off += static_cast<size_t>(n);
    }
    std::lock_guard lock(mu_);
    busy_ = false;
    if (err && !failure_) failure_ = std::move(err);
    // Recycled with its old size and contents: the next user overwrites it, and a
    // resize to the same chunk size then neither zero-fills nor reallocates.
    if (free_.size() < depth_ + 1) free_.push_back(std::move(buf));
    cv_.notify_all();
  }
}

void file_writer::stop() {
  {
    std::lock_guard lock(mu_);
    closing_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

}  // namespace cove::agent

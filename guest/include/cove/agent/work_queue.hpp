#pragma once
// A multi-producer, single-consumer queue of closures: the agent's mailbox.
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

namespace cove::agent {

class work_queue {
 public:
  using job = std::function<void()>;

  void post(job j) {
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(j));
    }
    cv_.notify_one();
  }

  /// Runs jobs until stop() is called; between jobs, calls `idle` at most every `tick`.
  template <class Idle>
  void run(std::chrono::milliseconds tick, Idle idle) {
    auto next_idle = std::chrono::steady_clock::now() + tick;
    for (;;) {
      job j;
      {
        std::unique_lock lock(mu_);
        cv_.wait_until(lock, next_idle, [&] { return stopped_ || !jobs_.empty(); });
        if (stopped_) return;
        if (!jobs_.empty()) {
          j = std::move(jobs_.front());
          jobs_.pop_front();
        }
      }
      if (j) j();
      if (std::chrono::steady_clock::now() >= next_idle) {
        idle();
        next_idle = std::chrono::steady_clock::now() + tick;
      }
    }
  }

  void stop() {
    {
      std::lock_guard lock(mu_);
      stopped_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<job> jobs_;
  bool stopped_ = false;
};

}  // namespace cove::agent

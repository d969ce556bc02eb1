// f2d2n/train/detail/bucket_summer.hpp: the second thread of a unit that sums its gradient
// buckets among the replicas while the backward pass goes on (distributed_options::overlap).
#pragma once

#include <f2d2n/comm/primitives.hpp>
#include <f2d2n/transport/concept.hpp>

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <span>
#include <thread>
#include <utility>

namespace f2d2n::detail {

/// Sums the parts of a gradient buffer posted to it over `replicas`, one after another in the
/// order posted, on a thread of its own that sleeps while it waits. After a failed sum the later
/// parts of the step are not sent (the ring is out of step); wait() rethrows that failure.
template <transport Transport, class Scalar>
class bucket_summer {
 public:
  bucket_summer(Transport& t, const group& replicas) : t_(t), replicas_(replicas), thread_([this] { run(); }) {}
  bucket_summer(const bucket_summer&) = delete;
  bucket_summer& operator=(const bucket_summer&) = delete;
  ~bucket_summer() {
    {
      const std::lock_guard lock(m_);
      stop_ = true;
    }
    jobs_cv_.notify_all();
    thread_.join();  // a sum in flight ends by itself: every collective has a deadline
  }

  /// A new step: its parts are sent again.
  void begin_step() {
    const std::lock_guard lock(m_);
    failed_ = false;
  }

  /// Queues `part` to be summed in place as call `c`.
  void post(std::span<Scalar> part, const call_options& c) {
    {
      const std::lock_guard lock(m_);
      jobs_.push_back({part, c});
      ++pending_;
    }
    jobs_cv_.notify_all();
  }

  /// Waits until every posted part is summed; rethrows the first failure of one.
  void wait() {
    std::unique_lock lock(m_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    if (auto e = std::exchange(failure_, nullptr)) std::rethrow_exception(e);
  }

  /// Waits until every posted part is summed and forgets a failure (the way out of a failed step:
  /// only the step's own exception is reported, and nothing writes its buffer afterwards).
  void drain() noexcept {
    std::unique_lock lock(m_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    failure_ = nullptr;
  }

 private:
  struct job {
    std::span<Scalar> part;
    call_options call;
  };

  void run() {
    for (;;) {
      job j;
      bool skip = false;
      {
        std::unique_lock lock(m_);
        jobs_cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        j = jobs_.front();
        jobs_.pop_front();
        skip = failed_;
      }
      std::exception_ptr failure;
      if (!skip) {
        try {
          all_reduce(t_, replicas_, j.part, j.call);
        } catch (...) {
          failure = std::current_exception();
        }
      }
      {
        const std::lock_guard lock(m_);
        if (failure) {
          failed_ = true;
          if (!failure_) failure_ = failure;
        }
        --pending_;
      }
      done_cv_.notify_all();
    }
  }

  Transport& t_;
  const group& replicas_;
  std::mutex m_;
  std::condition_variable jobs_cv_, done_cv_;
  std::deque<job> jobs_;
  std::size_t pending_ = 0;
  bool stop_ = false, failed_ = false;
  std::exception_ptr failure_;
  std::thread thread_;  // last: started when everything it uses exists
};

}  // namespace f2d2n::detail

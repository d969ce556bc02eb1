// f2d2n/transport/detail/tcp/completion.hpp: how an operation answers whoever started it: a
// completion handler with its type erased, and the wait of a blocking call.
#pragma once

#include <f2d2n/transport/detail/tcp/asio.hpp>
#include <f2d2n/transport/detail/tcp/failure.hpp>
#include <f2d2n/wire/frame.hpp>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

namespace f2d2n::detail::tcp_impl {

/// The executor that keeps `ex`'s execution context busy while an operation is pending.
template <class Executor>
auto tracked(const Executor& ex) {
  if constexpr (asio::execution::is_executor<Executor>::value)
    return asio::prefer(ex, asio::execution::outstanding_work.tracked);
  else return asio::make_work_guard(ex);  // Networking TS style executor
}

/// A completion handler with its type erased, so that queued operations of every token type fit
/// one queue; an operation yields a failure (null on success) and `Results`. Calling it hands
/// them to the handler through the handler's associated executor (inline when that is where it
/// runs already) and releases the work it held there.
template <class... Results>
class completion {
 public:
  completion() = default;
  template <class Handler, class Fallback>
  completion(Handler&& h, const Fallback& fallback)
      : p_(std::make_unique<impl<std::decay_t<Handler>, Fallback>>(std::forward<Handler>(h), fallback)) {}

  explicit operator bool() const noexcept { return p_ != nullptr; }

  void operator()(failure f, Results... results) {
    auto p = std::move(p_);
    p->invoke(std::move(f), std::move(results)...);
  }

 private:
  struct base {
    virtual ~base() = default;
    virtual void invoke(failure f, Results... results) = 0;
  };
  template <class Handler, class Fallback>
  struct impl final : base {
    impl(Handler h, const Fallback& fallback)
        : handler(std::move(h)), work(tracked(asio::get_associated_executor(handler, fallback))) {}
    void invoke(failure f, Results... results) override {
      auto run = [h = std::move(handler), f = std::move(f), ... r = std::move(results)]() mutable {
        std::move(h)(std::move(f), std::move(r)...);
      };
      if constexpr (asio::execution::is_executor<decltype(work)>::value) asio::dispatch(work, std::move(run));
      else asio::dispatch(work.get_executor(), std::move(run));
    }
    Handler handler;
    decltype(tracked(asio::get_associated_executor(std::declval<Handler&>(), std::declval<const Fallback&>()))) work;
  };
  std::unique_ptr<base> p_;
};

using send_completion = completion<>;
using receive_completion = completion<wire::frame_header>;

/// Where a blocking call waits for its operation; the operation's own deadline timer answers it.
template <class... Results>
struct sync_wait {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  failure f;
  std::tuple<Results...> results;

  /// The completion handler that answers this wait.
  static auto handler(std::shared_ptr<sync_wait> w) {
    return [w](failure failed, Results... r) {
      {
        const std::lock_guard lock(w->m);
        w->f = std::move(failed);
        w->results = std::tuple<Results...>(std::move(r)...);
        w->done = true;
      }
      w->cv.notify_all();
    };
  }
  /// Waits for the answer (the operation's deadline timer bounds the wait).
  void wait() {
    std::unique_lock lock(m);
    cv.wait(lock, [this] { return done; });
  }
  /// After wait(): rethrows the operation's failure, if any, taking it out (see failure).
  void rethrow_failure() {
    if (f) std::rethrow_exception(std::exchange(f, nullptr));
  }
  /// Waits for the answer; rethrows the operation's failure.
  std::tuple<Results...> get() {
    wait();
    rethrow_failure();
    return std::move(results);
  }
};

}  // namespace f2d2n::detail::tcp_impl

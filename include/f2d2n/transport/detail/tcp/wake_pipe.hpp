// f2d2n/transport/detail/tcp/wake_pipe.hpp: the pipe that shutdown() writes to, so that a caller's
// thread asleep in poll() on the fast path of a blocking call wakes at once.
#pragma once

#include <f2d2n/core/error.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <array>

namespace f2d2n::detail::tcp_impl {

/// A pipe written once by shutdown(); it stays readable afterwards.
class wake_pipe {
 public:
  wake_pipe() {
    if (::pipe(fd_.data()) != 0) throw configuration_error("f2d2n: cannot create a pipe for the transport");
    for (const int f : fd_) (void)::fcntl(f, F_SETFD, FD_CLOEXEC);
    (void)::fcntl(fd_[1], F_SETFL, O_NONBLOCK);
  }
  wake_pipe(const wake_pipe&) = delete;
  wake_pipe& operator=(const wake_pipe&) = delete;
  ~wake_pipe() {
    for (const int f : fd_) (void)::close(f);
  }
  void signal() const noexcept {
    const char b = 1;
    (void)!::write(fd_[1], &b, 1);
  }
  [[nodiscard]] int read_end() const noexcept { return fd_[0]; }

 private:
  std::array<int, 2> fd_{-1, -1};
};

}  // namespace f2d2n::detail::tcp_impl

// f2d2n/transport/detail/tcp/failure.hpp: how an operation's error reaches whoever waits for it:
// the typed exception, made once where the failure arises, held by a std::exception_ptr.
#pragma once

#include <f2d2n/core/error.hpp>

#include <exception>
#include <string>
#include <utility>

namespace f2d2n::detail::tcp_impl {

/// Why an operation failed: null, or the typed error (timeout_error, peer_error, protocol_error,
/// handshake_error, configuration_error) made where the failure arose. The blocking calls rethrow
/// it unchanged; the async API hands it to the completion handler.
///
/// A failure is moved, never copied, from the thread that makes it to the thread that rethrows it,
/// through a lock (a waiting call's mutex, an Asio queue, a promise), and only once the catch block
/// that caught it has ended (a catch block holds a reference too): the thread that rethrows it then
/// holds the last reference. libstdc++ counts an exception's references in code that
/// ThreadSanitizer does not see, so an exception released by another thread than the last one to
/// read it would be reported as a race.
using failure = std::exception_ptr;

/// A failure holding Error(args...).
template <class Error, class... Args>
[[nodiscard]] failure fail(Args&&... args) {
  return std::make_exception_ptr(Error(std::forward<Args>(args)...));
}

/// A call that cannot work (a peer outside the world, a buffer too small): a configuration_error
/// that names the place as a comm_error does.
[[nodiscard]] inline failure misuse(const comm_context& where, const std::string& what) {
  return fail<configuration_error>("f2d2n: " + where.describe() + ": " + what);
}

/// The exception being handled (call it in a catch block) as a failure: f2d2n's own errors
/// unchanged; anything else (an allocation that failed, ...) as a peer_error at `where` that
/// keeps its message.
[[nodiscard]] inline failure current_failure(const comm_context& where) {
  try {
    throw;
  } catch (const error&) {
    return std::current_exception();
  } catch (const std::exception& x) {
    return fail<peer_error>(where, x.what());
  } catch (...) {
    return fail<peer_error>(where, "unknown error");
  }
}

/// The message of a (non-null) failure.
[[nodiscard]] inline std::string message_of(const failure& f) {
  try {
    std::rethrow_exception(f);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace f2d2n::detail::tcp_impl

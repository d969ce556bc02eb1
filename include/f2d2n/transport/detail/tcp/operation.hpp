// f2d2n/transport/detail/tcp/operation.hpp: a send or a receive in progress: the frame's bytes,
// how far they have moved, its deadline timer and who waits for it.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/transport/detail/tcp/asio.hpp>
#include <f2d2n/transport/detail/tcp/completion.hpp>
#include <f2d2n/transport/detail/tcp/failure.hpp>
#include <f2d2n/wire/frame.hpp>

#include <array>
#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <utility>
#include <vector>

namespace f2d2n::detail::tcp_impl {

/// How far one pass over a socket took an operation.
enum class progress { wait, complete, failed };

/// A frame on its way to a peer: written from the caller's memory, or from `owned` once copied.
struct send_op {
  static constexpr auto ready = socket_type::wait_write;  // what its waiter waits for

  wire::header_bytes header{};
  std::span<const std::byte> payload;
  std::vector<std::byte> owned;  // bytes [copied_at, total) of the frame, once copied
  bool copied = false;
  std::size_t copied_at = 0;
  std::size_t sent = 0;   // bytes of header + payload the kernel has taken
  std::size_t total = 0;  // header + payload
  bool may_copy = false;  // a blocking send(): may be copied and answered before it is written
  comm_context where;
  std::unique_ptr<timer_type> timer;
  send_completion done;  // empty once the caller has its answer

  [[nodiscard]] std::array<asio::const_buffer, 2> rest() const {
    if (copied) return {asio::buffer(owned.data() + (sent - copied_at), total - sent), asio::const_buffer()};
    if (sent < wire::header_size)
      return {asio::buffer(header.data() + sent, wire::header_size - sent),
              asio::buffer(payload.data(), payload.size())};
    const std::size_t off = sent - wire::header_size;
    return {asio::buffer(payload.data() + off, payload.size() - off), asio::const_buffer()};
  }
  void copy_rest() {
    owned.resize(total - sent);
    std::size_t at = 0;
    for (const auto& b : rest()) {
      if (b.size() != 0) std::memcpy(owned.data() + at, b.data(), b.size());
      at += b.size();
    }
    copied_at = sent;
    copied = true;
  }
};

/// A receive waiting for its frame: the header is read into `header_bytes`, the payload into `out`.
struct receive_op {
  static constexpr auto ready = socket_type::wait_read;  // what its waiter waits for

  wire::expectation expected;
  std::span<std::byte> out;
  wire::header_bytes header_bytes{};
  wire::frame_header header{};
  std::size_t got = 0;       // bytes of the frame read so far (header + payload)
  bool have_header = false;  // header read and accepted
  bool goodbye = false;      // the frame is the peer's goodbye
  comm_context where;
  std::unique_ptr<timer_type> timer;
  receive_completion done;

  [[nodiscard]] std::size_t total() const noexcept {
    return wire::header_size + (have_header ? static_cast<std::size_t>(header.payload_length) : 0);
  }
};

/// Answers an operation (once: `done` is empty afterwards) and stops its deadline timer.
inline void finish(send_op& op, failure f = {}) {
  if (op.timer) op.timer->cancel();
  if (op.done) op.done(std::move(f));
}
inline void finish(receive_op& op, failure f = {}) {
  if (op.timer) op.timer->cancel();
  if (!op.done) return;
  const wire::frame_header h = f ? wire::frame_header{} : op.header;
  op.done(std::move(f), h);
}

}  // namespace f2d2n::detail::tcp_impl

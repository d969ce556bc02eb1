// f2d2n/transport/impl/tcp/shutdown.hpp: ending a transport: shutdown() (the frames still queued,
// then a goodbye to every peer, with the reason when a failure is the cause, then the sockets
// closed) and the destructor that joins the io thread.
#pragma once

#include <f2d2n/transport/impl/tcp/direction.hpp>
#include <f2d2n/transport/impl/tcp/transport_impl.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <vector>

namespace f2d2n::detail::tcp_impl {

inline transport_impl::~transport_impl() {
  try {
    shutdown();
  } catch (...) {  // destructors do not throw; the links are closed either way below
  }
  work_.reset();
  // Every operation is finished and every socket closed: run() returns on its own. If it does
  // not within the linger time, something still waits; stop rather than hang.
  if (thread_done_.wait_for(options_.linger + std::chrono::seconds(5)) != std::future_status::ready) io_.stop();
  thread_.join();
}

inline void transport_impl::shutdown(const std::optional<shutdown_reason>& reason) {
  if (on_io_thread()) throw configuration_error("f2d2n: shutdown() cannot run on the transport's own io thread");
  if (shut_.exchange(true)) return;
  wake_.signal();
  // The goodbye, once for every peer: a header alone, or a header and the encoded reason.
  std::vector<std::byte> payload;
  if (reason) payload = wire::encode_reason(*reason);
  const auto header = wire::encode(wire::make_header(wire::frame_kind::goodbye, fingerprint_,
                                                     reason ? wire::goodbye_reason_message : 0, rank_, 0, payload));
  // One allocation, then two copies (GCC 12 warns falsely on insert() after a header's worth here).
  auto goodbye = std::make_shared<std::vector<std::byte>>(wire::header_size + payload.size());
  std::memcpy(goodbye->data(), header.data(), wire::header_size);
  if (!payload.empty()) std::memcpy(goodbye->data() + wire::header_size, payload.data(), payload.size());
  struct countdown {
    std::atomic<std::size_t> left{0};
    std::promise<void> done;
  };
  auto c = std::make_shared<countdown>();
  std::size_t n = 0;
  for (auto& l : links_) n += l ? 1 : 0;
  c->left = n + 1;
  auto one_done = [c] {
    if (c->left.fetch_sub(1) == 1) c->done.set_value();
  };
  auto all = c->done.get_future();
  const deadline until = clock::now() + options_.linger;
  for (auto& l : links_)
    if (l)
      asio::post(l->strand,
                 [this, p = l.get(), until, goodbye, one_done] { close_link(*p, until, *goodbye, one_done); });
  asio::post(setup_, [this, one_done] {
    error_code ec;
    if (acceptor_) acceptor_->close(ec);
    one_done();
  });
  all.wait();  // bounded: each goodbye has the linger deadline
}

/// On the peer's strand: fails the waiting receives, then queues a goodbye behind the frames
/// already queued (and a frame a caller's thread is writing); its deadline bounds the whole flush.
inline void transport_impl::close_link(link& l, deadline until, const std::vector<std::byte>& goodbye,
                                       const std::function<void()>& closed) {
  const std::lock_guard lock(l.m);
  l.closing = true;
  if (l.rx.down.empty()) l.rx.down = "this unit has shut down";
  fail_all<receive_op>(l);
  if (!l.tx.down.empty() || !l.socket.is_open()) {
    end_link(l);
    return closed();
  }
  auto op = std::make_shared<send_op>();
  op->where = {rank_, l.peer, 0, 0};
  op->owned = goodbye;
  op->copied = true;
  op->total = goodbye.size();
  op->done = send_completion(
      [this, &l, closed](failure) {
        end_link(l);
        closed();
      },
      l.strand);
  l.tx.queue.push_back(op);
  pump<send_op>(l);
  if (op->done) arm_timer(l, op, until);
}

/// Fails what is still queued to send, and closes the socket once no caller's thread uses it.
inline void transport_impl::end_link(link& l) {
  if (l.tx.down.empty()) l.tx.down = "this unit has shut down";
  fail_all<send_op>(l);
  error_code ec;
  l.socket.shutdown(socket_type::shutdown_send, ec);
  // Read what the peer sent and nobody will read, so that close() sends a FIN, not a reset.
  std::array<std::byte, 16384> sink;
  for (int i = 0; i < 64 && !ec; ++i)
    if (l.socket.read_some(asio::buffer(sink), ec) == 0) break;
  if (l.tx.caller || l.rx.caller) {
    // A caller's thread may be in poll() on this socket: wake it (it finds the link down) and
    // leave the close to hand_back(), so that the descriptor is not reused under it.
    l.socket.shutdown(socket_type::shutdown_both, ec);
    l.close_deferred = true;
    return;
  }
  l.socket.close(ec);
}

}  // namespace f2d2n::detail::tcp_impl

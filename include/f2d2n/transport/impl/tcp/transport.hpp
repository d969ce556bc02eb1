// f2d2n/transport/impl/tcp/transport.hpp: tcp_transport's member functions (declared in
// transport/tcp.hpp): each tries the caller's thread first, then queues on the peer's strand.
#pragma once

#include <f2d2n/transport/impl/tcp/transport_impl.hpp>

#include <memory>
#include <tuple>
#include <utility>
#include <vector>

namespace f2d2n {

inline tcp_transport::tcp_transport(unit_id rank, std::vector<endpoint> peers, std::uint64_t fingerprint,
                                    tcp_options options)
    : impl_(std::make_unique<detail::tcp_impl::transport_impl>(rank, static_cast<unit_id>(peers.size()), fingerprint,
                                                               options)) {
  impl_->connect(std::move(peers), clock::now() + options.connect_timeout);
}

inline tcp_transport::tcp_transport(unit_id rank, unit_id world_size, std::uint64_t fingerprint, tcp_options options)
    : impl_(std::make_unique<detail::tcp_impl::transport_impl>(rank, world_size, fingerprint, options)) {}

inline tcp_transport::tcp_transport(tcp_transport&&) noexcept = default;
inline tcp_transport& tcp_transport::operator=(tcp_transport&&) noexcept = default;
inline tcp_transport::~tcp_transport() = default;

inline endpoint tcp_transport::listen(const endpoint& where) { return impl_->listen(where); }
inline endpoint tcp_transport::local_endpoint() const { return impl_->local_endpoint(); }
inline void tcp_transport::connect(std::vector<endpoint> peers, deadline until) {
  impl_->connect(std::move(peers), until);
}

inline unit_id tcp_transport::rank() const noexcept { return impl_->rank(); }
inline unit_id tcp_transport::world_size() const noexcept { return impl_->world_size(); }
inline std::uint64_t tcp_transport::fingerprint() const noexcept { return impl_->fingerprint(); }
inline const tcp_options& tcp_transport::options() const noexcept { return impl_->options(); }
inline tcp_transport::executor_type tcp_transport::get_executor() const noexcept { return impl_->executor(); }

template <class CompletionToken>
auto tcp_transport::async_send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload,
                               deadline until, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, void(std::exception_ptr)>(
      [e = impl_.get(), peer, header, payload, until](auto handler) {
        e->start_send(peer, header, payload, until, false,
                      detail::tcp_impl::send_completion(std::move(handler), e->executor()));
      },
      token);
}

template <class CompletionToken>
auto tcp_transport::async_receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out,
                                  deadline until, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, void(std::exception_ptr, wire::frame_header)>(
      [e = impl_.get(), peer, expected, out, until](auto handler) {
        e->start_receive(peer, expected, out, until,
                         detail::tcp_impl::receive_completion(std::move(handler), e->executor()));
      },
      token);
}

inline void tcp_transport::send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload,
                                deadline until) {
  refuse_on_io_thread();
  if (impl_->send_here(peer, header, payload, until)) return;
  auto wait = std::make_shared<detail::tcp_impl::sync_wait<>>();
  impl_->start_send(peer, header, payload, until, true,
                    detail::tcp_impl::send_completion(wait->handler(wait), impl_->executor()));
  wait->get();
}

inline wire::frame_header tcp_transport::receive(unit_id peer, const wire::expectation& expected,
                                                 std::span<std::byte> out, deadline until) {
  refuse_on_io_thread();
  if (auto h = impl_->receive_here(peer, expected, out, until)) return *h;
  auto wait = std::make_shared<detail::tcp_impl::sync_wait<wire::frame_header>>();
  impl_->start_receive(peer, expected, out, until,
                       detail::tcp_impl::receive_completion(wait->handler(wait), impl_->executor()));
  return std::get<0>(wait->get());
}

inline wire::frame_header tcp_transport::exchange(unit_id to, const wire::frame_header& header,
                                                  std::span<const std::byte> payload, unit_id from,
                                                  const wire::expectation& expected, std::span<std::byte> out,
                                                  deadline until) {
  refuse_on_io_thread();
  if (auto h = impl_->exchange_here(to, header, payload, from, expected, out, until)) return *h;
  auto sent = std::make_shared<detail::tcp_impl::sync_wait<>>();
  auto received = std::make_shared<detail::tcp_impl::sync_wait<wire::frame_header>>();
  impl_->start_send(to, header, payload, until, false,
                    detail::tcp_impl::send_completion(sent->handler(sent), impl_->executor()));
  impl_->start_receive(from, expected, out, until,
                       detail::tcp_impl::receive_completion(received->handler(received), impl_->executor()));
  sent->wait();  // both use the caller's memory until they end: wait for both before throwing
  received->wait();
  sent->rethrow_failure();  // the send's failure first
  return std::get<0>(received->get());
}

inline void tcp_transport::shutdown() {
  if (impl_) impl_->shutdown();
}

inline void tcp_transport::shutdown(const shutdown_reason& reason) {
  if (impl_) impl_->shutdown(reason);
}

inline void tcp_transport::refuse_on_io_thread() const {
  if (impl_->on_io_thread())
    throw configuration_error(
        "f2d2n: a blocking send or receive on the transport's own io thread would wait forever; "
        "use async_send / async_receive there");
}

}  // namespace f2d2n

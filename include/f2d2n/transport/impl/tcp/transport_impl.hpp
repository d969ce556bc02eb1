// f2d2n/transport/impl/tcp/transport_impl.hpp: transport_impl, what a tcp_transport holds (its io
// thread, its links, its operations), declared; the other impl/tcp/ files define its members.
#pragma once

// Like every impl/tcp/ file, a part of transport/tcp.hpp (which includes it after tcp_options):
// include that header, not this one.
#include <f2d2n/transport/tcp.hpp>

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/transport/concept.hpp>
#include <f2d2n/transport/detail/tcp/asio.hpp>
#include <f2d2n/transport/detail/tcp/authentication.hpp>
#include <f2d2n/transport/detail/tcp/completion.hpp>
#include <f2d2n/transport/detail/tcp/failure.hpp>
#include <f2d2n/transport/detail/tcp/handshake.hpp>
#include <f2d2n/transport/detail/tcp/link.hpp>
#include <f2d2n/transport/detail/tcp/operation.hpp>
#include <f2d2n/transport/detail/tcp/setup_session.hpp>
#include <f2d2n/transport/detail/tcp/tls.hpp>
#include <f2d2n/transport/detail/tcp/wake_pipe.hpp>
#include <f2d2n/transport/endpoint.hpp>
#include <f2d2n/wire/frame.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace f2d2n::detail::tcp_impl {

/// One unit's end of every connection, its io thread and its operations.
class transport_impl {
 public:
  /// Starts the io thread (impl/tcp/connect.hpp).
  transport_impl(unit_id rank, unit_id world_size, std::uint64_t fingerprint, const tcp_options& options);
  transport_impl(const transport_impl&) = delete;
  transport_impl& operator=(const transport_impl&) = delete;
  /// Shuts down, then joins the io thread (impl/tcp/shutdown.hpp).
  ~transport_impl();

  [[nodiscard]] unit_id rank() const noexcept { return rank_; }
  [[nodiscard]] unit_id world_size() const noexcept { return world_; }
  [[nodiscard]] std::uint64_t fingerprint() const noexcept { return fingerprint_; }
  [[nodiscard]] const tcp_options& options() const noexcept { return options_; }
  [[nodiscard]] asio::io_context::executor_type executor() noexcept { return io_.get_executor(); }
  [[nodiscard]] bool on_io_thread() const noexcept { return std::this_thread::get_id() == thread_.get_id(); }

  // ---- listening and connecting (impl/tcp/connect.hpp) ----

  endpoint listen(const endpoint& where);
  [[nodiscard]] endpoint local_endpoint() const;
  void connect(std::vector<endpoint> peers, deadline until);

  // ---- operations queued on the peer's strand (impl/tcp/send.hpp, impl/tcp/receive.hpp) ----

  void start_send(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until,
                  bool may_copy, send_completion done);
  void start_receive(unit_id peer, const wire::expectation& expected, std::span<std::byte> out, deadline until,
                     receive_completion done);

  // ---- the blocking calls' fast path (impl/tcp/caller_thread.hpp) ----
  // Each returns false / nothing, having done nothing, when the call cannot run on the calling
  // thread (a direction busy, a misuse to report); the caller then takes the queued path, which
  // also reports misuse. Failures are thrown here.

  bool send_here(unit_id peer, const wire::frame_header& header, std::span<const std::byte> payload, deadline until);
  std::optional<wire::frame_header> receive_here(unit_id peer, const wire::expectation& expected,
                                                 std::span<std::byte> out, deadline until);
  std::optional<wire::frame_header> exchange_here(unit_id to, const wire::frame_header& header,
                                                  std::span<const std::byte> payload, unit_id from,
                                                  const wire::expectation& expected, std::span<std::byte> out,
                                                  deadline until);

  /// Delivers what is queued (within options.linger), says goodbye to every peer (with the reason,
  /// when there is one) and closes (impl/tcp/shutdown.hpp).
  void shutdown(const std::optional<shutdown_reason>& reason = std::nullopt);

 private:
  // ---- connection setup, on the setup strand (impl/tcp/connect.hpp, impl/tcp/handshake.hpp) ----

  asio::awaitable<std::vector<asio::ip::tcp::endpoint>> resolve(const endpoint& e, comm_context where);
  asio::awaitable<void> dial(std::shared_ptr<setup_session> s, unit_id r);
  asio::awaitable<void> accept_loop(std::shared_ptr<setup_session> s);
  asio::awaitable<void> serve(std::shared_ptr<setup_session> s, socket_type accepted);
  asio::awaitable<std::string> tls_handshake(connection& c, bool dialled);
  static asio::awaitable<error_code> put(connection& c, std::array<asio::const_buffer, 2> bufs);
  static asio::awaitable<error_code> take(connection& c, asio::mutable_buffer buf);
  asio::awaitable<void> write_frame(connection& c, wire::frame_kind kind, std::uint32_t message,
                                    std::span<const std::byte> payload);
  asio::awaitable<std::pair<wire::frame_header, std::vector<std::byte>>> read_handshake_frame(connection& c,
                                                                                              comm_context where);
  asio::awaitable<std::optional<unit_id>> authenticate_accepted(connection& c);
  asio::awaitable<std::string> authenticate_dialled(connection& c, unit_id r, const std::string& at);
  asio::awaitable<void> handshake(std::shared_ptr<setup_session> s, connection& c, unit_id peer, bool dialled);
  [[nodiscard]] std::span<const std::byte> key_bytes() const noexcept {
    return options_.key ? options_.key->bytes() : std::span<const std::byte>();
  }
  void check_loopback(const asio::ip::tcp::endpoint& e, const char* doing) const;
  std::shared_ptr<timer_type> connection_deadline(const std::shared_ptr<connection>& c);
  static void evict_oldest(setup_session& s);
  void pair_connected(setup_session& s, unit_id peer);
  void pair_failed(setup_session& s, unit_id peer, failure f, bool refused);
  void setup_timed_out(setup_session& s);
  void goodbye_now(connection& c, const std::string& why);
  void finish_setup(setup_session& s, failure err);

  // ---- one direction of a link, on the peer's strand: one template for both (impl/tcp/direction.hpp) ----

  [[nodiscard]] link* link_for(unit_id peer, std::string& problem);
  template <class Op>
  void start(link* l, const std::shared_ptr<Op>& op, std::string problem, deadline until);
  template <class Op>
  void enqueue(link& l, const std::shared_ptr<Op>& op, deadline until);
  template <class Op>
  void arm_timer(link& l, const std::shared_ptr<Op>& op, deadline until);
  template <class Op>
  void expire(link& l, const std::shared_ptr<Op>& op);
  template <class Op>
  void pump(link& l);
  template <class Op>
  void start_waiter(link& l);
  template <class Op>
  asio::awaitable<void> waiter(link& l);
  template <class Op>
  void fail_all(link& l);

  // ---- what differs between the directions (impl/tcp/send.hpp, impl/tcp/receive.hpp) ----

  [[nodiscard]] std::shared_ptr<send_op> make_send_op(unit_id peer, const wire::frame_header& header,
                                                      std::span<const std::byte> payload, bool may_copy) const;
  progress advance(link& l, send_op& op, failure& f);
  void peek_goodbye(link& l) const;
  static failure timed_out(link& l, const send_op& op);
  void absorb(link& l);

  [[nodiscard]] receive_op make_receive_op(unit_id peer, const wire::expectation& expected,
                                           std::span<std::byte> out) const;
  progress advance(link& l, receive_op& op, failure& f);
  bool accept_header(link& l, receive_op& op, failure& f);
  progress complete_frame(link& l, receive_op& op, failure& f);
  static failure rejected(link& l, const protocol_error& e);
  static failure read_failed(link& l, const receive_op& op, const error_code& ec);
  static failure timed_out(link& l, const receive_op& op);

  // ---- the blocking calls on the caller's thread (impl/tcp/caller_thread.hpp) ----

  bool run_here(link* tl, const std::shared_ptr<send_op>& s, link* rl, receive_op* r, deadline until, failure& sf,
                failure& rf);
  bool step_here(link& l, const std::shared_ptr<send_op>& s, bool shutting, bool expired, failure& f);
  bool step_here(link& l, receive_op& r, bool shutting, bool expired, failure& f);
  template <class Op>
  static bool claim(link& l);
  template <class Op>
  void hand_back(link& l);
  void wait_for_sockets(link* tl, link* rl, bool watch_shutdown, deadline until) const;

  // ---- closing, on the peer's strand (impl/tcp/shutdown.hpp) ----

  void close_link(link& l, deadline until, const std::vector<std::byte>& goodbye, const std::function<void()>& closed);
  void end_link(link& l);

  unit_id rank_;
  unit_id world_;
  std::uint64_t fingerprint_;
  tcp_options options_;
  std::unique_ptr<tls_context> tls_;  // with options_.tls: made before any connection, shared by all
  asio::io_context io_;               // declared before everything that holds its executor: destroyed last
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  strand_type setup_;
  std::optional<acceptor_type> acceptor_;
  std::vector<std::unique_ptr<link>> links_;  // links_[peer]; null for this unit
  bool connect_started_ = false;
  std::atomic<bool> shut_{false};
  wake_pipe wake_;
  std::future<void> thread_done_;
  std::thread thread_;
};

}  // namespace f2d2n::detail::tcp_impl

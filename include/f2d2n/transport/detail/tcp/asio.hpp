// f2d2n/transport/detail/tcp/asio.hpp: the parts of Boost.Asio the TCP transport is built on, and
// its short names for them (sockets, strands, timers, error codes).
#pragma once

#include <utility>  // before Boost.Asio: 1.74's asio/awaitable.hpp needs it under g++ 12

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>

namespace f2d2n::detail::tcp_impl {

namespace asio = boost::asio;
using error_code = boost::system::error_code;
using socket_type = asio::ip::tcp::socket;
using acceptor_type = asio::ip::tcp::acceptor;
using strand_type = asio::strand<asio::io_context::executor_type>;
using timer_type = asio::steady_timer;

}  // namespace f2d2n::detail::tcp_impl

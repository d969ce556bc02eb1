// f2d2n/launch/tcp.hpp: the TCP transport's options for a unit of a configured cluster.
//
//   const auto c = f2d2n::config_from_environment();
//   f2d2n::tcp_transport t(c.rank, c.peers, Plan::fingerprint, f2d2n::tcp_options_of(c));
#pragma once

#include <f2d2n/launch/config.hpp>
#include <f2d2n/transport/tcp.hpp>

#include <string>
#include <utility>

namespace f2d2n {

/// `base` with the cluster's key, its TLS files (when set) and its deadline to connect; `description`
/// (peer_description<Plan>(), optional) lets units of different plans say what differs.
[[nodiscard]] inline tcp_options tcp_options_of(const cluster_config& c, tcp_options base = {},
                                                std::string description = {}) {
  base.key = c.key;
  if (c.tls) base.tls = c.tls;
  base.connect_timeout = c.connect_timeout;
  if (!description.empty()) base.description = std::move(description);
  return base;
}

}  // namespace f2d2n

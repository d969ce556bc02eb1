// f2d2n/launch/config.hpp: where the units of a cluster listen, read from the environment or from
// a hosts file.
//
// Environment (what f2d2n_launch and launch() set for each unit):
//
//   F2D2N_RANK=2                                   this unit's rank, 0 .. world size - 1
//   F2D2N_WORLD_SIZE=4                             the number of units
//   F2D2N_PEERS=127.0.0.1:29500,127.0.0.1:29501,...   where unit r listens, for r = 0 .. world size - 1
//   F2D2N_CLUSTER_KEY=... or F2D2N_CLUSTER_KEY_FILE=path   the cluster's secret (transport/cluster_key.hpp);
//                                                  f2d2n_launch makes one per run unless one is set
//   F2D2N_TLS_CA, F2D2N_TLS_CERT, F2D2N_TLS_KEY=path   optional, all three or none: mutual TLS between
//                                                  units (transport/tls_options.hpp)
//   F2D2N_CONNECT_TIMEOUT=10                       optional: seconds to connect to every unit (default 10)
//   F2D2N_TIMEOUT=60                               optional: seconds one wait for a peer may take (default 60)
//
// An IPv6 address is written in brackets: [::1]:29500. Host names are kept as written (they are
// resolved by the transport when it connects); two entries are duplicates when their text is equal,
// so `localhost:29500` and `127.0.0.1:29500` are not recognised as the same place.
//
// Hosts file (one machine per line; the F2D2N prototype's network.conf did the same job):
//
//   # HOST          UNITS  [PORT]
//   node-a.lan      2              # ranks 0, 1 on ports 29500, 29501
//   node-b.lan      3      31000   # ranks 2, 3, 4 on ports 31000, 31001, 31002
//
// - HOST: a name or an address ([::1] or ::1 for IPv6).
// - UNITS: how many units that machine hosts (at least 1). Ranks are consecutive in file order.
// - PORT: where the line's first unit listens (default 29500); unit k of the line listens on PORT + k,
//   and PORT + UNITS - 1 must not exceed 65535.
// - `#` starts a comment that runs to the end of the line; blank lines are ignored. Fields are
//   separated by spaces or tabs; anything after the third field is an error.
//
// Every problem is an f2d2n::configuration_error whose message names the variable (or the file and
// line) and the value that is wrong.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>
#include <f2d2n/transport/cluster_key.hpp>
#include <f2d2n/transport/endpoint.hpp>
#include <f2d2n/transport/tls_options.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace f2d2n {

/// The cluster as one unit sees it: its rank, the number of units, and where each unit listens.
struct cluster_config {
  unit_id rank = 0;
  unit_id world_size = 0;
  std::vector<endpoint> peers;                       ///< peers[r] is where unit r listens; peers.size() == world_size
  std::optional<cluster_key> key;                    ///< the cluster's secret, when one is set
  std::optional<tls_options> tls;                    ///< the files of mutual TLS between units, when set
  std::chrono::milliseconds connect_timeout{10000};  ///< how long connecting to every unit may take
  std::chrono::milliseconds timeout{60000};          ///< how long one wait for a peer may take

  /// Where this unit listens.
  [[nodiscard]] const endpoint& self() const { return peers.at(rank); }
};

/// The port of a hosts-file line that names none.
inline constexpr std::uint16_t default_base_port = 29500;

/// The names of the environment variables.
inline constexpr const char* rank_variable = "F2D2N_RANK";
inline constexpr const char* world_size_variable = "F2D2N_WORLD_SIZE";
inline constexpr const char* peers_variable = "F2D2N_PEERS";
inline constexpr const char* local_rank_variable = "F2D2N_LOCAL_RANK";
inline constexpr const char* local_world_size_variable = "F2D2N_LOCAL_WORLD_SIZE";
/// Set by the launcher: how many times it has restarted the units (0 at the first start).
inline constexpr const char* restart_variable = "F2D2N_RESTART";
/// Optional deadlines, in seconds (a decimal number: 0.5 is half a second).
inline constexpr const char* connect_timeout_variable = "F2D2N_CONNECT_TIMEOUT";
inline constexpr const char* timeout_variable = "F2D2N_TIMEOUT";

/// The exit code of a unit that failed only because another unit failed first (a bystander: its
/// error blames another unit, is_bystander in core/error.hpp). The launcher tells bystanders from
/// the unit that failed first by it, and reports that unit (docs/launch.md). Chosen outside the
/// codes that shells, timeout(1) and the launcher give a meaning (1, 2, 124-127, 128 + a signal).
inline constexpr int bystander_exit_code = 86;

/// What a unit's main returns when it ends with `failure` (an exception it caught):
/// bystander_exit_code when the failure blames another unit (a peer's goodbye named another unit
/// as the one that failed first, or a peer vanished), 1 otherwise (this unit failed first).
///
///   } catch (...) { return f2d2n::exit_code_of(config.rank, std::current_exception()); }
[[nodiscard]] inline int exit_code_of(unit_id self, const std::exception_ptr& failure) {
  if (!failure) return 0;
  return is_bystander(self, shutdown_reason_of(self, failure)) ? bystander_exit_code : 1;
}

/// One line of a hosts file: `units` units on `host`, listening on `port`, `port + 1`, ...
struct hosts_entry {
  std::string host;
  unit_id units = 0;
  std::uint16_t port = default_base_port;
  std::size_t line = 0;  ///< 1-based line number in the file
};

/// A deadline given in seconds (0.5 is half a second), in milliseconds (at least 1); nothing when
/// it is not above 0 or is more than a year. F2D2N_TIMEOUT, F2D2N_CONNECT_TIMEOUT and the
/// command-line options that set them all go through it.
[[nodiscard]] inline std::optional<std::chrono::milliseconds> seconds_duration(double seconds) {
  if (!(seconds > 0.0) || seconds > 365.0 * 24 * 3600) return std::nullopt;
  return std::chrono::milliseconds(std::max<std::int64_t>(1, static_cast<std::int64_t>(seconds * 1000.0 + 0.5)));
}

namespace detail {

/// Whether `c` may appear in a host name or address (IPv6 colons and zone ids included).
[[nodiscard]] constexpr bool is_host_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
         c == '_' || c == ':' || c == '%';
}

[[nodiscard]] inline std::string quoted(std::string_view text) {
  std::string q;
  q.reserve(text.size() + 2);
  q += '\'';
  q += text;
  q += '\'';
  return q;
}

[[nodiscard]] constexpr std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

/// A decimal number without sign, spaces or trailing characters, at most `max`; nullopt otherwise.
[[nodiscard]] inline std::optional<std::uint64_t> parse_unsigned(std::string_view text, std::uint64_t max) {
  if (text.empty() || text.front() < '0' || text.front() > '9') return std::nullopt;
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value > max) return std::nullopt;
  return value;
}

/// Checks a host (without brackets); `context` starts the error message.
inline void check_host(std::string_view host, const std::string& context) {
  if (host.empty()) throw configuration_error(context + ": the host is empty");
  if (host.size() > 253) throw configuration_error(context + ": the host is longer than 253 characters");
  for (const char c : host)
    if (!is_host_char(c))
      throw configuration_error(context + ": the host " + quoted(host) + " contains " +
                                (c == ' ' || c == '\t' ? std::string("a space") : quoted(std::string_view(&c, 1))) +
                                ", which no host name or address contains");
}

/// A port 1 .. 65535; `context` starts the error message.
[[nodiscard]] inline std::uint16_t parse_port(std::string_view text, const std::string& context) {
  const auto value = parse_unsigned(text, std::numeric_limits<std::uint64_t>::max());
  if (!value) throw configuration_error(context + ": the port " + quoted(text) + " is not a number");
  if (*value == 0 || *value > 65535)
    throw configuration_error(context + ": the port " + std::string(text) + " is outside 1..65535");
  return static_cast<std::uint16_t>(*value);
}

/// A host as written in a hosts file: bare, or an IPv6 address in brackets.
[[nodiscard]] inline std::string unbracket(std::string_view host, const std::string& context) {
  if (!host.empty() && host.front() == '[') {
    if (host.size() < 2 || host.back() != ']')
      throw configuration_error(context + ": the host " + quoted(host) + " opens a bracket it does not close");
    host = host.substr(1, host.size() - 2);
  }
  check_host(host, context);
  return std::string(host);
}

/// Seconds as a decimal number above 0 and at most a year, in milliseconds (at least 1); `name`
/// starts the error message.
[[nodiscard]] inline std::chrono::milliseconds parse_seconds(std::string_view text, const std::string& name) {
  const std::string t(trim(text));
  char* end = nullptr;
  errno = 0;
  const double v = t.empty() ? -1.0 : std::strtod(t.c_str(), &end);
  const auto d = seconds_duration(v);
  if (t.empty() || errno != 0 || end != t.c_str() + t.size() || !d)
    throw configuration_error(name + "=" + quoted(text) + " is not a number of seconds above 0 (e.g. 30 or 0.5)");
  return *d;
}

[[nodiscard]] inline std::string environment_value(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) throw configuration_error(std::string(name) + " is not set");
  return value;
}

}  // namespace detail

/// `host:port`, with an IPv6 address in brackets (`[::1]:29500`).
[[nodiscard]] inline std::string to_string(const endpoint& e) {
  const bool v6 = e.host.find(':') != std::string::npos;
  return (v6 ? "[" + e.host + "]" : e.host) + ":" + std::to_string(e.port);
}

/// Parses `host:port` or `[ipv6]:port`. `context` starts the message of the configuration_error
/// thrown for a bad value (e.g. "F2D2N_PEERS entry 2").
[[nodiscard]] inline endpoint parse_endpoint(std::string_view text, const std::string& context = "endpoint") {
  const std::string where = context + " " + detail::quoted(text);
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      throw configuration_error(where + " is not [address]:port");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) throw configuration_error(where + " is not host:port (no ':')");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      throw configuration_error(where + " is not host:port (write an IPv6 address in brackets: [::1]:29500)");
  }
  detail::check_host(host, where);
  return endpoint{std::string(host), detail::parse_port(port, where)};
}

/// The F2D2N_PEERS form of a list of endpoints: `host:port,host:port,...`.
[[nodiscard]] inline std::string to_peers_string(const std::vector<endpoint>& peers) {
  std::string s;
  for (std::size_t i = 0; i < peers.size(); ++i) {
    if (i != 0) s += ',';
    s += to_string(peers[i]);
  }
  return s;
}

/// Parses a comma-separated list of endpoints (spaces around entries are allowed). An empty entry
/// or a duplicate endpoint is an error. `name` (e.g. "F2D2N_PEERS") starts the error messages.
[[nodiscard]] inline std::vector<endpoint> parse_peers(std::string_view text, std::string_view name = peers_variable) {
  const std::string variable(name);
  std::vector<endpoint> peers;
  std::size_t begin = 0;
  while (true) {
    const auto comma = text.find(',', begin);
    const auto entry = detail::trim(text.substr(begin, comma == std::string_view::npos ? comma : comma - begin));
    const std::string context = variable + "=" + detail::quoted(text) + ": entry " + std::to_string(peers.size());
    if (entry.empty()) throw configuration_error(context + " is empty");
    peers.push_back(parse_endpoint(entry, context));
    for (std::size_t j = 0; j + 1 < peers.size(); ++j)
      if (peers[j] == peers.back())
        throw configuration_error(variable + "=" + detail::quoted(text) + ": entries " + std::to_string(j) + " and " +
                                  std::to_string(peers.size() - 1) + " are both " + to_string(peers.back()) +
                                  ": two units cannot listen at the same place");
    if (comma == std::string_view::npos) break;
    begin = comma + 1;
  }
  return peers;
}

/// Sets c's deadlines from F2D2N_CONNECT_TIMEOUT and F2D2N_TIMEOUT where they are set (a
/// configuration_error for a value that is not a number of seconds above 0).
inline void read_timeouts_from_environment(cluster_config& c) {
  if (const char* v = std::getenv(connect_timeout_variable); v && *v)
    c.connect_timeout = detail::parse_seconds(v, connect_timeout_variable);
  if (const char* v = std::getenv(timeout_variable); v && *v) c.timeout = detail::parse_seconds(v, timeout_variable);
}

/// Reads F2D2N_RANK, F2D2N_WORLD_SIZE and F2D2N_PEERS, and the optional F2D2N_CLUSTER_KEY (or
/// F2D2N_CLUSTER_KEY_FILE), F2D2N_TLS_*, F2D2N_CONNECT_TIMEOUT and F2D2N_TIMEOUT. Any problem (a variable missing, not
/// a number, a rank not below the world size, a number of peers other than the world size, a bad host:port, a port
/// outside 1..65535, a duplicate endpoint) is a configuration_error that names the variable and its value.
[[nodiscard]] inline cluster_config config_from_environment() {
  constexpr std::uint64_t unit_max = std::numeric_limits<unit_id>::max();
  const std::string world_text = detail::environment_value(world_size_variable);
  const auto world = detail::parse_unsigned(detail::trim(world_text), unit_max);
  if (!world)
    throw configuration_error(std::string(world_size_variable) + "=" + detail::quoted(world_text) +
                              " is not a number of units (a decimal integer, 1.." + std::to_string(unit_max) + ")");
  if (*world == 0) throw configuration_error(std::string(world_size_variable) + "=0: a cluster has at least one unit");

  const std::string rank_text = detail::environment_value(rank_variable);
  const auto rank = detail::parse_unsigned(detail::trim(rank_text), unit_max);
  if (!rank)
    throw configuration_error(std::string(rank_variable) + "=" + detail::quoted(rank_text) +
                              " is not a rank (a decimal integer, 0.." + std::to_string(unit_max - 1) + ")");
  if (*rank >= *world)
    throw configuration_error(std::string(rank_variable) + "=" + std::to_string(*rank) + " is not below " +
                              world_size_variable + "=" + std::to_string(*world));

  const std::string peers_text = detail::environment_value(peers_variable);
  auto peers = parse_peers(peers_text, peers_variable);
  if (peers.size() != *world)
    throw configuration_error(std::string(peers_variable) + "=" + detail::quoted(peers_text) + " names " +
                              std::to_string(peers.size()) + " endpoints, but " + world_size_variable + "=" +
                              std::to_string(*world) + " needs one per unit");
  cluster_config c;
  c.rank = static_cast<unit_id>(*rank);
  c.world_size = static_cast<unit_id>(*world);
  c.peers = std::move(peers);
  c.key = cluster_key_from_environment();
  c.tls = tls_options_from_environment();
  read_timeouts_from_environment(c);
  return c;
}

/// Parses the text of a hosts file (format at the top of this header). `source` names the file in
/// error messages, which read `source:line: problem`.
[[nodiscard]] inline std::vector<hosts_entry> parse_hosts(std::string_view text, std::string_view source = "hosts") {
  std::vector<hosts_entry> entries;
  std::uint64_t total = 0;
  std::size_t line_number = 0;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    const auto newline = text.find('\n', begin);
    std::string_view line = text.substr(begin, newline == std::string_view::npos ? newline : newline - begin);
    begin = newline == std::string_view::npos ? text.size() + 1 : newline + 1;
    ++line_number;
    const std::string where = std::string(source) + ":" + std::to_string(line_number);
    if (const auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);

    std::vector<std::string_view> fields;
    std::size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
      const std::size_t start = i;
      while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
      if (i > start) fields.push_back(line.substr(start, i - start));
    }
    if (fields.empty()) continue;
    if (fields.size() == 1)
      throw configuration_error(where + ": " + detail::quoted(detail::trim(line)) +
                                " names no number of units (expected HOST UNITS [PORT])");
    if (fields.size() > 3)
      throw configuration_error(where + ": " + detail::quoted(detail::trim(line)) + " has " +
                                std::to_string(fields.size()) + " fields (expected HOST UNITS [PORT])");

    hosts_entry entry;
    entry.line = line_number;
    entry.host = detail::unbracket(fields[0], where);
    const auto units = detail::parse_unsigned(fields[1], 65535);
    if (!units || *units == 0)
      throw configuration_error(where + ": the number of units " + detail::quoted(fields[1]) +
                                " is not a whole number in 1..65535");
    entry.units = static_cast<unit_id>(*units);
    if (fields.size() == 3) entry.port = detail::parse_port(fields[2], where);
    if (std::uint64_t{entry.port} + entry.units - 1 > 65535)
      throw configuration_error(where + ": " + std::to_string(entry.units) + " units from port " +
                                std::to_string(entry.port) + " would need ports beyond 65535");
    for (const auto& other : entries)
      if (other.host == entry.host && entry.port < other.port + std::uint64_t{other.units} &&
          other.port < entry.port + std::uint64_t{entry.units})
        throw configuration_error(where + ": ports " + std::to_string(entry.port) + ".." +
                                  std::to_string(entry.port + entry.units - 1) + " on " + entry.host +
                                  " overlap those of line " + std::to_string(other.line) + " (" +
                                  std::to_string(other.port) + ".." + std::to_string(other.port + other.units - 1) +
                                  "): two units cannot listen at the same place");
    total += entry.units;
    if (total > std::numeric_limits<unit_id>::max())
      throw configuration_error(where + ": more than " + std::to_string(std::numeric_limits<unit_id>::max()) +
                                " units in all");
    entries.push_back(std::move(entry));
  }
  if (entries.empty())
    throw configuration_error(std::string(source) + ": names no machine (every line is blank or a comment)");
  return entries;
}

/// Every unit's endpoint, in rank order, from parsed hosts-file lines.
[[nodiscard]] inline std::vector<endpoint> endpoints_of(const std::vector<hosts_entry>& entries) {
  std::vector<endpoint> peers;
  for (const auto& e : entries)
    for (unit_id k = 0; k < e.units; ++k) peers.push_back(endpoint{e.host, static_cast<std::uint16_t>(e.port + k)});
  return peers;
}

/// The configuration of unit `rank` from the text of a hosts file; `source` names it in errors.
[[nodiscard]] inline cluster_config config_from_hosts(std::string_view text, unit_id rank,
                                                      std::string_view source = "hosts") {
  auto peers = endpoints_of(parse_hosts(text, source));
  if (rank >= peers.size())
    throw configuration_error(std::string(source) + ": rank " + std::to_string(rank) + " is beyond the " +
                              std::to_string(peers.size()) + " units the file names (ranks 0.." +
                              std::to_string(peers.size() - 1) + ")");
  const auto world = static_cast<unit_id>(peers.size());
  cluster_config c;
  c.rank = rank;
  c.world_size = world;
  c.peers = std::move(peers);
  c.key = cluster_key_from_environment();  // several machines: the key is what keeps others out
  c.tls = tls_options_from_environment();
  return c;
}

/// The configuration of unit `rank` from a hosts file. A file that cannot be read is a
/// configuration_error naming the path; so are the problems config_from_hosts reports.
[[nodiscard]] inline cluster_config config_from_hosts_file(const std::string& path, unit_id rank) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw configuration_error("hosts file " + detail::quoted(path) + " is a directory");
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int code = errno;
    throw configuration_error("hosts file " + detail::quoted(path) +
                              " cannot be opened: " + (code != 0 ? std::strerror(code) : "unknown reason"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw configuration_error("hosts file " + detail::quoted(path) + " cannot be read");
  return config_from_hosts(text.str(), rank, path);
}

}  // namespace f2d2n

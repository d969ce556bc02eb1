// f2d2n/transport/impl/shm/start.hpp: shm_transport starting: the constructor, creating this
// unit's segment (replacing a crashed run's), opening and checking every peer's, and saying why
// when this unit cannot start. Included at the end of transport/shm.hpp.
#pragma once

#include <f2d2n/transport/shm.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace f2d2n {

inline shm_transport::shm_transport(unit_id rank, unit_id world_size, std::vector<unit_id> group, std::string prefix,
                                    std::uint64_t fingerprint, shm_options options)
    : rank_(rank), world_(world_size), fingerprint_(fingerprint), prefix_(std::move(prefix)), options_(options) {
  std::sort(group.begin(), group.end());
  group.erase(std::unique(group.begin(), group.end()), group.end());
  validate(group);
  group_ = std::move(group);
  links_ = std::make_unique<link[]>(world_);
  const auto until = clock::now() + options_.connect_timeout;
  create_own();
  const auto others = static_cast<std::uint32_t>(group_.size() - 1);
  try {
    for (const unit_id p : group_)
      if (p != rank_) attach(p, until);
    const comm_context where{rank_, rank_, 0, 0};
    wait(
        [&] {
          check_attached_peers();
          return own_.header().attached.load(std::memory_order_acquire) >= others;
        },
        until, nullptr, nullptr, where,
        "not every unit of the group opened this unit's shared memory before the deadline");
  } catch (const std::exception& e) {
    // Say why in the segment, and keep its name until every peer has looked (or the deadline),
    // so that the peers report this failure instead of waiting for this unit until theirs.
    auto& h = own_.header();
    const std::string why = e.what();
    const auto n = std::min(why.size(), h.failure.size() - 1);
    std::memcpy(h.failure.data(), why.data(), n);
    h.failure[n] = '\0';
    h.failed.store(1, std::memory_order_release);
    detail::shm::ring_bell(h);
    for (const unit_id p : group_)
      if (p != rank_ && links_[p].out != nullptr) detail::shm::ring_bell(links_[p].theirs.header());
    try {
      wait([&] { return h.seen.load(std::memory_order_acquire) >= others; }, until, nullptr, nullptr,
           comm_context{rank_, rank_, 0, 0}, "");
    } catch (const error&) {
    }
    ::shm_unlink(name_of(rank_).c_str());
    throw;
  }
  ::shm_unlink(name_of(rank_).c_str());
}

inline void shm_transport::validate(const std::vector<unit_id>& group) const {
  auto fail = [](const std::string& what) { throw configuration_error("f2d2n: shm_transport: " + what); };
  if (world_ == 0 || rank_ >= world_)
    fail("rank " + std::to_string(rank_) + " is outside a world of " + std::to_string(world_) + " units");
  if (!std::binary_search(group.begin(), group.end(), rank_))
    fail("the group does not hold this unit's rank " + std::to_string(rank_));
  if (group.back() >= world_)
    fail("the group names unit " + std::to_string(group.back()) + ", outside a world of " + std::to_string(world_));
  if (prefix_.empty() || prefix_.size() > 200 || !std::all_of(prefix_.begin(), prefix_.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
               c == '-';
      }))
    fail("the segment prefix \"" + prefix_ + "\" is not 1-200 letters, digits, '.', '_' or '-'");
  if (options_.ring_bytes < 4096 || options_.ring_bytes > (std::uint64_t{1} << 34))
    fail("shm_options::ring_bytes is " + std::to_string(options_.ring_bytes) + ", outside 4096 .. 2^34");
}

inline void shm_transport::create_own() {
  namespace s = detail::shm;
  const auto name = name_of(rank_);
  const auto bytes = s::segment_bytes(rings(), options_.ring_bytes);
  for (int attempt = 0;; ++attempt) {
    const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) {
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
        const int e = errno;
        ::close(fd);
        ::shm_unlink(name.c_str());
        throw configuration_error("f2d2n: shm_transport: cannot size /dev/shm" + name + ": " + s::system_message(e));
      }
      void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (base == MAP_FAILED) {
        const int e = errno;
        ::close(fd);
        ::shm_unlink(name.c_str());
        throw configuration_error("f2d2n: shm_transport: cannot map /dev/shm" + name + " (" + std::to_string(bytes) +
                                  " bytes): " + s::system_message(e));
      }
      own_ = s::mapping(fd, base, bytes);
      break;
    }
    if (errno != EEXIST || attempt == 3)
      throw configuration_error("f2d2n: shm_transport: cannot create /dev/shm" + name + ": " +
                                s::system_message(errno));
    // A segment of that name exists: a crashed run's (nobody holds its lock), replaced; or a live unit's.
    const int old = ::shm_open(name.c_str(), O_RDWR, 0600);
    if (old < 0) continue;  // gone meanwhile
    const bool live = ::flock(old, LOCK_EX | LOCK_NB) != 0;
    ::close(old);
    if (live)
      throw configuration_error("f2d2n: shm_transport: a live process holds /dev/shm" + name +
                                ": another cluster with the same segment prefix runs on this host");
    ::shm_unlink(name.c_str());
  }
  auto* h = new (own_.base()) s::segment_header{};
  h->layout = s::layout_version;
  h->wire = wire::wire_version;
  h->rank = rank_;
  h->world_size = world_;
  h->fingerprint = fingerprint_;
  h->ring_bytes = options_.ring_bytes;
  h->rings = rings();
  h->total_bytes = s::segment_bytes(rings(), options_.ring_bytes);
  h->payload_checksums = options_.payload_checksums ? 1 : 0;
  h->pid = static_cast<std::int32_t>(::getpid());
  for (std::size_t i = 0; i < rings(); ++i) new (ring_at(own_.base(), i)) s::ring_control{};
  h->magic.store(s::segment_magic, std::memory_order_release);
  for (const unit_id p : group_) {
    if (p == rank_) continue;
    links_[p].in = ring_at(own_.base(), slot_in(rank_, p));
    links_[p].in_data = data_of(links_[p].in);
  }
}

inline void shm_transport::attach(unit_id p, deadline until) {
  namespace s = detail::shm;
  const comm_context where{rank_, p, 0, 0};
  const auto name = name_of(p);
  auto nap = std::chrono::microseconds(200);
  std::string last = "its segment /dev/shm" + name + " does not exist";
  for (;;) {
    if (clock::now() >= until)
      throw timeout_error(where, "unit " + std::to_string(p) +
                                     " did not start its shared memory before the deadline (" + last + ")");
    if (auto m = open_segment(name, last)) {
      if (m->owner_alive()) {
        m->header().seen.fetch_add(1, std::memory_order_acq_rel);
        s::ring_bell(m->header());
        refused_by(p, m->header(), where);
        check_peer_segment(p, m->header(), where);
        links_[p].theirs = std::move(*m);
        links_[p].out = ring_at(links_[p].theirs.base(), slot_in(p, rank_));
        links_[p].out_data = data_of(links_[p].out);
        links_[p].theirs.header().attached.fetch_add(1, std::memory_order_acq_rel);
        s::ring_bell(links_[p].theirs.header());
        return;
      }
      last = "its segment /dev/shm" + name + " was left by a process that has died";
    }
    check_attached_peers();
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::microseconds(10000));
  }
}

inline std::optional<detail::shm::mapping> shm_transport::open_segment(const std::string& name,
                                                                       std::string& why) const {
  namespace s = detail::shm;
  const int fd = ::shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) {
    why = "its segment /dev/shm" + name + (errno == ENOENT ? " does not exist" : ": " + s::system_message(errno));
    return std::nullopt;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) < s::header_stride()) {
    ::close(fd);
    why = "its segment /dev/shm" + name + " is not sized yet";
    return std::nullopt;
  }
  const auto bytes = static_cast<std::size_t>(st.st_size);
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    why = "cannot map /dev/shm" + name + ": " + s::system_message(errno);
    ::close(fd);
    return std::nullopt;
  }
  s::mapping m(fd, base, bytes);
  const auto& h = m.header();
  if (h.magic.load(std::memory_order_acquire) != s::segment_magic) {
    why = "its segment /dev/shm" + name + " is not written yet";
    return std::nullopt;
  }
  if (h.total_bytes != bytes) {
    why = "its segment /dev/shm" + name + " is " + std::to_string(bytes) + " bytes, its header says " +
          std::to_string(h.total_bytes);
    return std::nullopt;
  }
  return m;
}

inline void shm_transport::check_peer_segment(unit_id p, const detail::shm::segment_header& h,
                                              const comm_context& where) const {
  std::string differ;
  const auto compare = [&](const char* what, std::uint64_t theirs, std::uint64_t mine) {
    if (theirs != mine)
      differ += std::string(differ.empty() ? "" : ", ") + what + " " + std::to_string(theirs) +
                " (this unit: " + std::to_string(mine) + ")";
  };
  compare("segment layout", h.layout, detail::shm::layout_version);
  compare("wire version", h.wire, wire::wire_version);
  compare("rank", h.rank, p);
  compare("world size", h.world_size, world_);
  compare("plan fingerprint", h.fingerprint, fingerprint_);
  compare("ring bytes", h.ring_bytes, options_.ring_bytes);
  compare("rings", h.rings, rings());
  compare("payload checksums", h.payload_checksums, options_.payload_checksums ? 1 : 0);
  if (!differ.empty())
    throw handshake_error(where, "unit " + std::to_string(p) + " (process " + std::to_string(h.pid) +
                                     ") differs in its shared memory: " + differ);
}

}  // namespace f2d2n

// The TCP handshake's parsers (transport/detail/tcp/handshake.hpp) on arbitrary bytes: each parser
// in `parsers` reads the whole input as the payload of its handshake frame (the frame itself is
// fuzz_frame's). A parser says "not this message" in its own way (decode_hello: nothing); any
// exception, a crash, or a broken round trip is a finding.
//
// To fuzz another handshake message (the authentication exchange), add its parser to `parsers`
// and a few of its valid payloads to fuzz/corpus/handshake/ (make_corpus.cpp): every parser sees
// every input, so the corpus is shared.

#include <f2d2n/transport/detail/tcp/handshake.hpp>
#include <f2d2n/wire/frame.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

namespace tcp = f2d2n::detail::tcp_impl;

namespace {

/// The hello: decoded, or nothing. A decoded hello is exactly one encoded hello (decode_hello's
/// promise): encoding it again gives the input back. The words both sides print when two hellos
/// differ name a difference exactly when there is one.
void parse_hello(std::span<const std::byte> payload) {
  if (payload.size() > tcp::max_handshake_payload) return;  // the transport refuses it before reading
  const auto h = tcp::decode_hello(payload);
  if (!h) return;
  const auto again = tcp::encode_hello(*h);
  if (again.size() != payload.size() || !std::equal(again.begin(), again.end(), payload.begin())) std::abort();
  const tcp::hello mine{0, 2, 0x0123456789abcdefu, f2d2n::wire::wire_version};
  const bool same =
      h->version == mine.version && h->world_size == mine.world_size && h->fingerprint == mine.fingerprint;
  if (tcp::differences(mine, *h).empty() != same || tcp::differences(*h, mine).empty() != same) std::abort();
}

using parser = void (*)(std::span<const std::byte>);
constexpr parser parsers[] = {parse_hello};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto payload = std::as_bytes(std::span<const std::uint8_t>(data, size));
  for (const parser p : parsers) p(payload);
  return 0;
}

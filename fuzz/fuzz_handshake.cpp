// The TCP setup's parsers on arbitrary bytes: the authentication exchange's fixed-size records
// (transport/detail/tcp/authentication.hpp), read as the stream an accepting unit reads (a
// challenge, the dialler's proof, then an acceptor's answer as a dialler reads it), and the hello
// (transport/detail/tcp/handshake.hpp), the whole input as the payload of its handshake frame (the
// frame itself is fuzz_frame's). A parser says "not this message" in its own way (nothing, false);
// any exception, a crash, or a broken round trip is a finding.
//
// To fuzz another setup message, add its parser to `parsers` and a few of its valid inputs to
// fuzz/corpus/handshake/ (make_corpus.cpp): every parser sees every input, so the corpus is shared.

#include <f2d2n/transport/detail/tcp/authentication.hpp>
#include <f2d2n/transport/detail/tcp/handshake.hpp>
#include <f2d2n/wire/frame.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

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
  const tcp::hello mine{0, 2, 0x0123456789abcdefu, f2d2n::wire::wire_version, {}};
  const bool same =
      h->version == mine.version && h->world_size == mine.world_size && h->fingerprint == mine.fingerprint;
  if (tcp::differences(mine, *h).empty() != same || tcp::differences(*h, mine).empty() != same) std::abort();
}

/// The key and the accepting unit's nonce the authentication target checks against (make_corpus.cpp
/// writes a stream whose proof holds for them, so that the accepting branch is reached).
constexpr std::string_view auth_key = "fuzz-cluster-key-0123456789abcdef";
constexpr tcp::nonce acceptor_nonce = [] {
  tcp::nonce n{};
  for (std::size_t i = 0; i < n.size(); ++i) n[i] = static_cast<std::byte>(0xa0 + i);
  return n;
}();

template <std::size_t N>
std::array<std::byte, N> take(std::span<const std::byte> s) {
  std::array<std::byte, N> a{};
  std::copy_n(s.begin(), N, a.begin());
  return a;
}

/// The authentication records: a challenge is its magic and nonce (encoding it again gives the
/// bytes back); a proof's claim and MAC read back to the same bytes; a proof that holds makes an
/// answer that holds for the same claim, and only for the rank it states.
void parse_authentication(std::span<const std::byte> input) {
  const auto key = std::as_bytes(std::span(auth_key));
  constexpr std::size_t c = tcp::challenge_bytes{}.size(), d = tcp::dialler_proof_bytes{}.size(),
                        a = tcp::acceptor_proof_bytes{}.size();
  if (input.size() < c) return;
  const auto nonce_d = tcp::decode_challenge(input.first(c));
  if (!nonce_d) return;
  const auto again = tcp::encode_challenge(*nonce_d);
  if (!std::equal(again.begin(), again.end(), input.begin())) std::abort();
  if (input.size() < c + d) return;
  const auto proof = take<d>(input.subspan(c));
  const tcp::auth_claim claim = tcp::claim_of(proof);
  tcp::mac m{};
  std::copy_n(tcp::mac_of(proof).begin(), m.size(), m.begin());
  if (tcp::encode_dialler_proof(claim, m) != proof) std::abort();
  if (tcp::dialler_proof_holds(key, *nonce_d, acceptor_nonce, proof)) {
    const auto answer =
        tcp::encode_acceptor_proof(claim.target, tcp::proof_mac(key, tcp::acceptor_label, *nonce_d, acceptor_nonce,
                                                                {claim.dialler, claim.target, claim.world}));
    if (!tcp::acceptor_proof_holds(key, *nonce_d, acceptor_nonce, claim, answer)) std::abort();
    auto other = answer;
    other[0] ^= std::byte{1};  // another rank stated with the same MAC
    if (tcp::acceptor_proof_holds(key, *nonce_d, acceptor_nonce, claim, other)) std::abort();
  }
  if (input.size() < c + d + a) return;
  const auto answer = take<a>(input.subspan(c + d));
  (void)tcp::acceptor_proof_holds(key, *nonce_d, acceptor_nonce, claim, answer);
  (void)tcp::rank_of(answer);
}

using parser = void (*)(std::span<const std::byte>);
constexpr parser parsers[] = {parse_authentication, parse_hello};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto payload = std::as_bytes(std::span<const std::uint8_t>(data, size));
  for (const parser p : parsers) p(payload);
  return 0;
}

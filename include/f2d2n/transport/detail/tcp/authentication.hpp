// f2d2n/transport/detail/tcp/authentication.hpp: the records of the authentication that opens
// every connection (before any frame), their fixed-size encodings and their MACs.
//
// On a new connection, both sides first send a challenge: 8 bytes "F2D2N-A1" and a fresh 32-byte
// nonce (OpenSSL's generator). Then the dialling unit D sends its proof to the accepting unit A,
//   D's rank, the rank it dialled, its world size (3 x u32, little-endian) and
//   HMAC-SHA256(key, "f2d2n dialler" | nonce_D | nonce_A | those 12 bytes),
// and A, once that MAC is right, answers with
//   A's rank (u32) and HMAC-SHA256(key, "f2d2n acceptor" | nonce_D | nonce_A | D's rank, A's rank, world).
// Both MACs cover both fresh nonces (no replay), a role label (no reflection) and the ranks (a proof
// made for one unit is worth nothing at another). Every record has a fixed size: nothing read
// before authentication has a length, and nothing else is read before it. See docs/security.md.
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/core/unit.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

namespace f2d2n::detail::tcp_impl {

inline constexpr std::size_t nonce_size = 32;
inline constexpr std::size_t mac_size = 32;
inline constexpr std::array<char, 8> challenge_magic{'F', '2', 'D', '2', 'N', '-', 'A', '1'};

using nonce = std::array<std::byte, nonce_size>;
using mac = std::array<std::byte, mac_size>;

/// The first record on every connection, both ways: the magic and a fresh nonce.
using challenge_bytes = std::array<std::byte, challenge_magic.size() + nonce_size>;
/// The dialler's proof: its rank, the rank it dialled, its world size, and the MAC.
using dialler_proof_bytes = std::array<std::byte, 12 + mac_size>;
/// The acceptor's answer: its rank and the MAC.
using acceptor_proof_bytes = std::array<std::byte, 4 + mac_size>;

/// Who is on each end, as the dialler claims it.
struct auth_claim {
  unit_id dialler = 0;
  unit_id target = 0;
  unit_id world = 0;
};

[[nodiscard]] inline nonce fresh_nonce() {
  nonce n{};
  if (RAND_bytes(reinterpret_cast<unsigned char*>(n.data()), static_cast<int>(n.size())) != 1)
    throw configuration_error("f2d2n: OpenSSL's random generator failed to make a nonce");
  return n;
}

[[nodiscard]] inline challenge_bytes encode_challenge(const nonce& n) {
  challenge_bytes b{};
  std::memcpy(b.data(), challenge_magic.data(), challenge_magic.size());
  std::memcpy(b.data() + challenge_magic.size(), n.data(), n.size());
  return b;
}

/// The nonce of a challenge, or nothing when the magic is not f2d2n's (not a unit of this version).
[[nodiscard]] inline std::optional<nonce> decode_challenge(std::span<const std::byte> b) {
  if (b.size() != challenge_bytes{}.size() ||
      std::memcmp(b.data(), challenge_magic.data(), challenge_magic.size()) != 0)
    return std::nullopt;
  nonce n{};
  std::memcpy(n.data(), b.data() + challenge_magic.size(), n.size());
  return n;
}

inline void put_u32(std::byte* at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) at[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}

[[nodiscard]] inline std::uint32_t get_u32(const std::byte* at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::to_integer<std::uint32_t>(at[i]) << (8 * i);
  return v;
}

/// HMAC-SHA256(key, label | nonce_d | nonce_a | dialler, target, world), the MAC of either proof.
[[nodiscard]] inline mac proof_mac(std::span<const std::byte> key, std::string_view label, const nonce& nonce_d,
                                   const nonce& nonce_a, const auth_claim& c) {
  std::array<std::byte, 14 + 2 * nonce_size + 12> message{};
  std::size_t at = 0;
  std::array<char, 14> padded{};  // the label, zero-padded to a fixed width
  std::memcpy(padded.data(), label.data(), std::min(label.size(), padded.size()));
  std::memcpy(message.data(), padded.data(), padded.size());
  at += padded.size();
  std::memcpy(message.data() + at, nonce_d.data(), nonce_size);
  at += nonce_size;
  std::memcpy(message.data() + at, nonce_a.data(), nonce_size);
  at += nonce_size;
  put_u32(message.data() + at, c.dialler);
  put_u32(message.data() + at + 4, c.target);
  put_u32(message.data() + at + 8, c.world);
  mac m{};
  unsigned int length = 0;
  static constexpr unsigned char empty = 0;  // HMAC() wants a key pointer even for an empty key
  const auto* key_data = key.empty() ? &empty : reinterpret_cast<const unsigned char*>(key.data());
  if (HMAC(EVP_sha256(), key_data, static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
           message.size(), reinterpret_cast<unsigned char*>(m.data()), &length) == nullptr ||
      length != mac_size)
    throw configuration_error("f2d2n: OpenSSL's HMAC-SHA256 failed");
  return m;
}

[[nodiscard]] inline bool same_mac(const mac& a, std::span<const std::byte> b) {
  return b.size() == a.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

inline constexpr std::string_view dialler_label = "f2d2n dialler";
inline constexpr std::string_view acceptor_label = "f2d2n acceptor";

[[nodiscard]] inline dialler_proof_bytes encode_dialler_proof(const auth_claim& c, const mac& m) {
  dialler_proof_bytes b{};
  put_u32(b.data(), c.dialler);
  put_u32(b.data() + 4, c.target);
  put_u32(b.data() + 8, c.world);
  std::memcpy(b.data() + 12, m.data(), mac_size);
  return b;
}

/// The claim of a dialler's proof (its MAC still to be checked).
[[nodiscard]] inline auth_claim claim_of(const dialler_proof_bytes& b) {
  return {get_u32(b.data()), get_u32(b.data() + 4), get_u32(b.data() + 8)};
}

[[nodiscard]] inline std::span<const std::byte> mac_of(const dialler_proof_bytes& b) {
  return std::span(b).subspan(12);
}

[[nodiscard]] inline acceptor_proof_bytes encode_acceptor_proof(unit_id rank, const mac& m) {
  acceptor_proof_bytes b{};
  put_u32(b.data(), rank);
  std::memcpy(b.data() + 4, m.data(), mac_size);
  return b;
}

[[nodiscard]] inline unit_id rank_of(const acceptor_proof_bytes& b) { return get_u32(b.data()); }
[[nodiscard]] inline std::span<const std::byte> mac_of(const acceptor_proof_bytes& b) {
  return std::span(b).subspan(4);
}

/// Whether the dialler's proof is right for this acceptor's key and nonces. Its claim is checked
/// by the caller (it may name another unit: the connection is then dropped, nothing else).
[[nodiscard]] inline bool dialler_proof_holds(std::span<const std::byte> key, const nonce& nonce_d,
                                              const nonce& nonce_a, const dialler_proof_bytes& b) {
  return same_mac(proof_mac(key, dialler_label, nonce_d, nonce_a, claim_of(b)), mac_of(b));
}

/// Whether the acceptor's answer proves the key, for the claim the dialler made and the rank the
/// acceptor states.
[[nodiscard]] inline bool acceptor_proof_holds(std::span<const std::byte> key, const nonce& nonce_d,
                                               const nonce& nonce_a, auth_claim c, const acceptor_proof_bytes& b) {
  c.target = rank_of(b);
  return same_mac(proof_mac(key, acceptor_label, nonce_d, nonce_a, c), mac_of(b));
}

}  // namespace f2d2n::detail::tcp_impl

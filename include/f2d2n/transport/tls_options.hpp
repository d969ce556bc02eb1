// f2d2n/transport/tls_options.hpp: the files of a unit's mutual TLS (a cluster CA, the unit's
// certificate and private key), and where the environment names them.
//
//   F2D2N_TLS_CA=/path/ca.pem        the cluster CA's certificate (PEM): a peer must present one it signed
//   F2D2N_TLS_CERT=/path/unit.pem    this unit's certificate (PEM, the chain up to the CA may follow)
//   F2D2N_TLS_KEY=/path/unit.key     its private key (PEM, unencrypted)
//
//   f2d2n::tcp_options o;  o.tls = f2d2n::tls_options_from_environment();  // empty when none is set
//
// With tls set, every connection between units is TLS 1.3 in both directions, each side
// verifying the other's certificate against the CA; the cluster key's proof and the handshake run
// inside it. See docs/security.md.
#pragma once

#include <f2d2n/core/error.hpp>

#include <cstdlib>
#include <optional>
#include <string>

namespace f2d2n {

/// The names of the environment variables the TLS files are read from.
inline constexpr const char* tls_ca_variable = "F2D2N_TLS_CA";
inline constexpr const char* tls_cert_variable = "F2D2N_TLS_CERT";
inline constexpr const char* tls_key_variable = "F2D2N_TLS_KEY";

/// The files of a unit's mutual TLS. Any certificate the CA signed is accepted from a peer: the
/// CA defines the cluster (use one made for it, never a public CA); which rank a peer is stays
/// the business of the cluster key's exchange, which runs inside TLS.
struct tls_options {
  std::string ca_file;           ///< the cluster CA's certificate(s), PEM
  std::string certificate_file;  ///< this unit's certificate, PEM (optionally followed by intermediates)
  std::string private_key_file;  ///< this unit's private key, PEM, not encrypted
};

/// The TLS files named by F2D2N_TLS_CA, F2D2N_TLS_CERT and F2D2N_TLS_KEY; nothing when none is
/// set; configuration_error when only some are.
[[nodiscard]] inline std::optional<tls_options> tls_options_from_environment() {
  const auto get = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v ? v : "");
  };
  tls_options o{get(tls_ca_variable), get(tls_cert_variable), get(tls_key_variable)};
  const int set = !o.ca_file.empty() + !o.certificate_file.empty() + !o.private_key_file.empty();
  if (set == 0) return std::nullopt;
  if (set != 3)
    throw configuration_error(std::string("f2d2n: TLS needs all three of ") + tls_ca_variable + ", " +
                              tls_cert_variable + " and " + tls_key_variable + "; only some are set");
  return o;
}

}  // namespace f2d2n

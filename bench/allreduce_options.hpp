// bench/allreduce_options.hpp: what bench/allreduce_bench.cpp (f2d2n) and
// bench/compare/mpi_allreduce.cpp (Open MPI) share, so that both sides read the same command
// line, run the same number of repetitions and report the same statistic.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstddef>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace allreduce_bench {

struct options {
  std::vector<std::size_t> sizes_mib{1, 4, 16, 64};
  std::size_t repetitions = 0;  // 0: by size
  std::size_t warmup = 2;
  std::size_t chunk_bytes = 0;     // 0: the library's default (f2d2n only)
  std::size_t timeout_ms = 60000;  // f2d2n only
  std::size_t pipeline = SIZE_MAX;  // SIZE_MAX (call_options::transport_pipeline): the transport's (f2d2n only)
  std::string algorithm = "automatic";  // f2d2n only: automatic, ring, halving-doubling
};

/// A whole number of at least `min`; std::invalid_argument naming the option otherwise.
inline std::size_t number(std::string_view name, const std::string& text, std::size_t min) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || text[0] < '0' || text[0] > '9' || *end != '\0' || v < min)
    throw std::invalid_argument(std::string(name) + " wants a whole number of at least " + std::to_string(min) +
                                ", not '" + text + "'");
  return static_cast<std::size_t>(v);
}

/// Parses --sizes-mib, --repetitions, --warmup and, when `transport_options`, --chunk-bytes and
/// --timeout-ms. Throws std::invalid_argument with the reason.
inline options parse(int argc, char** argv, bool transport_options) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument("option " + std::string(a) + " is unknown or lacks its value");
    const std::string v = argv[++i];
    if (a == "--sizes-mib") {
      o.sizes_mib.clear();
      for (std::size_t b = 0; b <= v.size();) {
        const auto c = std::min(v.find(',', b), v.size());
        o.sizes_mib.push_back(number(a, v.substr(b, c - b), 1));
        b = c + 1;
      }
    } else if (a == "--repetitions") {
      o.repetitions = number(a, v, 1);
    } else if (a == "--warmup") {
      o.warmup = number(a, v, 0);
    } else if (transport_options && a == "--chunk-bytes") {
      o.chunk_bytes = number(a, v, 4);
    } else if (transport_options && a == "--timeout-ms") {
      o.timeout_ms = number(a, v, 1);
    } else if (transport_options && a == "--pipeline") {
      o.pipeline = number(a, v, 0);
    } else if (transport_options && a == "--algorithm") {
      if (v != "automatic" && v != "ring" && v != "halving-doubling")
        throw std::invalid_argument("--algorithm is one of automatic, ring, halving-doubling, not '" + v + "'");
      o.algorithm = v;
    } else {
      throw std::invalid_argument("unknown option " + std::string(a));
    }
  }
  return o;
}

/// Timed repetitions for a buffer of `bytes`: about 512 MiB all-reduced per size, 5 to 50 times.
inline std::size_t repetitions_for(std::size_t bytes, const options& o) {
  if (o.repetitions != 0) return o.repetitions;
  return std::clamp<std::size_t>((std::size_t{512} << 20) / bytes, 5, 50);
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

}  // namespace allreduce_bench

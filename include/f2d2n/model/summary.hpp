// f2d2n/model/summary.hpp: a sequential<...> described as plain run-time data: its layers (name,
// extents, parameters), the tensors of its flat parameter buffer as PyTorch's state_dict names them,
// a canonical one-line description and its 64-bit fingerprint. What stored models are checked
// against (store/), and what plan-independent code (a distributed unit's engine) knows of its model.
#pragma once

#include <f2d2n/core/shape.hpp>
#include <f2d2n/model/conv.hpp>
#include <f2d2n/model/layers.hpp>
#include <f2d2n/model/sequential.hpp>

#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL  // xxHash used header-only (Debian: libxxhash-dev)
#endif
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace f2d2n {

/// One layer of a model, as stored descriptions name it.
struct layer_summary {
  std::string name;       ///< the layer's short name ("dense", "relu", ...)
  extents input, output;  ///< its input and output extents (the input layer's input: rank 0)
  std::size_t parameters = 0;
  friend bool operator==(const layer_summary&, const layer_summary&) = default;
};

/// One tensor of a model's flat parameter buffer: a dense layer's weight (rows = neurons, columns =
/// input features, row-major: PyTorch's layout) or bias (one dimension); a convolution's weight
/// (output channels, kernel height, kernel width, input channels: channels-last, PyTorch's
/// weight.permute(0, 2, 3, 1)) or bias; or the whole parameter block of another layer with
/// parameters (one dimension, named "<layer>.parameters"). A tensor is stored as rows (its first
/// dimension) of columns (the product of the others).
struct tensor_summary {
  std::string name;  ///< "<layer index>.weight", "<layer index>.bias", ...
  std::size_t layer = 0;
  std::vector<std::size_t> shape;
  std::size_t offset = 0;  ///< where it starts in the flat parameter buffer
  [[nodiscard]] std::size_t size() const noexcept {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  [[nodiscard]] std::size_t rows() const noexcept { return shape.empty() ? 0 : shape[0]; }
  [[nodiscard]] std::size_t columns() const noexcept {
    std::size_t n = 1;
    for (std::size_t k = 1; k < shape.size(); ++k) n *= shape[k];
    return n;
  }
  friend bool operator==(const tensor_summary&, const tensor_summary&) = default;
};

/// A model as run-time data.
struct model_summary {
  std::vector<layer_summary> layers;
  std::vector<tensor_summary> tensors;  ///< in the order of the flat parameter buffer, covering it
  std::size_t parameter_count = 0;
  /// One line naming every layer with its extents and parameter count, e.g.
  /// "input[]->[28,28]:0 dense[28,28]->[256]:200960 relu[256]->[256]:0 ...".
  std::string description;
  std::uint64_t fingerprint = 0;  ///< XXH3-64 of the description

  /// The tensor of that name, or null.
  [[nodiscard]] const tensor_summary* find(std::string_view name) const noexcept {
    for (const auto& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
};

/// "[28,28]" (rank 0: "[]").
inline std::string to_string(const extents& e) {
  std::string s = "[";
  for (std::size_t i = 0; i < e.rank; ++i) {
    if (i) s += ',';
    s += std::to_string(e.dims[i]);
  }
  s += ']';
  return s;
}

/// The fingerprint of a model description.
[[nodiscard]] inline std::uint64_t description_fingerprint(std::string_view description) noexcept {
  return XXH3_64bits(description.data(), description.size());
}

/// Builds a summary from its layers (the tensors follow: dense layers get weight and bias).
/// `dense[i]`: whether layer i has a dense layer's parameters (N x in weights, then N biases).
/// `kernels[i]` (when given): a convolution's kernel height and width ({0, 0}: not a convolution).
inline model_summary make_model_summary(std::vector<layer_summary> layers, const std::vector<bool>& dense,
                                        const std::vector<std::array<std::size_t, 2>>& kernels = {}) {
  model_summary m;
  m.layers = std::move(layers);
  std::size_t offset = 0;
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const auto& l = m.layers[i];
    if (i) m.description += ' ';
    m.description += l.name;
    m.description += to_string(l.input);
    m.description += "->";
    m.description += to_string(l.output);
    m.description += ':';
    m.description += std::to_string(l.parameters);
    if (l.parameters == 0) continue;
    const std::string index = std::to_string(i);
    const std::array<std::size_t, 2> kernel = i < kernels.size() ? kernels[i] : std::array<std::size_t, 2>{};
    if (dense[i]) {
      const std::size_t n = l.output.size(), in = l.input.size();
      m.tensors.push_back({index + ".weight", i, {n, in}, offset});
      m.tensors.push_back({index + ".bias", i, {n}, offset + n * in});
    } else if (kernel[0] != 0 && l.output.rank == 3) {
      const std::size_t out = l.output.dims[2], in = (l.parameters - out) / (out * kernel[0] * kernel[1]);
      m.tensors.push_back({index + ".weight", i, {out, kernel[0], kernel[1], in}, offset});
      m.tensors.push_back({index + ".bias", i, {out}, offset + out * kernel[0] * kernel[1] * in});
    } else {
      m.tensors.push_back({index + ".parameters", i, {l.parameters}, offset});
    }
    offset += l.parameters;
  }
  m.parameter_count = offset;
  m.fingerprint = description_fingerprint(m.description);
  return m;
}

namespace detail {
/// A convolution's kernel height and width ({0, 0} for any other layer).
template <class L>
constexpr std::array<std::size_t, 2> kernel_of() {
  if constexpr (std::is_base_of_v<conv_kernels, L>) return {L::kernel_window.height, L::kernel_window.width};
  else return {0, 0};
}

template <class Net, std::size_t... I>
model_summary summarize(std::index_sequence<I...>) {
  std::vector<layer_summary> layers{layer_summary{std::string(name_of<typename Net::template layer_at<I>>()),
                                                  Net::input_extents[I], Net::output_extents[I],
                                                  Net::parameter_counts[I]}...};
  const std::vector<bool> dense{std::is_base_of_v<dense_kernels, typename Net::template layer_at<I>>...};
  const std::vector<std::array<std::size_t, 2>> kernels{kernel_of<typename Net::template layer_at<I>>()...};
  return make_model_summary(std::move(layers), dense, kernels);
}
}  // namespace detail

/// The summary of a sequential<...> (built once).
template <network_type Net>
const model_summary& summary_of() {
  static const model_summary s = detail::summarize<Net>(std::make_index_sequence<Net::size>{});
  return s;
}

/// The first difference between two model descriptions, in words ("layer 3 is
/// dense[256]->[128]:32896 in the model, dense[256]->[64]:16448 in the stored one"); empty exactly
/// when they are the same.
inline std::string describe_difference(std::string_view expected, std::string_view found) {
  auto split = [](std::string_view s) {
    std::vector<std::string_view> parts;
    while (!s.empty()) {
      const auto space = s.find(' ');
      parts.push_back(s.substr(0, space));
      if (space == std::string_view::npos) break;
      s.remove_prefix(space + 1);
    }
    return parts;
  };
  const auto a = split(expected), b = split(found);
  const std::size_t n = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i)
    if (a[i] != b[i])
      return "layer " + std::to_string(i) + " is " + std::string(a[i]) + " in the model, " + std::string(b[i]) +
             " in the stored one";
  if (a.size() != b.size())
    return "the model has " + std::to_string(a.size()) + " layers, the stored one " + std::to_string(b.size());
  // The same layers, yet other text: one ends in a space (split drops a last empty word). Still
  // another description: empty would let a load take it for the model's, and leave a mismatch
  // message that names nothing.
  if (expected != found) return "the stored description differs from the model's in its spaces";
  return {};
}

}  // namespace f2d2n

// f2d2n/model/sequential.hpp: a network as one flat type list, its shapes and parameter layout
// computed at compile time, each layer checked by its own static_assert.
#pragma once

#include <f2d2n/core/shape.hpp>
#include <f2d2n/model/layers.hpp>

#include <boost/mp11/algorithm.hpp>
#include <boost/mp11/list.hpp>

#include <array>
#include <cstddef>
#include <string_view>
#include <type_traits>
#include <utility>

namespace f2d2n {

/// A layer specification: what sequential<...> accepts (see model/layers.hpp for the members).
template <class L>
concept layer = requires(extents e) {
  { L::kind } -> std::convertible_to<layer_kind>;
  { L::output(e) } -> std::same_as<extents>;
  { L::parameter_count(e) } -> std::convertible_to<std::size_t>;
};

namespace detail {

template <class L>
/// A layer's short name (part of fingerprints and stored model descriptions).
constexpr std::string_view name_of() {
  if constexpr (requires { L::name; }) {
    return L::name;
  } else {
    // A user's layer without a name: the compiler's spelling of its type (so units built by
    // different compilers disagree on the fingerprint of a plan that uses it; give it a name).
    return std::string_view(__PRETTY_FUNCTION__);
  }
}

template <std::size_t Size>
struct sequential_layout {
  std::array<extents, Size> in{};
  std::array<extents, Size> out{};
  std::array<std::size_t, Size> parameter_count{};
  std::array<std::size_t, Size> parameter_offset{};
  std::size_t total_parameters = 0;
};

template <class... Layers>
constexpr auto compute_layout() {
  constexpr std::size_t size = sizeof...(Layers);
  sequential_layout<size> r{};
  if constexpr (!(layer<Layers> && ...)) {
    return r;  // sequential's own static_assert names the problem
  } else {
    using output_fn = extents (*)(extents);
    using count_fn = std::size_t (*)(extents);
    constexpr output_fn outputs[] = {&Layers::output...};
    constexpr count_fn counts[] = {&Layers::parameter_count...};
    extents current{};
    for (std::size_t i = 0; i < size; ++i) {
      // A layer whose input is already broken (an error reported upstream) gets and passes on "no
      // shape" (rank 0), which its checks accept, so that one mistake gives one error.
      if (!current.valid()) current = extents{};
      r.in[i] = current;
      r.out[i] = (i == 0 || current.valid()) ? outputs[i](current) : extents{};
      r.parameter_count[i] = (i == 0 || current.valid()) ? counts[i](current) : 0;
      r.parameter_offset[i] = r.total_parameters;
      r.total_parameters += r.parameter_count[i];
      current = r.out[i];
    }
    return r;
  }
}

}  // namespace detail

/// A network: input<...>, then layers, then a loss; all as one flat list of types.
///   using mlp = sequential<input<784>, dense<256>, relu, dense<10>, softmax_cross_entropy>;
template <class... Layers>
struct sequential {
  static_assert((layer<Layers> && ...),
                "f2d2n: every argument of sequential<...> must be a layer (see the f2d2n::layer concept)");
  static_assert(
      sizeof...(Layers) >= 2,
      "f2d2n: sequential<...> needs at least input<...> and a loss, e.g. sequential<input<4>, dense<2>, softmax_cross_entropy>");

  using layers = boost::mp11::mp_list<Layers...>;
  static constexpr std::size_t size = sizeof...(Layers);

  static_assert(boost::mp11::mp_front<layers>::kind == layer_kind::input,
                "f2d2n: layer 0 of a sequential must be input<...>: the network has no input shape");
  static_assert(boost::mp11::mp_back<layers>::kind == layer_kind::loss,
                "f2d2n: the last layer of a sequential must be a loss (softmax_cross_entropy or mean_squared_error)");

  /// The layer specification at index I (index 0 is the input).
  template <std::size_t I>
  using layer_at = boost::mp11::mp_at_c<layers, I>;

 private:
  static constexpr auto layout_ = detail::compute_layout<Layers...>();

 public:
  /// Input and output extents of layer i (the input layer's input is rank 0: none).
  static constexpr std::array<extents, size> input_extents = layout_.in;
  static constexpr std::array<extents, size> output_extents = layout_.out;
  /// Parameters of layer i and where they start in the flat parameter buffer.
  static constexpr std::array<std::size_t, size> parameter_counts = layout_.parameter_count;
  static constexpr std::array<std::size_t, size> parameter_offsets = layout_.parameter_offset;
  static constexpr std::size_t parameter_count = layout_.total_parameters;

  static constexpr extents input_shape = output_extents[0];
  static constexpr std::size_t input_size = input_shape.size();
  /// What the layer before the loss produces: logits, or the regression output.
  static constexpr extents output_shape = output_extents[size - 1];
  static constexpr std::size_t output_size = output_shape.size();

  /// The widest activation of any layer (sizes work buffers).
  static constexpr std::size_t max_width = [] {
    std::size_t w = 0;
    for (const auto& e : layout_.out) w = e.size() > w ? e.size() : w;
    return w;
  }();

 private:
  template <std::size_t I, std::size_t... K>
  static auto check_type(std::index_sequence<K...>) ->
      typename layer_at<I>::template at_layer<I, I + 1 == size, input_extents[I].dims[K]...>;

  template <std::size_t I>
  using check_at = decltype(check_type<I>(std::make_index_sequence<input_extents[I].rank>{}));

  template <std::size_t... I>
  static constexpr bool check_all(std::index_sequence<I...>) {
    // An array initialiser, not a fold: no bracket-depth limit for long networks.
    constexpr bool results[] = {check_at<I>::ok...};
    for (bool r : results)
      if (!r) return false;
    return true;
  }

 public:
  /// True when every layer passed its own checks (each failed check is a compile error first).
  static constexpr bool checked = [] {
    if constexpr ((layer<Layers> && ...)) return check_all(std::make_index_sequence<size>{});
    else return false;  // reported by the static_assert at the top
  }();
};

template <class T>
inline constexpr bool is_sequential_v = false;
template <class... L>
inline constexpr bool is_sequential_v<sequential<L...>> = true;

/// A sequential<...> type.
template <class T>
concept network_type = is_sequential_v<T>;

}  // namespace f2d2n

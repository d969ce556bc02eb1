// f2d2n/store/dtype.hpp: the names stored files give scalar types (safetensors' dtypes, which
// checkpoint manifests use too).
#pragma once

#include <string_view>
#include <type_traits>

namespace f2d2n {

/// The safetensors dtype of a scalar type: "F32" for float, "F64" for double.
template <class S>
constexpr std::string_view safetensors_dtype() {
  static_assert(std::is_same_v<S, float> || std::is_same_v<S, double>,
                "f2d2n: stored files hold float (F32) or double (F64) values");
  return std::is_same_v<S, float> ? "F32" : "F64";
}

}  // namespace f2d2n

// A split named for a layer without weights: layer 2 is relu.
#include <f2d2n/plan.hpp>
namespace nn = f2d2n;
using mlp = nn::sequential<nn::input<16>, nn::dense<8>, nn::relu, nn::dense<2>, nn::softmax_cross_entropy>;
using plan = nn::distribute<mlp, nn::tensor_parallel<2, nn::by_outputs, nn::split_layer<2, nn::by_inputs>>>;
[[maybe_unused]] constexpr std::size_t held = plan::unit<1>::parameter_count;
int main() {}

// A 2 x 3 grid over 4 shards.
#include <f2d2n/plan.hpp>
namespace nn = f2d2n;
using mlp = nn::sequential<nn::input<16>, nn::dense<8>, nn::relu, nn::dense<4>, nn::softmax_cross_entropy>;
using plan = nn::distribute<mlp, nn::tensor_parallel<4, nn::by_grid<2, 3>>>;
[[maybe_unused]] constexpr auto first = plan::unit<0>::coordinates;  // any use runs the checks
int main() {}

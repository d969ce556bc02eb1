// More stages than hidden layers: 3 hidden layers over 4 stages.
#include <f2d2n/plan.hpp>
namespace nn = f2d2n;
using mlp = nn::sequential<nn::input<16>, nn::dense<8>, nn::relu, nn::dense<2>, nn::softmax_cross_entropy>;
using plan = nn::distribute<mlp, nn::pipeline<4>>;
[[maybe_unused]] constexpr auto starts = plan::stage_begin;
int main() {}

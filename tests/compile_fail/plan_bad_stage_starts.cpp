// stage_starts<...> not increasing.
#include <f2d2n/plan.hpp>
namespace nn = f2d2n;
using mlp = nn::sequential<nn::input<16>, nn::dense<8>, nn::relu, nn::dense<4>, nn::tanh, nn::dense<2>,
                           nn::softmax_cross_entropy>;
using plan = nn::distribute<mlp, nn::pipeline<3, nn::microbatches<2>, nn::gpipe, nn::stage_starts<4, 3>>>;
[[maybe_unused]] constexpr std::size_t units = plan::world_size;  // any use runs the checks
int main() {}

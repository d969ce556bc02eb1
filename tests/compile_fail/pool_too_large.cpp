// A 5 x 5 pooling window over a 4 x 4 x 2 map, at index 2.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<6, 6, 1>, nn::conv2d<2, 3>, nn::max_pool<5>, nn::flatten, nn::dense<2>,
                           nn::softmax_cross_entropy>;
static_assert(bad::checked);
int main() {}

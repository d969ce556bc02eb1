// A 7 x 7 kernel over a 4 x 4 image without padding, at index 2.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<4, 4, 1>, nn::relu, nn::conv2d<2, 7>, nn::flatten, nn::dense<2>,
                           nn::softmax_cross_entropy>;
static_assert(bad::checked);
int main() {}

// A convolution with no output channels, at index 1.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<8, 8, 3>, nn::conv2d<0, 3>, nn::flatten, nn::dense<2>, nn::softmax_cross_entropy>;
static_assert(bad::checked);
int main() {}

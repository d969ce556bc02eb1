// A convolution whose stride is 0, at index 1.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<8, 8>, nn::conv2d<2, 3, 0>, nn::flatten, nn::dense<2>, nn::softmax_cross_entropy>;
static_assert(bad::checked);
int main() {}

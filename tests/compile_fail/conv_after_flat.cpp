// A convolution after a dense layer (flat features), with no reshape between them: index 2.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<8, 8>, nn::dense<64>, nn::conv2d<4, 3>, nn::flatten, nn::dense<2>,
                           nn::softmax_cross_entropy>;
static_assert(bad::checked);
int main() {}

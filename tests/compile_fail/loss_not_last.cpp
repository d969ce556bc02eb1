// A loss in the middle of the network, at index 2.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<4>, nn::dense<3>, nn::softmax_cross_entropy, nn::dense<2>, nn::mean_squared_error>;
static_assert(bad::checked);
int main() {}

// A second input layer, at index 2.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<4>, nn::dense<3>, nn::input<3>, nn::dense<2>, nn::softmax_cross_entropy>;
static_assert(bad::checked);
int main() {}

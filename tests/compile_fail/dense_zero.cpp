// A dense layer with no neurons, at index 3.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<4>, nn::dense<8>, nn::relu, nn::dense<0>, nn::softmax_cross_entropy>;
static_assert(bad::checked);
int main() {}

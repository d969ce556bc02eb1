// A network's scalar must be a floating-point type: network<model, int> would train nothing.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using good = nn::sequential<nn::input<4>, nn::dense<8>, nn::relu, nn::dense<2>, nn::softmax_cross_entropy>;
int main() { nn::network<good, int> n(1); }

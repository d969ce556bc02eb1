// Instantiating a network of a broken model reports the layer even without static_assert(checked).
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<4>, nn::dense<0>, nn::softmax_cross_entropy>;
int main() { nn::network<bad> n(1); }

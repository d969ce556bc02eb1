// reshape<27, 28> of a 784-feature input, at index 1.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<784>, nn::reshape<27, 28>, nn::dense<10>, nn::softmax_cross_entropy>;
static_assert(bad::checked);
int main() {}

// Dropout that would drop every value.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<8>, nn::dense<4>, nn::dropout<1.0>, nn::dense<2>, nn::softmax_cross_entropy>;
static_assert(bad::checked);
int main() {}

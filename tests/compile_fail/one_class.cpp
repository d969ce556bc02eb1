// softmax cross-entropy over a single output, at index 2.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<4>, nn::dense<1>, nn::softmax_cross_entropy>;
static_assert(bad::checked);
int main() {}

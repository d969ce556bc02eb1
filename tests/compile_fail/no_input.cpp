// A network without input<...>.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::dense<3>, nn::softmax_cross_entropy>;
static_assert(bad::checked);
int main() {}

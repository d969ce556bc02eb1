// A network that does not end with a loss.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<4>, nn::dense<3>, nn::relu>;
static_assert(bad::checked);
int main() {}

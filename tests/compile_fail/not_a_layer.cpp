// Something that is not a layer in the list.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using bad = nn::sequential<nn::input<4>, int, nn::softmax_cross_entropy>;
static_assert(bad::checked);
int main() {}

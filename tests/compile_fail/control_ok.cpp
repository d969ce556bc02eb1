// Control: a correct model compiles with the same command, so failures above are the checks' own.
#include <f2d2n/model.hpp>
namespace nn = f2d2n;
using good = nn::sequential<nn::input<1, 28, 28>, nn::reshape<28, 28>, nn::flatten, nn::dense<8>, nn::relu,
                            nn::dense<2>, nn::softmax_cross_entropy>;
static_assert(good::checked);
int main() { nn::network<good> n(1); }

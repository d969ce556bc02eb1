// More shards than neurons: layer 3 (dense<2>) split by outputs over 4 shards.
#include <f2d2n/plan.hpp>
namespace nn = f2d2n;
using mlp = nn::sequential<nn::input<16>, nn::dense<8>, nn::relu, nn::dense<2>, nn::softmax_cross_entropy>;
using plan = nn::distribute<mlp, nn::tensor_parallel<4>>;
[[maybe_unused]] constexpr std::size_t units = plan::world_size;
int main() {}

// A convolution split by a grid of output and input channels (not built): layer 1 over 2 x 2 shards.
#include <f2d2n/train/distributed_network.hpp>
#include <f2d2n/transport/local.hpp>
namespace nn = f2d2n;
using cnn = nn::sequential<nn::input<8, 8, 2>, nn::conv2d<4, 3, 1, 1>, nn::relu, nn::flatten, nn::dense<4>,
                           nn::softmax_cross_entropy>;
using plan = nn::distribute<cnn, nn::tensor_parallel<4, nn::by_outputs, nn::split_layer<1, nn::by_grid<2, 2>>>>;
// Constructing a unit of it runs the plan's checks: the split's error is the only one.
int main() {
  f2d2n::local_cluster cluster(4, 0);
  cluster.run([](f2d2n::local_transport& t) { nn::distributed_network<plan, f2d2n::local_transport> unit(t); });
}

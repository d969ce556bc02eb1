// More shards than input channels: the convolution at layer 4 (3 input channels) split by inputs
// over 4 shards.
#include <f2d2n/train/distributed_network.hpp>
#include <f2d2n/transport/local.hpp>
namespace nn = f2d2n;
using cnn = nn::sequential<nn::input<8, 8, 1>, nn::conv2d<3, 3, 1, 1>, nn::relu, nn::max_pool<2>, nn::conv2d<8, 3>,
                           nn::flatten, nn::dense<4>, nn::softmax_cross_entropy>;
using plan = nn::distribute<cnn, nn::tensor_parallel<4, nn::by_outputs, nn::split_layer<4, nn::by_inputs>>>;
// Constructing a unit of it runs the plan's checks: the split's error is the only one.
int main() {
  f2d2n::local_cluster cluster(4, 0);
  cluster.run([](f2d2n::local_transport& t) { nn::distributed_network<plan, f2d2n::local_transport> unit(t); });
}

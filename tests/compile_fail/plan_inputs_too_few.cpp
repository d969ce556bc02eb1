// More shards than input features: layer 1 (3 inputs) split by inputs over 4 shards.
#include <f2d2n/train/distributed_network.hpp>
#include <f2d2n/transport/local.hpp>
namespace nn = f2d2n;
using mlp = nn::sequential<nn::input<3>, nn::dense<8>, nn::relu, nn::dense<4>, nn::softmax_cross_entropy>;
using plan = nn::distribute<mlp, nn::tensor_parallel<4, nn::by_inputs>>;
// Constructing a unit of it runs the plan's checks: the split's error is the only one.
int main() {
  f2d2n::local_cluster cluster(4, 0);
  cluster.run([](f2d2n::local_transport& t) { nn::distributed_network<plan, f2d2n::local_transport> unit(t); });
}

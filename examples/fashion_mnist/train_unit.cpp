// The training of fashion_mnist_cluster's units, in a file of its own: checkpoints and the model's
// export compile once here, not beside the plans of cluster.cpp (every plan's unit runs the same
// engine, so one instantiation serves them all).
#include "train.hpp"

#include <f2d2n/transport/any.hpp>

namespace example {

int train_unit(f2d2n::processing_unit<f2d2n::any_transport, float>& unit, const settings& s, const data& d, bool report,
               const std::string& metrics) {
  return train_and_report(unit, s, d, report, metrics);
}

}  // namespace example

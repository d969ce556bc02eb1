// f2d2n/model/network.hpp: a sequential<...> made concrete: one flat parameter buffer, one flat
// gradient buffer, activation buffers, forward and backward passes; Boost.Serialization of the
// parameters (the archive types are the user's choice: this header includes only the light
// serialization headers that serialize() needs).
#pragma once

#include <f2d2n/core/error.hpp>
#include <f2d2n/model/layers.hpp>
#include <f2d2n/model/sequential.hpp>
#include <f2d2n/model/summary.hpp>
#include <f2d2n/model/tensor.hpp>

#include <boost/mp11/algorithm.hpp>
#include <boost/serialization/array_wrapper.hpp>
#include <boost/serialization/nvp.hpp>
#include <boost/serialization/split_member.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/version.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace f2d2n {

/// Loss and correct predictions over one batch.
struct batch_result {
  double loss = 0;          ///< mean loss over the batch
  std::size_t correct = 0;  ///< samples whose largest output is at their label
  std::size_t samples = 0;
};

namespace detail {
template <class Layer, class Next>
using resolved_initializer =
    std::conditional_t<std::is_same_v<typename Layer::initializer, auto_init>,
                       std::conditional_t<std::is_same_v<Next, relu>, he_uniform, xavier_uniform>,
                       typename Layer::initializer>;

template <class L>
concept has_initializer = requires {
  typename L::initializer;
};

/// What the network calls on a hidden layer: plain function pointers, one instantiation per
/// layer type and scalar, however deep the network (compile time stays linear and small).
template <class S>
struct layer_ops {
  void (*forward)(kernel::workspace<S>&, const S*, const_matrix_ref<S>, matrix_ref<S>) = nullptr;
  void (*backward)(kernel::workspace<S>&, const S*, S*, const_matrix_ref<S>, const_matrix_ref<S>, const_matrix_ref<S>,
                   matrix_ref<S>, bool) = nullptr;
  void (*initialize)(std::span<S>, std::size_t, std::uint64_t, std::uint64_t) = nullptr;
};

template <class S, class L, class Next>
constexpr layer_ops<S> ops_of() {
  layer_ops<S> ops;
  if constexpr (L::kind == layer_kind::hidden) {
    ops.forward = &L::template forward<S>;
    ops.backward = &L::template backward<S>;
  }
  if constexpr (has_initializer<L>) ops.initialize = &L::template initialize<S, resolved_initializer<L, Next>>;
  return ops;
}

template <class S, class... L, class... Next>
constexpr auto ops_table(boost::mp11::mp_list<L...>, boost::mp11::mp_list<Next...>) {
  return std::array<layer_ops<S>, sizeof...(L)>{ops_of<S, L, Next>()...};
}

/// The layer after each layer (the last one's "next" is itself; only initialisers look at it).
template <class Layers>
using next_layers = boost::mp11::mp_push_back<boost::mp11::mp_pop_front<Layers>, boost::mp11::mp_back<Layers>>;

/// Number of rows whose arg-max column equals the label.
template <class S>
std::size_t count_correct(const_matrix_ref<S> outputs, std::span<const std::int32_t> labels) {
  std::size_t correct = 0;
  for (Eigen::Index r = 0; r < outputs.rows(); ++r) {
    Eigen::Index best = 0;
    outputs.row(r).maxCoeff(&best);
    correct += best == labels[static_cast<std::size_t>(r)];
  }
  return correct;
}
}  // namespace detail

/// The concrete model of a sequential<...> type in scalar type Scalar (float by default; double
/// for gradient checks; a floating-point type in any case). Parameters and gradients each live in
/// one flat buffer, layer after layer, in the order of sequential::parameter_offsets.
template <network_type Net, class Scalar = float>
class network {
  static_assert(std::is_floating_point_v<Scalar>,
                "f2d2n: network<model, Scalar> needs a floating-point Scalar (float or double): with an integer "
                "type every weight would round to zero and nothing would train");
  static_assert(Net::checked);

 public:
  using sequence = Net;
  using scalar = Scalar;
  static constexpr std::size_t layer_count = Net::size;
  static constexpr std::size_t parameter_count = Net::parameter_count;
  static constexpr std::size_t input_size = Net::input_size;
  static constexpr std::size_t output_size = Net::output_size;

  /// Features of a sample and outputs of the model (the classes of softmax_cross_entropy): what
  /// the trainer checks data against, as a distributed unit reports them.
  [[nodiscard]] static constexpr std::size_t features() noexcept { return input_size; }
  [[nodiscard]] static constexpr std::size_t classes() noexcept { return output_size; }

  /// A network initialised from `seed` (He or Xavier uniform weights, zero biases).
  explicit network(std::uint64_t seed = 0)
      : params_(parameter_count), grads_(parameter_count), workspaces_(layer_count) {
    params_.setZero();
    grads_.setZero();
    for (std::size_t i = 0; i < layer_count; ++i) {
      auto& c = workspaces_[i].context;
      c.in = Net::input_extents[i];
      c.out = Net::output_extents[i];
      c.layer = i;
    }
    initialize(seed);
  }

  /// Re-initialises every parameter from `seed`. Weight k of layer i is a pure function of
  /// (seed, i, k), so a unit holding any slice of a layer can draw exactly that slice.
  void initialize(std::uint64_t seed) {
    seed_ = seed;
    for (std::size_t i = 0; i < layer_count; ++i)
      if (ops_[i].initialize) ops_[i].initialize(layer_parameters(i), Net::input_extents[i].size(), seed, i);
  }

  [[nodiscard]] std::span<Scalar> parameters() noexcept { return {params_.data(), parameter_count}; }
  [[nodiscard]] std::span<const Scalar> parameters() const noexcept { return {params_.data(), parameter_count}; }
  [[nodiscard]] std::span<Scalar> gradients() noexcept { return {grads_.data(), parameter_count}; }
  [[nodiscard]] std::span<const Scalar> gradients() const noexcept { return {grads_.data(), parameter_count}; }

  /// Layer i's slice of the flat parameter buffer (empty for parameter-free layers).
  [[nodiscard]] std::span<Scalar> layer_parameters(std::size_t i) noexcept {
    return parameters().subspan(Net::parameter_offsets[i], Net::parameter_counts[i]);
  }
  [[nodiscard]] std::span<const Scalar> layer_parameters(std::size_t i) const noexcept {
    return parameters().subspan(Net::parameter_offsets[i], Net::parameter_counts[i]);
  }
  [[nodiscard]] std::span<Scalar> layer_gradients(std::size_t i) noexcept {
    return gradients().subspan(Net::parameter_offsets[i], Net::parameter_counts[i]);
  }

  /// The model's prediction for a batch (rows = samples): probabilities for softmax_cross_entropy.
  /// The view stays valid until the next call on this network.
  const_matrix_ref<Scalar> predict(const_matrix_ref<Scalar> x) {
    check_batch(x);
    set_pass(false);
    forward_hidden(x);
    auto out = buffer(layer_count - 1, x.rows());
    using Loss = typename Net::template layer_at<layer_count - 1>;
    Loss::template forward<Scalar>(nullptr, last_hidden(x), out);
    return out;
  }

  /// Forward, loss and backward for one batch: gradients() is overwritten with d(mean loss)/d(params).
  batch_result compute_gradients(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels) {
    check_batch(x, labels);
    const auto rows = x.rows();
    set_pass(true);
    ++training_steps_;
    forward_hidden(x);
    using Loss = typename Net::template layer_at<layer_count - 1>;
    const auto logits = last_hidden(x);
    batch_result r;
    r.samples = static_cast<std::size_t>(rows);
    r.correct = detail::count_correct<Scalar>(logits, labels);
    auto grad = gradient_buffer(0, rows, Net::output_size);
    r.loss = static_cast<double>(Loss::template loss<Scalar>(logits, labels, grad));
    backward_hidden(x);
    return r;
  }

  /// Loss and correct predictions for one batch, without touching the gradients.
  batch_result evaluate_batch(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels) {
    check_batch(x, labels);
    set_pass(false);
    forward_hidden(x);
    using Loss = typename Net::template layer_at<layer_count - 1>;
    const auto logits = last_hidden(x);
    batch_result r;
    r.samples = static_cast<std::size_t>(x.rows());
    r.correct = detail::count_correct<Scalar>(logits, labels);
    auto scratch = gradient_buffer(0, x.rows(), Net::output_size);
    r.loss = static_cast<double>(Loss::template loss<Scalar>(logits, labels, scratch));
    return r;
  }

  /// Training steps (compute_gradients calls) taken since construction or set_training_steps:
  /// what keys the random numbers of layers such as dropout (core/layer_context.hpp).
  [[nodiscard]] std::uint64_t training_steps() const noexcept { return training_steps_; }
  /// Sets the count of training steps taken (a run resumed at a given step draws the masks the
  /// uninterrupted run drew).
  void set_training_steps(std::uint64_t steps) noexcept { training_steps_ = steps; }

  /// The class version Boost.Serialization archives record (raise it when serialize changes).
  static constexpr unsigned serialization_version = 1;

 private:
  friend class boost::serialization::access;

  /// Boost.Serialization (text, XML, binary archives): the scalar's size, the model's description
  /// and fingerprint, the parameter count and the parameters (not gradients or activations).
  /// Loading checks the model before it reads the parameters into a temporary, and copies them
  /// only when all is read: storage_error (model_mismatch, naming the first differing layer) for
  /// another model or scalar type, and the network unchanged on any error.
  BOOST_SERIALIZATION_SPLIT_MEMBER()

  template <class Archive>
  void save(Archive& ar, const unsigned int /*version*/) const {
    using boost::serialization::make_nvp;
    const model_summary& model = summary_of<Net>();
    const std::uint32_t scalar_size = sizeof(Scalar);
    const std::uint64_t fingerprint = model.fingerprint, count = parameter_count;
    ar << make_nvp("scalar_size", scalar_size) << make_nvp("model", model.description)
       << make_nvp("fingerprint", fingerprint) << make_nvp("parameter_count", count)
       << make_nvp("parameters", boost::serialization::make_array(params_.data(), parameter_count));
  }

  template <class Archive>
  void load(Archive& ar, const unsigned int version) {
    using boost::serialization::make_nvp;
    static constexpr const char* where = "Boost.Serialization archive of a network";
    if (version != serialization_version)
      throw storage_error(where, storage_problem::bad_format,
                          "class version " + std::to_string(version) + ", this build reads version " +
                              std::to_string(serialization_version));
    std::uint32_t scalar_size = 0;
    std::string description;
    std::uint64_t fingerprint = 0, count = 0;
    ar >> make_nvp("scalar_size", scalar_size) >> make_nvp("model", description) >>
        make_nvp("fingerprint", fingerprint) >> make_nvp("parameter_count", count);
    const model_summary& model = summary_of<Net>();
    if (description != model.description)
      throw storage_error(where, storage_problem::model_mismatch,
                          "the archive holds another model: " + describe_difference(model.description, description));
    if (scalar_size != sizeof(Scalar))
      throw storage_error(where, storage_problem::model_mismatch,
                          "the archive's parameters are " + std::to_string(scalar_size) +
                              "-byte scalars, this network's " + std::to_string(sizeof(Scalar)) + "-byte");
    if (fingerprint != model.fingerprint || count != parameter_count)
      throw storage_error(where, storage_problem::corrupt,
                          "the model's fingerprint or parameter count does not match its description");
    std::vector<Scalar> loaded(parameter_count);
    ar >> make_nvp("parameters", boost::serialization::make_array(loaded.data(), parameter_count));
    std::copy(loaded.begin(), loaded.end(), params_.data());
  }

  /// Tells every layer what pass comes: a training step (the count before it) or an evaluation.
  void set_pass(bool training) noexcept {
    for (auto& w : workspaces_) {
      w.context.training = training;
      w.context.step = training_steps_;
      w.context.seed = seed_;
    }
  }

  void check_batch(const_matrix_ref<Scalar> x) const {
    if (static_cast<std::size_t>(x.cols()) != input_size)
      throw configuration_error("f2d2n: network input has " + std::to_string(x.cols()) +
                                " features per sample, the model expects " + std::to_string(input_size));
  }
  void check_batch(const_matrix_ref<Scalar> x, std::span<const std::int32_t> labels) const {
    check_batch(x);
    if (labels.size() != static_cast<std::size_t>(x.rows()))
      throw configuration_error("f2d2n: batch has " + std::to_string(x.rows()) + " samples but " +
                                std::to_string(labels.size()) + " labels");
    for (auto l : labels)
      if (l < 0 || static_cast<std::size_t>(l) >= output_size)
        throw configuration_error("f2d2n: label " + std::to_string(l) + " is outside the model's " +
                                  std::to_string(output_size) + " outputs");
  }

  /// Activation buffer of layer i, `rows` rows (grown on demand, never shrunk).
  matrix_ref<Scalar> buffer(std::size_t i, Eigen::Index rows) {
    if (acts_.size() != layer_count) acts_.resize(layer_count);
    auto& m = acts_[i];
    const auto cols = static_cast<Eigen::Index>(Net::output_extents[i].size());
    if (m.rows() < rows || m.cols() != cols) m.resize(rows, cols);
    return m.topRows(rows);
  }
  matrix_ref<Scalar> gradient_buffer(std::size_t which, Eigen::Index rows, std::size_t cols) {
    auto& m = dgrad_[which];
    if (m.rows() < rows || static_cast<std::size_t>(m.cols()) < Net::max_width) m.resize(rows, Net::max_width);
    // A row-major block of the leading columns would not be contiguous; use the storage as rows x cols.
    return matrix_map<Scalar>(m.data(), rows, static_cast<Eigen::Index>(cols));
  }

  const_matrix_ref<Scalar> activation(std::size_t i, const_matrix_ref<Scalar> x) const {
    if (i == 0) return x;
    return acts_[i].topRows(x.rows());
  }
  const_matrix_ref<Scalar> last_hidden(const_matrix_ref<Scalar> x) const { return activation(layer_count - 2, x); }

  void forward_hidden(const_matrix_ref<Scalar> x) {
    for (std::size_t i = 1; i + 1 < layer_count; ++i)
      ops_[i].forward(workspaces_[i], params_.data() + Net::parameter_offsets[i], activation(i - 1, x),
                      buffer(i, x.rows()));
  }

  /// Walks hidden layers from last to first; the loss gradient is in dgrad_[0] on entry.
  void backward_hidden(const_matrix_ref<Scalar> x) {
    const auto rows = x.rows();
    std::size_t current = 0;
    for (std::size_t i = layer_count - 2; i >= 1; --i) {
      auto dy = gradient_buffer(current, rows, Net::output_extents[i].size());
      auto dx = gradient_buffer(1 - current, rows, Net::input_extents[i].size());
      ops_[i].backward(workspaces_[i], params_.data() + Net::parameter_offsets[i],
                       grads_.data() + Net::parameter_offsets[i],
                       activation(i - 1, x), activation(i, x), dy, dx, /*want_dx=*/i > 1);
      current = 1 - current;
    }
  }

  static constexpr auto ops_ =
      detail::ops_table<Scalar>(typename Net::layers{}, detail::next_layers<typename Net::layers>{});

  vector<Scalar> params_;
  vector<Scalar> grads_;
  std::vector<matrix<Scalar>> acts_;
  matrix<Scalar> dgrad_[2];
  std::vector<kernel::workspace<Scalar>> workspaces_;  // each layer's kernels, per shape seen (kernel/gemm.hpp)
  std::uint64_t seed_ = 0;
  std::uint64_t training_steps_ = 0;
};

}  // namespace f2d2n

/// Archives record network<Net, Scalar>'s class version (a class template: a partial
/// specialization, as BOOST_CLASS_VERSION cannot name one).
template <f2d2n::network_type Net, class Scalar>
struct boost::serialization::version<f2d2n::network<Net, Scalar>> {
  using tag = boost::mpl::integral_c_tag;
  using type = boost::mpl::int_<f2d2n::network<Net, Scalar>::serialization_version>;
  static constexpr int value = type::value;
};

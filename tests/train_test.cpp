// Train area: optimizer steps against hand-computed values, the trainer's reports and callbacks,
// determinism, and a short training run on real Fashion-MNIST data that must reach a stated accuracy.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <f2d2n/f2d2n.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

namespace nn = f2d2n;

TEST_CASE("sgd with momentum and weight decay, two steps by hand") {
  std::vector<double> w{1.0, -2.0};
  const std::vector<double> g{0.5, 0.25};
  nn::optimizer<double, nn::sgd> opt(nn::sgd{.learning_rate = 0.1, .momentum = 0.9, .weight_decay = 0.01});
  opt.step(w, g);
  // g' = g + 0.01 w = (0.51, 0.23); v = g'; w -= 0.1 v
  CHECK(w[0] == doctest::Approx(0.949).epsilon(1e-12));
  CHECK(w[1] == doctest::Approx(-2.023).epsilon(1e-12));
  opt.step(w, g);
  // g' = (0.50949, 0.22977); v = 0.9 (0.51, 0.23) + g' = (0.96849, 0.43677)
  CHECK(w[0] == doctest::Approx(0.852151).epsilon(1e-12));
  CHECK(w[1] == doctest::Approx(-2.066677).epsilon(1e-12));
  CHECK(opt.steps() == 2);
}

TEST_CASE("plain sgd") {
  std::vector<float> w{1.0f};
  const std::vector<float> g{2.0f};
  nn::optimizer<float, nn::sgd> opt(nn::sgd{.learning_rate = 0.25});
  opt.step(w, g);
  CHECK(w[0] == 0.5f);
}

TEST_CASE("adam, two steps by hand, with and without weight decay") {
  std::vector<double> w{1.0};
  const std::vector<double> g{0.5};
  nn::optimizer<double, nn::adam> opt(nn::adam{.learning_rate = 0.1});
  opt.step(w, g);
  // m = 0.05, v = 0.00025; m^ = 0.5, v^ = 0.25: w = 1 - 0.1 * 0.5 / (0.5 + 1e-8)
  CHECK(w[0] == doctest::Approx(1 - 0.1 * 0.5 / (0.5 + 1e-8)).epsilon(1e-12));
  opt.step(w, g);
  // m = 0.095, v = 0.00049975; corrections 0.19 and 0.001999 give m^ = 0.5, v^ = 0.25 again
  CHECK(w[0] == doctest::Approx(1 - 2 * 0.1 * 0.5 / (0.5 + 1e-8)).epsilon(1e-9));

  std::vector<double> u{1.0};
  nn::optimizer<double, nn::adam> decayed(nn::adam{.learning_rate = 0.1, .weight_decay = 0.1});
  decayed.step(u, g);  // g' = 0.5 + 0.1 * 1 = 0.6
  CHECK(u[0] == doctest::Approx(1 - 0.1 * 0.6 / (0.6 + 1e-8)).epsilon(1e-12));
}

TEST_CASE("an optimizer's update of a parameter does not depend on where the parameter is") {
  // Copies of one parameter sit at different offsets on different units (a replicated bias); a
  // vectorised update whose SIMD and scalar iterations rounded differently would make them part
  // (as Eigen's approximate float sqrt did). The same 2500 values at offset 0 and at offset 13,
  // ten steps of each optimizer, must stay bit for bit the same; the square roots must be the
  // correctly rounded ones.
  //
  // Weights start at zero, so that one ulp of a step shows in them; small buffers put many
  // values in the vector loops' scalar tails.
  const auto check = [](auto options, std::size_t n) {
    constexpr std::size_t shift = 13;
    std::vector<float> a(n, 0.0f), b(n + shift, 0.0f), ga(n), gb(n + shift);
    for (std::size_t i = 0; i < n; ++i) ga[i] = gb[i + shift] = static_cast<float>(nn::random_symmetric(3, 1, i)) * 0.01f;
    nn::optimizer<float, decltype(options)> oa(options), ob(options);
    for (int step = 0; step < 10; ++step) {
      oa.step(a, ga);
      ob.step(b, gb);
    }
    CHECK(std::equal(a.begin(), a.end(), b.begin() + shift));
  };
  for (const std::size_t n : {7, 40, 100, 2500}) {
    CAPTURE(n);
    check(nn::adam{.learning_rate = 0.01}, n);
    check(nn::sgd{.learning_rate = 0.1, .momentum = 0.9, .weight_decay = 0.01}, n);
  }

  std::vector<float> v(1000), roots(1000);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.37f + 1e-6f * static_cast<float>(i * i);
  nn::detail::square_roots(v.data(), roots.data(), v.size());
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < v.size(); ++i) wrong += roots[i] != std::sqrt(v[i]);
  CHECK(wrong == 0);
}

TEST_CASE("flush_denormals flushes subnormal momentum to zero and restores the mode") {
  if (!nn::flush_denormals::supported()) {
    MESSAGE("no flush-to-zero mode on this CPU: skipped");
    return;
  }
  const bool before = nn::flush_denormals::active();
  volatile float tiny = std::numeric_limits<float>::denorm_min() * 4;
  volatile float nine_tenths = 0.9f;
  {
    const nn::flush_denormals guard;
    CHECK(nn::flush_denormals::active());
    CHECK(tiny * nine_tenths == 0.0f);                               // DAZ: the subnormal input reads as zero
    CHECK(std::numeric_limits<float>::min() * nine_tenths == 0.0f);  // FTZ: a subnormal result is zero
  }
  CHECK(nn::flush_denormals::active() == before);
  {
    const nn::flush_denormals off(false);
    CHECK(nn::flush_denormals::active() == before);
  }
  if (!before) CHECK(tiny * nine_tenths != 0.0f);  // IEEE: 0.9 * 4 denorm_min rounds to 4 denorm_min
}

TEST_CASE("bad optimizer settings are typed errors") {
  using sgd_opt = nn::optimizer<float, nn::sgd>;
  using adam_opt = nn::optimizer<float, nn::adam>;
  CHECK_THROWS_AS(sgd_opt(nn::sgd{.learning_rate = 0}), nn::configuration_error);
  CHECK_THROWS_AS(sgd_opt(nn::sgd{.learning_rate = 0.1, .momentum = 1.0}), nn::configuration_error);
  CHECK_THROWS_AS(sgd_opt(nn::sgd{.learning_rate = 0.1, .weight_decay = -1}), nn::configuration_error);
  CHECK_THROWS_AS(adam_opt(nn::adam{.beta2 = 1.0}), nn::configuration_error);
  CHECK_THROWS_AS(adam_opt(nn::adam{.epsilon = 0}), nn::configuration_error);
  sgd_opt ok(nn::sgd{.learning_rate = 0.1});
  std::vector<float> w(3), g(2);
  CHECK_THROWS_AS(ok.step(w, g), nn::configuration_error);
}

namespace {

/// A learnable synthetic task: the label is the index of the largest of the first `classes` features.
nn::dataset<float> argmax_task(std::size_t samples, std::size_t features, std::size_t classes, std::uint64_t seed) {
  nn::dataset<float> d;
  d.samples.resize(static_cast<Eigen::Index>(samples), static_cast<Eigen::Index>(features));
  d.labels.resize(samples);
  d.classes = classes;
  d.sample_shape = nn::flat(features);
  d.source = "synthetic";
  for (std::size_t i = 0; i < samples; ++i) {
    for (std::size_t j = 0; j < features; ++j)
      d.samples(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) =
          static_cast<float>(nn::random_symmetric(seed, i, j));
    Eigen::Index best = 0;
    d.samples.row(static_cast<Eigen::Index>(i)).head(static_cast<Eigen::Index>(classes)).maxCoeff(&best);
    d.labels[i] = static_cast<std::int32_t>(best);
  }
  return d;
}

using small_net = nn::sequential<nn::input<8>, nn::dense<32>, nn::relu, nn::dense<3>, nn::softmax_cross_entropy>;

struct recorder : nn::callback {
  std::vector<nn::fit_begin> begins;
  std::vector<nn::step_end> steps;
  std::vector<nn::epoch_end> epochs;
  int ends = 0;
  void on_fit_begin(const nn::fit_begin& f) override { begins.push_back(f); }
  void on_step_end(const nn::step_end& s) override { steps.push_back(s); }
  void on_epoch_end(const nn::epoch_end& e) override { epochs.push_back(e); }
  void on_fit_end() override { ++ends; }
};

}  // namespace

TEST_CASE("the trainer learns a synthetic task and reports every step and epoch") {
  const auto train = argmax_task(1000, 8, 3, 1);
  const auto test = argmax_task(300, 8, 3, 2);
  nn::network<small_net> net(7);
  nn::trainer t(net, nn::sgd{.learning_rate = 0.1, .momentum = 0.9});
  const auto before = t.evaluate(test);
  recorder rec;
  t.add(rec);
  const auto last = t.fit(train, {.epochs = 4, .batch_size = 64, .seed = 3, .learning_rate_decay = 0.5}, &test);
  const auto after = t.evaluate(test);

  CHECK(after.accuracy > 0.9);
  CHECK(after.loss < before.loss);
  CHECK(after.samples == 300);
  REQUIRE(rec.begins.size() == 1);
  CHECK(rec.begins[0].steps_per_epoch == 16);  // 15 full batches of 64 and one of 40
  CHECK(rec.steps.size() == 4 * 16);
  CHECK(rec.steps[15].samples == 1000);
  CHECK(rec.steps[15].step == 16);
  REQUIRE(rec.epochs.size() == 4);
  CHECK(rec.ends == 1);
  CHECK(rec.epochs[0].learning_rate == doctest::Approx(0.1));
  CHECK(rec.epochs[3].learning_rate == doctest::Approx(0.0125));
  REQUIRE(rec.epochs[3].validation.has_value());
  CHECK(rec.epochs[3].validation->accuracy == doctest::Approx(after.accuracy));
  CHECK(last.epoch == 4);
  CHECK(rec.epochs[3].train.samples == 1000);
}

TEST_CASE("fit flushes subnormals while it runs and restores the caller's mode") {
  const auto train = argmax_task(100, 8, 3, 1);
  nn::network<small_net> net(7);
  nn::trainer t(net, nn::sgd{.learning_rate = 0.1});
  struct probe : nn::callback {
    bool flushed_in_fit = false;
    void on_step_end(const nn::step_end&) override { flushed_in_fit = nn::flush_denormals::active(); }
  } p;
  t.add(p);
  const bool before = nn::flush_denormals::active();
  t.fit(train, {.epochs = 1, .batch_size = 50});
  CHECK(p.flushed_in_fit == nn::flush_denormals::supported());
  CHECK(nn::flush_denormals::active() == before);
  t.fit(train, {.epochs = 1, .batch_size = 50, .flush_denormals = false});
  CHECK(p.flushed_in_fit == before);
}

TEST_CASE("max_steps_per_epoch stops each epoch early") {
  const auto train = argmax_task(1000, 8, 3, 1);
  nn::network<small_net> net(7);
  nn::trainer t(net, nn::adam{});
  recorder rec;
  t.add(rec);
  t.fit(train, {.epochs = 2, .batch_size = 50, .max_steps_per_epoch = 3});
  CHECK(rec.steps.size() == 6);
  CHECK(rec.epochs[1].train.samples == 150);
}

namespace {
/// A network-like type with every call the trainer needs, of scalar type S; evaluate_batch only
/// when Evaluates.
template <class S, bool Evaluates>
struct fake_network {
  using scalar = S;
  static std::size_t features() { return 8; }
  static std::size_t classes() { return 3; }
  std::span<S> parameters();
  std::span<S> gradients();
  nn::batch_result compute_gradients(nn::const_matrix_ref<S>, std::span<const std::int32_t>);
  nn::batch_result evaluate_batch(nn::const_matrix_ref<S>, std::span<const std::int32_t>) requires Evaluates;
};
/// Not trainable: no evaluate_batch.
using no_evaluation = fake_network<float, false>;
/// Not trainable: integer parameters, though it has every call.
using integer_scalar = fake_network<int, true>;
/// Its float twin is trainable (so integer_scalar fails on its scalar alone).
using float_scalar = fake_network<float, true>;
}  // namespace

TEST_CASE("trainable_network states what the trainer needs; network<...> is one") {
  static_assert(nn::trainable_network<nn::network<small_net>>);
  static_assert(nn::trainable_network<nn::network<small_net, double>>);
  static_assert(!nn::partial_batch_network<nn::network<small_net>>);  // takes the whole batch
  static_assert(!nn::trainable_network<no_evaluation>);
  static_assert(nn::trainable_network<float_scalar>);
  static_assert(!nn::trainable_network<integer_scalar>);
  static_assert(!nn::trainable_network<int>);
  CHECK(nn::network<small_net>::features() == 8);
  CHECK(nn::network<small_net>::classes() == 3);
}

TEST_CASE("drop_last drops each epoch's short last batch, and only that") {
  const auto train = argmax_task(1000, 8, 3, 1);
  SUBCASE("a batch size that divides the data: nothing to drop") {
    nn::network<small_net> a(7), b(7);
    nn::trainer ta(a, nn::sgd{.learning_rate = 0.1}), tb(b, nn::sgd{.learning_rate = 0.1});
    recorder rec;
    ta.add(rec);
    ta.fit(train, {.epochs = 2, .batch_size = 50, .seed = 3, .drop_last = true});
    tb.fit(train, {.epochs = 2, .batch_size = 50, .seed = 3});
    REQUIRE(rec.begins.size() == 1);
    CHECK(rec.begins[0].steps_per_epoch == 20);
    CHECK(rec.begins[0].samples_per_epoch == 1000);
    CHECK(rec.steps.size() == 2 * 20);
    REQUIRE(rec.epochs.size() == 2);
    CHECK(rec.epochs[1].steps == 20);
    CHECK(rec.epochs[1].train.samples == 1000);
    CHECK(ta.position().global_step == 40);
    CHECK(std::memcmp(a.parameters().data(), b.parameters().data(), a.parameters().size_bytes()) == 0);
  }
  SUBCASE("a batch size that does not divide the data: the short batch is dropped") {
    nn::network<small_net> net(7);
    nn::trainer t(net, nn::sgd{.learning_rate = 0.1});
    recorder rec;
    t.add(rec);
    t.fit(train, {.epochs = 2, .batch_size = 64, .seed = 3, .drop_last = true});
    REQUIRE(rec.begins.size() == 1);
    CHECK(rec.begins[0].steps_per_epoch == 15);  // 15 full batches of 64; the 40 left are dropped
    CHECK(rec.begins[0].samples_per_epoch == 960);
    REQUIRE(rec.steps.size() == 2 * 15);
    for (const auto& s : rec.steps) CHECK(s.step_samples == 64);
    CHECK(rec.steps[14].step == 15);
    CHECK(rec.steps[14].samples == 960);
    REQUIRE(rec.epochs.size() == 2);
    CHECK(rec.epochs[0].steps == 15);
    CHECK(rec.epochs[1].train.samples == 960);
    CHECK(t.position().epoch == 2);
    CHECK(t.position().step == 0);
    CHECK(t.position().global_step == 30);
    CHECK(t.position().drop_last);
  }
  SUBCASE("with max_steps_per_epoch, the smaller of the two") {
    nn::network<small_net> net(7);
    nn::trainer t(net, nn::sgd{.learning_rate = 0.1});
    recorder rec;
    t.add(rec);
    t.fit(train, {.epochs = 1, .batch_size = 300, .max_steps_per_epoch = 4, .drop_last = true});
    CHECK(rec.begins[0].steps_per_epoch == 3);
    CHECK(rec.begins[0].samples_per_epoch == 900);
    CHECK(rec.epochs[0].train.samples == 900);
  }
  SUBCASE("a data set smaller than one batch leaves nothing to train on: an error") {
    nn::network<small_net> net(7);
    nn::trainer t(net, nn::sgd{.learning_rate = 0.1});
    CHECK_THROWS_WITH_AS(t.fit(argmax_task(10, 8, 3, 1), {.batch_size = 64, .drop_last = true}),
                         doctest::Contains("drop_last leaves no batch"), nn::configuration_error);
  }
}

TEST_CASE("a run with drop_last interrupted and resumed ends bitwise where the whole run ends") {
  const auto train = argmax_task(1000, 8, 3, 1);
  const nn::fit_options options{.epochs = 3, .batch_size = 64, .seed = 5, .drop_last = true};
  nn::network<small_net> whole(7);
  nn::trainer tw(whole, nn::adam{.learning_rate = 0.01});
  tw.fit(train, options);
  CHECK(tw.position().global_step == 45);

  struct stop_at : nn::callback {
    const nn::training_position* position = nullptr;
    std::uint64_t at = 0;
    void on_step_end(const nn::step_end&) override {
      if (position->global_step == at) throw std::runtime_error("stopped");
    }
  };
  for (const std::uint64_t at : {7u, 15u, 22u, 30u}) {  // inside an epoch and at an epoch's last step
    CAPTURE(at);
    nn::network<small_net> net(7);
    nn::trainer t(net, nn::adam{.learning_rate = 0.01});
    stop_at stop;
    stop.position = &t.position();
    stop.at = at;
    t.add(stop);
    CHECK_THROWS_AS(t.fit(train, options), std::runtime_error);
    const auto position = t.position();
    CHECK(position.global_step == at);
    CHECK(position.step == (at - 1) % 15 + 1);
    CHECK(position.drop_last);
    stop.at = 0;
    t.resume(position);
    t.fit(train, options);
    CHECK(t.position() == tw.position());
    CHECK(std::memcmp(net.parameters().data(), whole.parameters().data(), net.parameters().size_bytes()) == 0);
  }

  // Resuming with drop_last changed would walk another data order; a position past the last
  // whole batch (a run without drop_last, at its short batch) does not exist with it.
  nn::network<small_net> net(7);
  nn::trainer t(net, nn::adam{.learning_rate = 0.01});
  auto position = tw.position();
  position.epoch = 1;
  position.step = 3;
  position.drop_last = false;
  t.resume(position);
  CHECK_THROWS_WITH_AS(t.fit(train, options), doctest::Contains("the run used drop_last 0, this fit uses 1"),
                       nn::configuration_error);
  position.step = 16;  // the short batch of a run without drop_last
  position.drop_last = true;
  t.resume(position);
  CHECK_THROWS_WITH_AS(t.fit(train, options), doctest::Contains("cannot resume at step 16 of an epoch of 15 steps"),
                       nn::configuration_error);
}

TEST_CASE("each step reports its own loss as well as the epoch's running mean") {
  const auto train = argmax_task(100, 8, 3, 1);
  const std::size_t batch_size = 32;  // 3 batches of 32 and one of 4
  nn::network<small_net> net(7);
  nn::trainer t(net, nn::sgd{.learning_rate = 0.5, .momentum = 0.9});
  // Without shuffling, step k's batch is rows [32 k, 32 k + 32): the probe evaluates the next
  // step's batch after each step (and the first before fit), with the weights that step starts from.
  struct probe : recorder {
    const nn::dataset<float>* data = nullptr;
    nn::network<small_net>* net = nullptr;
    std::vector<double> expected;  // step k's loss, evaluated before its update
    void evaluate_next() {
      const std::size_t begin = (expected.size() % 4) * 32;  // 4 steps an epoch
      const std::size_t n = std::min<std::size_t>(32, data->size() - begin);
      expected.push_back(
          net->evaluate_batch(data->samples.middleRows(static_cast<Eigen::Index>(begin), static_cast<Eigen::Index>(n)),
                              std::span<const std::int32_t>(data->labels).subspan(begin, n))
              .loss);
    }
    void on_step_end(const nn::step_end& s) override {
      recorder::on_step_end(s);
      evaluate_next();
    }
  } p;
  p.data = &train;
  p.net = &net;
  {
    const nn::flush_denormals ftz;  // as fit runs
    p.evaluate_next();
  }
  t.add(p);
  t.fit(train, {.epochs = 2, .batch_size = batch_size, .shuffle = false});
  REQUIRE(p.steps.size() == 8);
  double sum = 0;
  std::size_t samples = 0;
  for (std::size_t k = 0; k < p.steps.size(); ++k) {
    CAPTURE(k);
    const auto& s = p.steps[k];
    CHECK(s.step_samples == (k % 4 == 3 ? 4 : 32));
    CHECK(s.step_loss == p.expected[k]);  // the same forward pass on the same weights: bitwise
    if (k % 4 == 0) {                     // a new epoch
      sum = 0;
      samples = 0;
    }
    sum += s.step_loss * static_cast<double>(s.step_samples);
    samples += s.step_samples;
    CHECK(s.samples == samples);
    CHECK(s.loss == doctest::Approx(sum / static_cast<double>(samples)).epsilon(1e-12));
  }
  // The steps' losses differ (the weights move), so the running mean is not the last step's loss.
  CHECK(p.steps[1].step_loss != p.steps[0].step_loss);
  CHECK(p.steps[1].loss != p.steps[1].step_loss);
  CHECK(p.epochs[1].train.loss == doctest::Approx(p.steps[7].loss).epsilon(1e-15));
}

TEST_CASE("the same seeds give bitwise-identical weights; another seed does not") {
  const auto train = argmax_task(500, 8, 3, 1);
  auto run = [&](std::uint64_t init_seed, std::uint64_t shuffle_seed) {
    nn::network<small_net> net(init_seed);
    nn::trainer t(net, nn::sgd{.learning_rate = 0.05, .momentum = 0.9, .weight_decay = 1e-4});
    t.fit(train, {.epochs = 2, .batch_size = 32, .seed = shuffle_seed});
    return std::vector<float>(net.parameters().begin(), net.parameters().end());
  };
  const auto a = run(1, 2), b = run(1, 2), c = run(1, 3), d = run(2, 2);
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(a.data(), c.data(), a.size() * sizeof(float)) != 0);
  CHECK(std::memcmp(a.data(), d.data(), a.size() * sizeof(float)) != 0);
}

TEST_CASE("fit and evaluate reject data that does not fit and impossible options") {
  nn::network<small_net> net(1);
  nn::trainer t(net, nn::sgd{.learning_rate = 0.1});
  const auto wrong = argmax_task(10, 9, 3, 1);
  CHECK_THROWS_AS(t.fit(wrong, {}), nn::data_error);
  try {
    t.evaluate(wrong);
    FAIL("evaluate accepted 9 features for an 8-feature model");
  } catch (const nn::data_error& e) {
    CHECK(e.problem() == nn::data_problem::shape_mismatch);
    CHECK(e.path() == "synthetic");
  }
  auto too_many_classes = argmax_task(10, 8, 3, 1);
  too_many_classes.classes = 5;
  CHECK_THROWS_AS(t.fit(too_many_classes, {}), nn::data_error);
  const auto ok = argmax_task(10, 8, 3, 1);
  CHECK_THROWS_AS(t.fit(ok, {.epochs = 0}), nn::configuration_error);
  CHECK_THROWS_AS(t.fit(ok, {.batch_size = 0}), nn::configuration_error);
  CHECK_THROWS_AS(t.evaluate(ok, 0), nn::configuration_error);
}

TEST_CASE("progress bar: plain lines off a terminal, a redrawn bar on one") {
  const auto train = argmax_task(200, 8, 3, 1);
  std::ostringstream plain, term;
  {
    nn::network<small_net> net(1);
    nn::trainer t(net, nn::sgd{.learning_rate = 0.1});
    nn::progress_bar bar(plain, false);
    t.add(bar);
    t.fit(train, {.epochs = 2, .batch_size = 20});
  }
  const std::string p = plain.str();
  CHECK(p.find("epoch 1/2: loss ") == 0);
  CHECK(p.find("epoch 2/2: loss ") != std::string::npos);
  CHECK(p.find('\r') == std::string::npos);
  CHECK(std::count(p.begin(), p.end(), '\n') == 2);
  {
    nn::network<small_net> net(1);
    nn::trainer t(net, nn::sgd{.learning_rate = 0.1});
    nn::progress_bar bar(term, true);
    t.add(bar);
    t.fit(train, {.epochs = 1, .batch_size = 20});
  }
  const std::string s = term.str();
  CHECK(s.find("\repoch 1/1 [") != std::string::npos);
  CHECK(s.find("100%") != std::string::npos);
  CHECK(s.find("samples/s") != std::string::npos);
  CHECK(s.find("ETA") != std::string::npos);
}

TEST_CASE("csv_logger writes a header and one row per epoch") {
  const auto path =
      (std::filesystem::temp_directory_path() / ("f2d2n_metrics_" + std::to_string(::getpid()) + ".csv")).string();
  const auto train = argmax_task(100, 8, 3, 1);
  const auto test = argmax_task(50, 8, 3, 2);
  {
    nn::network<small_net> net(1);
    nn::trainer t(net, nn::sgd{.learning_rate = 0.1});
    nn::csv_logger csv(path);
    t.add(csv);
    t.fit(train, {.epochs = 3, .batch_size = 10}, &test);
  }
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::filesystem::remove(path);
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] ==
        "epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds,samples_per_second,learning_rate,steps,"
        "compute_ms_per_step,communication_ms_per_step,wait_ms_per_step");
  CHECK(lines[1].rfind("1,", 0) == 0);
  CHECK(lines[3].rfind("3,", 0) == 0);
  CHECK(std::count(lines[2].begin(), lines[2].end(), ',') == 11);
  // 10 steps per epoch; a serial network's time is all compute.
  CHECK(lines[2].find(",10,") != std::string::npos);
  CHECK(lines[2].size() > 4);
  CHECK(lines[2].substr(lines[2].size() - 4) == ",0,0");
  CHECK_THROWS_AS(nn::csv_logger("/nonexistent-dir/metrics.csv"), nn::error);
}

// ---- statistics that are not finite or out of range ---------------------------------------

namespace {
/// Without a hidden activation, a NaN feature reaches the loss whatever max() does with NaN.
using linear_net = nn::sequential<nn::input<8>, nn::dense<3>, nn::softmax_cross_entropy>;
}  // namespace

TEST_CASE("NaN in the data: fit and evaluate throw numerical_error naming the statistic, value, epoch and step") {
  auto data = argmax_task(64, 8, 3, 1);
  data.samples(21, 2) = std::numeric_limits<float>::quiet_NaN();  // the second batch of 16, in order
  nn::network<linear_net> net(1);
  nn::trainer t(net, nn::sgd{.learning_rate = 0.1});
  std::vector<float> before;
  try {
    t.fit(data, {.epochs = 2, .batch_size = 16, .shuffle = false});
    FAIL("fit trained on NaN without an error");
  } catch (const nn::numerical_error& e) {
    CHECK(e.statistic() == "training loss");
    CHECK(std::isnan(e.value()));
    CHECK(std::string(e.what()).find("the training loss is nan in epoch 1, step 2 of 4: the run diverged") !=
          std::string::npos);
    CHECK(std::string(e.what()).find("the step's update was not applied") != std::string::npos);
  }
  CHECK(t.position().global_step == 1);  // the first step was taken, the second not
  for (float w : net.parameters()) REQUIRE(std::isfinite(w));
  CHECK_THROWS_WITH_AS(t.evaluate(data, 32),
                       "f2d2n: the evaluation loss is nan on samples 0 to 31 of synthetic: "
                       "the model has diverged or the data hold NaN or infinity",
                       nn::numerical_error);
  CHECK_THROWS_AS(t.fit(data, {.epochs = 1, .batch_size = 16, .shuffle = false}), nn::error);  // the base class
}

TEST_CASE("a diverging run (a huge learning rate) stops with numerical_error, not a NaN accuracy") {
  const auto data = argmax_task(256, 8, 3, 1);
  nn::network<small_net> net(1);
  nn::trainer t(net, nn::sgd{.learning_rate = 1e20});
  try {
    t.fit(data, {.epochs = 4, .batch_size = 16});
    FAIL("fit went on with a learning rate of 1e20");
  } catch (const nn::numerical_error& e) {
    CHECK(e.statistic() == "training loss");
    CHECK(!std::isfinite(e.value()));
    CHECK(std::string(e.what()).find("the run diverged (a learning rate too large?)") != std::string::npos);
  }
}

// ---- the flight recorder -----------------------------------------------------------------------

TEST_CASE("message ids decode into words: kind, pass, layer, micro-batch or bucket") {
  using k = nn::message_kind;
  static_assert(nn::decode_message_id(nn::message_id(k::activation, false, 3, 1)) ==
                nn::message_fields{true, k::activation, false, 3, 1});
  static_assert(nn::decode_message_id(nn::message_id(k::agreement, true, 2047, 65535)) ==
                nn::message_fields{true, k::agreement, true, 2047, 65535});
  static_assert(!nn::decode_message_id(0).known && !nn::decode_message_id(0xF0000000u).known);
  CHECK(nn::describe_message(nn::message_id(k::activation, false, 3, 1)) ==
        "activation (forward) of layer 3, micro-batch 1");
  CHECK(nn::describe_message(nn::message_id(k::gradients, true, 1, 2)) == "gradients (backward) of layer 1, bucket 2");
  CHECK(nn::describe_message(nn::message_id(k::all_gather, true, 5, 0)) ==
        "all_gather (backward) of layer 5, micro-batch 0");
  CHECK(nn::describe_message(nn::message_id(k::evaluation, false, 0, 0)).starts_with("evaluation (a batch's loss"));
  CHECK(nn::describe_message(7) == "message 7 (not a training message)");
}

TEST_CASE("the flight recorder keeps the last operations of its capacity, with their states, in words") {
  using k = nn::message_kind;
  using op = nn::operation_kind;
  using st = nn::operation_state;
  nn::flight_recorder r(2, "unit 2 (replica 0, stage 1, shard 0)", 4);
  CHECK(r.dump() == "f2d2n flight recorder of unit 2 (replica 0, stage 1, shard 0): no operation yet\n");
  const auto act = nn::message_id(k::activation, false, 3, 1);
  const auto grads = nn::message_id(k::gradients, true, 1, 0);
  const auto first = r.begin(op::send, act, 7, 3, 3, 4096, 0);
  r.finish(first, st::done);
  r.finish(r.begin(op::receive, act, 7, 1, 1, 0, 4096), st::done);
  r.finish(r.begin(op::exchange, grads, 7, 3, 1, 1024, 1024), st::failed);
  r.finish(r.begin(op::send, grads, 8, 3, 3, 2048, 0), st::done);
  r.finish(r.begin(op::receive, grads, 8, 1, 1, 0, 512), st::timed_out);
  const auto open = r.begin(op::receive, act, 9, 1, 1, 0, 4096);  // still waiting
  r.finish(first, st::failed);                                    // the ring has moved past it: nothing changes
  CHECK(r.operations() == 6);
  const auto held = r.records();
  REQUIRE(held.size() == 4);  // the capacity: the first two are gone
  CHECK(held[0].number == 3);
  CHECK(held[0].kind == op::exchange);
  CHECK(held[0].state == st::failed);
  CHECK(held[0].from == 1);
  CHECK(held[2].state == st::timed_out);
  CHECK(held[3].number == open);
  CHECK(held[3].state == st::started);
  CHECK(held[3].step == 9);
  const auto text = r.dump();
  INFO(text);
  CHECK(
      text.starts_with("f2d2n flight recorder of unit 2 (replica 0, stage 1, shard 0): the last 4 of 6 "
                       "communication operations, oldest first\n"));
  CHECK(text.find("  #3 step 7 exchange to unit 3 (1024 bytes), from unit 1 (1024 bytes) failed in ") !=
        std::string::npos);
  CHECK(text.find("#5 step 8 receive from unit 1 (512 bytes) timed out in ") != std::string::npos);
  CHECK(text.find(": gradients (backward) of layer 1, bucket 0\n") != std::string::npos);
  CHECK(text.find("#6 step 9 receive from unit 1 (4096 bytes) started, for ") != std::string::npos);
  CHECK(text.find("so far: activation (forward) of layer 3, micro-batch 1\n") != std::string::npos);
  CHECK(text.find("#2 ") == std::string::npos);
  // Every recorder of the process is in the process's dump while it exists.
  CHECK(nn::dump_flight_recorders().find("f2d2n flight recorder of unit 2 (replica 0, stage 1, shard 0)") !=
        std::string::npos);

  nn::flight_recorder off(0, "unit 0", 0);
  CHECK(off.begin(op::send, act, 1, 1, 1, 8, 0) == 0);
  CHECK(off.operations() == 0);
  CHECK(off.dump().find("off (distributed_options::flight_records is 0)") != std::string::npos);
}

TEST_CASE("SIGUSR1 prints every unit's flight recorder, live, through a pipe and a sleeping thread") {
  using op = nn::operation_kind;
  nn::flight_recorder r(5, "unit 5 (replica 1, stage 1, shard 1)", 8);
  r.begin(op::receive, nn::message_id(nn::message_kind::activation, false, 2, 0), 11, 4, 4, 0, 256);  // blocked
  struct sigaction ignore {
  }, seen{};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  REQUIRE(::sigaction(SIGUSR1, &ignore, nullptr) == 0);  // so that a handler left behind cannot end the tests
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::string> dumps;
  {
    const auto printer = nn::print_flight_recorder_on(SIGUSR1, [&](const std::string& text) {
      const std::lock_guard lock(m);
      dumps.push_back(text);
      cv.notify_all();
    });
    CHECK_THROWS_AS(nn::print_flight_recorder_on(SIGUSR2), nn::configuration_error);  // one per process
    for (int k = 1; k <= 2; ++k) {
      REQUIRE(std::raise(SIGUSR1) == 0);
      std::unique_lock lock(m);
      REQUIRE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return dumps.size() == static_cast<std::size_t>(k); }));
    }
  }  // the printer's thread ends and the signal's previous action is back
  REQUIRE(::sigaction(SIGUSR1, nullptr, &seen) == 0);
  CHECK((seen.sa_handler == SIG_IGN));
  signal(SIGUSR1, SIG_DFL);
  const auto& text = dumps[1];
  INFO(text);
  CHECK(text.find("f2d2n flight recorder of unit 5 (replica 1, stage 1, shard 1): the last 1 of 1") !=
        std::string::npos);
  CHECK(text.find("#1 step 11 receive from unit 4 (256 bytes) started, for ") != std::string::npos);
  CHECK(text.find("so far: activation (forward) of layer 2, micro-batch 0") != std::string::npos);
  // Another printer may be installed once this one is gone.
  const auto again = nn::print_flight_recorder_on(SIGUSR2, [](const std::string&) {});
}

TEST_CASE("a short run on real Fashion-MNIST reaches 80% test accuracy") {
  const char* env = std::getenv("F2D2N_TEST_DATA_DIR");
  const std::string dir = env ? env : nn::fashion_mnist_dir;
  INFO("Fashion-MNIST is expected in ", dir, " (Debian package dataset-fashion-mnist; scripts/deps.sh installs it)");
  const auto full_train = nn::load_mnist<float>(dir, nn::split::train);
  const auto full_test = nn::load_mnist<float>(dir, nn::split::test);
  REQUIRE(full_train.size() == 60000);
  REQUIRE(full_test.size() == 10000);
  const auto train = full_train.slice(0, 10000);
  const auto test = full_test.slice(0, 2000);

  using mlp = nn::sequential<nn::input<28, 28>, nn::dense<128>, nn::relu, nn::dense<10>, nn::softmax_cross_entropy>;
  nn::network<mlp> net(1);
  nn::trainer t(net, nn::sgd{.learning_rate = 0.05, .momentum = 0.9});
  const auto before = t.evaluate(test);
  t.fit(train, {.epochs = 3, .batch_size = 64, .seed = 1});
  const auto after = t.evaluate(test);
  MESSAGE("10000 samples x 3 epochs: test accuracy ", after.accuracy, " (before: ", before.accuracy, ")");
  CHECK(before.accuracy < 0.3);
  CHECK(after.accuracy >= 0.80);
}

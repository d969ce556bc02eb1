// Sharded checkpoints (store/checkpoint.hpp, train/checkpoint.hpp): resume bitwise, any plan to
// any plan, corruption, torn and failed writes. Part of test_store.
#include "plan_suite.hpp"
#include "temp_dir.hpp"

#include <f2d2n/train/checkpoint.hpp>
#include <f2d2n/transport/local.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

namespace nn = f2d2n;
using namespace f2d2n::testing;

namespace {

/// Batches of 12: every plan of plan_suite.hpp splits them (replicas, micro-batches).
nn::fit_options fit_for(std::size_t epochs) {
  nn::fit_options f;
  f.epochs = epochs;
  f.max_steps_per_epoch = 5;
  f.batch_size = 12;
  f.seed = 3;
  return f;
}

using serial_net = nn::network<plan_mlp, float>;

/// Serial training for `epochs` epochs of 5 steps.
template <class Options>
std::vector<float> serial_weights(std::size_t epochs, Options options) {
  serial_net net(11);
  nn::trainer t(net, options);
  t.fit(plan_data<float>(), fit_for(epochs));
  return {net.parameters().begin(), net.parameters().end()};
}

/// Runs `f(transport)` on every unit of Plan on the local transport (the serial "plan": one call
/// without a transport).
template <class Plan, class F>
void on_units(F f) {
  nn::local_cluster cluster(static_cast<nn::unit_id>(Plan::world_size), Plan::fingerprint);
  std::vector<std::string> errors(Plan::world_size);
  cluster.run([&](nn::local_transport& t) {
    try {
      f(t);
    } catch (const std::exception& e) {
      errors[t.rank()] = e.what();
    }
  });
  for (std::size_t r = 0; r < errors.size(); ++r) CHECK_MESSAGE(errors[r].empty(), "unit ", r, ": ", errors[r]);
}

/// Plan From trains `epochs` epochs and checkpoints after each (keep 0), into `store`.
template <class From>
void train_and_checkpoint(nn::storage_backend& store, std::size_t epochs) {
  if constexpr (std::is_same_v<From, void>) {
    serial_net net(11);
    nn::trainer t(net, plan_sgd());
    nn::checkpointer ck(t, store, {.keep = 0});
    t.add(ck);
    t.fit(plan_data<float>(), fit_for(epochs));
  } else {
    on_units<From>([&](nn::local_transport& tr) {
      nn::distributed_network<From, nn::local_transport> net(tr, 11);
      nn::trainer t(net, plan_sgd());
      nn::checkpointer ck(t, store, {.keep = 0});
      t.add(ck);
      t.fit(plan_data<float>(), fit_for(epochs));
    });
  }
}

/// Plan To resumes from the newest checkpoint in `store`, trains to `epochs` epochs, and must end
/// where serial training of `epochs` epochs ends (the plans' tolerance: 1e-5 of the largest value).
template <class To>
void resume_and_compare(nn::storage_backend& store, std::size_t epochs) {
  const auto expected = serial_weights(epochs, plan_sgd());
  if constexpr (std::is_same_v<To, void>) {
    serial_net net(99);  // other initial values: all of them come from the checkpoint
    nn::trainer t(net, plan_sgd());
    nn::checkpointer ck(t, store, {.keep = 0});
    REQUIRE(ck.resume());
    t.fit(plan_data<float>(), fit_for(epochs));
    std::vector<std::string> failures;
    const std::vector<float> got(net.parameters().begin(), net.parameters().end());
    compare_layers<plan_mlp>(got, expected, plan_mlp::parameter_count, 1e-5, "serial", failures);
    for (const auto& f : failures) FAIL_CHECK(f);
  } else {
    std::vector<std::vector<std::string>> failures(To::world_size);
    on_units<To>([&](nn::local_transport& tr) {
      nn::distributed_network<To, nn::local_transport> net(tr, 99);
      nn::trainer t(net, plan_sgd());
      nn::checkpointer ck(t, store, {.keep = 0});
      if (!ck.resume()) throw std::runtime_error("no checkpoint to resume from");
      t.fit(plan_data<float>(), fit_for(epochs));
      compare_layers<plan_mlp>(exported(net), expected, net.parameter_count(), 1e-5, "after resuming",
                               failures[tr.rank()]);
    });
    for (std::size_t r = 0; r < failures.size(); ++r)
      for (const auto& f : failures[r]) FAIL_CHECK("unit " << r << ": " << f);
  }
}

/// Flips byte `at` of a file (xor 0xff).
void flip(const std::filesystem::path& p, std::size_t at) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0xff);
  f.seekp(static_cast<std::streamoff>(at));
  f.write(&c, 1);
}

}  // namespace

TEST_CASE("a serial run interrupted and resumed ends bitwise equal to the uninterrupted run") {
  auto check = [](auto options) {
    const auto uninterrupted = serial_weights(4, options);
    nn::testing::temp_dir dir;
    nn::directory_backend store(dir.path() / "ck");
    {  // the first run stops after 2 epochs (and a checkpoint every 3 steps)
      serial_net net(11);
      nn::trainer t(net, options);
      nn::checkpointer ck(t, store, {.every_steps = 3, .keep = 2});
      t.add(ck);
      auto f = fit_for(4);
      f.epochs = 2;
      t.fit(plan_data<float>(), f);
    }
    // Steps 3, 6, 9, 10 (end of epoch 2) were written; the newest 2 are kept.
    CHECK(nn::list_checkpoints(store) == std::vector<std::string>{"step-000000000009", "step-000000000010"});
    serial_net net(5);
    nn::trainer t(net, options);
    nn::checkpointer ck(t, store);
    const auto info = ck.resume();
    REQUIRE(info);
    CHECK(info->position.epoch == 2);
    CHECK(info->position.step == 0);
    CHECK(info->position.global_step == 10);
    t.fit(plan_data<float>(), fit_for(4));
    CHECK(std::equal(uninterrupted.begin(), uninterrupted.end(), net.parameters().begin()));
    CHECK(t.optimizer_state().steps() == 20);
  };
  SUBCASE("sgd with momentum") { check(plan_sgd()); }
  SUBCASE("adam") { check(nn::adam{.learning_rate = 0.01}); }
  SUBCASE("resumed in the middle of an epoch, with learning-rate decay") {
    auto f4 = fit_for(4);
    f4.learning_rate_decay = 0.5;
    serial_net whole(11);
    nn::trainer tw(whole, nn::adam{.learning_rate = 0.01});
    tw.fit(plan_data<float>(), f4);
    nn::testing::temp_dir dir;
    nn::directory_backend store(dir.path());
    {
      serial_net net(11);
      nn::trainer t(net, nn::adam{.learning_rate = 0.01});
      nn::checkpointer ck(t, store, {.every_steps = 7, .every_epoch = false});
      t.add(ck);
      auto f = f4;
      f.epochs = 2;  // steps 7 (epoch 2, step 2) is the newest at the end
      t.fit(plan_data<float>(), f);
    }
    CHECK(*nn::latest_checkpoint(store) == "step-000000000007");
    serial_net net(5);
    nn::trainer t(net, nn::adam{.learning_rate = 0.01});
    nn::checkpointer ck(t, store);
    REQUIRE(ck.resume());
    CHECK(t.optimizer_state().options().learning_rate == 0.005);
    t.fit(plan_data<float>(), f4);
    CHECK(std::equal(whole.parameters().begin(), whole.parameters().end(), net.parameters().begin()));
  }
}

TEST_CASE("resuming refuses another data order and another optimizer") {
  nn::testing::temp_dir dir;
  nn::directory_backend store(dir.path());
  train_and_checkpoint<void>(store, 1);
  serial_net net(1);
  {
    nn::trainer t(net, plan_sgd());
    nn::checkpointer ck(t, store);
    REQUIRE(ck.resume());
    auto f = fit_for(2);
    f.batch_size = 10;
    CHECK_THROWS_WITH_AS(t.fit(plan_data<float>(), f), doctest::Contains("batch size 12, this fit uses 10"),
                         nn::configuration_error);
  }
  const std::vector<float> before(net.parameters().begin(), net.parameters().end());
  nn::trainer t(net, nn::adam{});
  nn::checkpointer ck(t, store);
  CHECK_THROWS_WITH_AS(ck.resume(), doctest::Contains("holds sgd state, the trainer uses adam"), nn::storage_error);
  // A refused load changes nothing (the sgd trainer above did load; compare with that).
  CHECK(std::equal(before.begin(), before.end(), net.parameters().begin()));
}

TEST_CASE("a checkpoint of another model is refused with the difference") {
  nn::testing::temp_dir dir;
  nn::directory_backend store(dir.path());
  train_and_checkpoint<void>(store, 1);
  using other = nn::sequential<nn::input<13>, nn::dense<10>, nn::relu, nn::dense<6>, nn::tanh, nn::dense<5>,
                               nn::softmax_cross_entropy>;
  nn::network<other> net(1);
  try {
    nn::load_parameters(net, store, *nn::latest_checkpoint(store));
    FAIL("loaded a checkpoint of another model");
  } catch (const nn::storage_error& e) {
    CHECK(e.problem() == nn::storage_problem::model_mismatch);
    CHECK(std::string(e.what()).find(
              "layer 3 is dense[10]->[6]:66 in the model, dense[10]->[7]:77 in the stored one") != std::string::npos);
  }
  nn::network<plan_mlp, double> wide(1);
  CHECK_THROWS_WITH_AS(nn::load_parameters(wide, store, *nn::latest_checkpoint(store)),
                       doctest::Contains("holds F32 values, this network F64"), nn::storage_error);
}

TEST_CASE("a checkpoint whose model description differs only by a last space is refused, and says so") {
  // describe_difference split descriptions into words and dropped a last empty one: it found no
  // difference, and the refusal read "another model: " with nothing after it.
  nn::testing::temp_dir dir;
  nn::directory_backend store(dir.path());
  train_and_checkpoint<void>(store, 1);
  const std::string name = *nn::latest_checkpoint(store);
  auto body = nn::detail::unwrap_manifest(store.get(name + "/manifest.json"), "manifest");
  body["model"]["description"] = body["model"]["description"].get<std::string>() + " ";
  const std::string text = nn::detail::wrap_manifest(body);
  store.commit(name + "/manifest.json", std::as_bytes(std::span<const char>(text)));
  serial_net net(1);
  CHECK_THROWS_WITH_AS(nn::load_parameters(net, store, name),
                       doctest::Contains(
                           "another model: the stored description differs from the model's in its spaces"),
                       nn::storage_error);
}

TEST_CASE_TEMPLATE("each plan's checkpoint, loaded serially, equals serial training", Plan, plan_dp2_tp2,
                   plan_tp3_mixed, plan_pp2_1f1b, plan_tp2x2, plan_dp2_pp2_tp2, plan_tp2_chain, plan_dp3_buckets) {
  nn::testing::temp_dir dir;
  nn::directory_backend store(dir.path());
  train_and_checkpoint<Plan>(store, 2);
  serial_net net(99);
  const auto info = nn::load_parameters(net, store, *nn::latest_checkpoint(store));
  CHECK(info.world_size == Plan::world_size);
  CHECK(info.plan_fingerprint == Plan::fingerprint);
  std::vector<std::string> failures;
  const std::vector<float> got(net.parameters().begin(), net.parameters().end());
  compare_layers<plan_mlp>(got, serial_weights(2, plan_sgd()), plan_mlp::parameter_count, 1e-5, "loaded serially",
                           failures);
  for (const auto& f : failures) FAIL_CHECK(f);
  // Replicas and shards that hold the same block wrote it once: the files hold each value once,
  // parameters and momentum.
  std::uintmax_t bytes = 0;
  for (const auto& key : store.list(*nn::latest_checkpoint(store) + "/unit-")) bytes += *store.size(key);
  CHECK(bytes == 2 * plan_mlp::parameter_count * sizeof(float));
}

TEST_CASE_TEMPLATE("a CNN plan's checkpoint (spatial blocks, channel shards) loads serially and resumes under "
                   "another plan, equal to serial training",
                   Plan, plan_cnn_spatial2x2, plan_cnn_channels3, plan_cnn_inchannels3) {
  nn::testing::temp_dir dir;
  nn::directory_backend store(dir.path());
  const auto data = plan_data<float, plan_cnn>();
  on_units<Plan>([&](nn::local_transport& tr) {
    nn::distributed_network<Plan, nn::local_transport> net(tr, 11);
    nn::trainer t(net, plan_sgd());
    nn::checkpointer ck(t, store, {.keep = 0});
    t.add(ck);
    t.fit(data, fit_for(2));
  });
  auto serial_after = [&](std::size_t epochs) {
    nn::network<plan_cnn> serial(11);
    nn::trainer t(serial, plan_sgd());
    t.fit(data, fit_for(epochs));
    return std::vector<float>(serial.parameters().begin(), serial.parameters().end());
  };
  nn::network<plan_cnn> loaded(99);
  nn::load_parameters(loaded, store, *nn::latest_checkpoint(store));
  std::vector<std::string> failures;
  compare_layers<plan_cnn>(std::vector<float>(loaded.parameters().begin(), loaded.parameters().end()), serial_after(2),
                           plan_cnn::parameter_count, 1e-5, "loaded serially", failures);
  {  // Resumed serially for a third epoch (not writing checkpoints). Dropout's masks are keyed by
     // the network's seed and the training step: the run's seed (11), the step from the checkpoint.
    nn::network<plan_cnn> net(11);
    nn::trainer t(net, plan_sgd());
    const auto info = nn::load_checkpoint(t, store, *nn::latest_checkpoint(store));
    CHECK(info.position.global_step == 10);
    CHECK(net.training_steps() == 10);
    t.fit(data, fit_for(3));
    compare_layers<plan_cnn>(std::vector<float>(net.parameters().begin(), net.parameters().end()), serial_after(3),
                             plan_cnn::parameter_count, 1e-5, "resumed serially", failures);
  }
  // Resumed under another plan for a third epoch (DP2 x spatial 2; input channels over 2 units for
  // the checkpoint of output channels): the dropout masks of the uninterrupted serial run too
  // (resuming sets the training step count). Every unit exports the values it holds.
  using Resumed = std::conditional_t<std::is_same_v<Plan, plan_cnn_channels3>, plan_cnn_inchannels2, plan_cnn_dp2_spatial2>;
  std::vector<float> resumed(plan_cnn::parameter_count, std::numeric_limits<float>::quiet_NaN());
  std::mutex merge;
  on_units<Resumed>([&](nn::local_transport& tr) {
    nn::distributed_network<Resumed, nn::local_transport> net(tr, 11);
    nn::trainer t(net, plan_sgd());
    nn::checkpointer ck(t, store, {.keep = 0});
    t.add(ck);
    REQUIRE(ck.resume());
    CHECK(net.training_steps() == 10);
    t.fit(data, fit_for(3));
    std::vector<float> mine(plan_cnn::parameter_count, std::numeric_limits<float>::quiet_NaN());
    net.export_parameters(mine);
    const std::lock_guard lock(merge);
    for (std::size_t k = 0; k < mine.size(); ++k)
      if (!std::isnan(mine[k])) resumed[k] = mine[k];
  });
  compare_layers<plan_cnn>(resumed, serial_after(3), plan_cnn::parameter_count, 1e-5, "resumed under another plan",
                           failures);
  for (const auto& f : failures) FAIL_CHECK(f);
}

TEST_CASE("a checkpoint of one plan resumes under another (resharding), equal to serial training") {
  // A chain through the plans: each resumes the one before and trains one more epoch.
  nn::testing::temp_dir dir;
  nn::directory_backend store(dir.path());
  train_and_checkpoint<void>(store, 1);
  SUBCASE("serial -> DP2xTP2 -> TP3 by inputs -> PP2 -> TP 2x2 grid -> DP2xPP2xTP2 -> serial") {
    resume_and_compare<plan_dp2_tp2>(store, 2);
    train_and_checkpoint<plan_dp2_tp2>(store, 2);  // writes the epoch-2 checkpoint of DP2xTP2 itself
    resume_and_compare<plan_tp3_mixed>(store, 3);
    // TP3 writes epoch 3 from the DP2xTP2 checkpoint of epoch 2:
    on_units<plan_tp3_mixed>([&](nn::local_transport& tr) {
      nn::distributed_network<plan_tp3_mixed, nn::local_transport> net(tr, 99);
      nn::trainer t(net, plan_sgd());
      nn::checkpointer ck(t, store, {.keep = 0});
      t.add(ck);
      ck.resume();
      t.fit(plan_data<float>(), fit_for(3));
    });
    resume_and_compare<plan_pp2_1f1b>(store, 4);
    resume_and_compare<plan_tp2x2>(store, 4);
    resume_and_compare<plan_dp2_pp2_tp2>(store, 4);
    resume_and_compare<void>(store, 4);
  }
}

TEST_CASE("every flipped byte of a committed checkpoint is a typed error; none loads") {
  nn::testing::temp_dir dir;
  nn::directory_backend store(dir.path());
  train_and_checkpoint<plan_dp2_tp2>(store, 1);
  const auto name = *nn::latest_checkpoint(store);
  serial_net net(1);
  nn::load_parameters(net, store, name);  // loads before any damage
  const std::vector<float> good(net.parameters().begin(), net.parameters().end());
  auto refused = [&](const std::filesystem::path& file, std::size_t at) {
    flip(file, at);
    serial_net fresh(1);
    const std::vector<float> before(fresh.parameters().begin(), fresh.parameters().end());
    nn::trainer t(fresh, plan_sgd());
    bool typed = false;
    try {
      nn::load_checkpoint(t, store, name);
    } catch (const nn::storage_error&) {
      // Refused before anything changed.
      typed = std::equal(before.begin(), before.end(), fresh.parameters().begin()) && !t.optimizer_state().has_state();
    }
    flip(file, at);
    return typed;
  };
  const auto manifest = dir.path() / name / "manifest.json";
  const auto manifest_size = std::filesystem::file_size(manifest);
  std::size_t loaded = 0;
  for (std::size_t at = 0; at < manifest_size; ++at) loaded += !refused(manifest, at);
  CHECK_MESSAGE(loaded == 0, loaded, " of ", manifest_size, " manifest flips loaded");
  std::size_t files = 0, flips = 0;
  for (const auto& key : store.list(name + "/unit-")) {
    ++files;
    const auto path = dir.path() / key;
    const auto size = std::filesystem::file_size(path);
    for (std::size_t at = 0; at < size; at += 5, ++flips) loaded += !refused(path, at);
  }
  CHECK(files == 2);  // replica 0's two shards
  CHECK_MESSAGE(loaded == 0, loaded, " of ", flips, " data flips loaded");
  // Undamaged again: it loads, the same values.
  nn::load_parameters(net, store, name);
  CHECK(std::equal(good.begin(), good.end(), net.parameters().begin()));
  // Cut short: a typed error.
  const auto data = dir.path() / store.list(name + "/unit-").front();
  std::filesystem::resize_file(data, std::filesystem::file_size(data) - 1);
  CHECK_THROWS_AS(nn::load_parameters(net, store, name), nn::storage_error);
}

TEST_CASE("a checkpoint that a unit fails to write is never committed, on any unit") {
  nn::testing::temp_dir dir;
  nn::directory_backend store(dir.path());
  std::vector<std::string> errors(4);
  nn::local_cluster cluster(4, plan_dp2_tp2::fingerprint);
  cluster.run([&](nn::local_transport& tr) {
    nn::distributed_network<plan_dp2_tp2, nn::local_transport> net(tr, 11);
    nn::trainer t(net, plan_sgd());
    nn::checkpoint_options o;
    o.hook = [&](std::string_view phase) {
      if (phase == "data written" && tr.rank() == 1) throw std::runtime_error("disk full (simulated)");
    };
    nn::checkpointer ck(t, store, o);
    t.add(ck);
    try {
      t.fit(plan_data<float>(), fit_for(1));
    } catch (const nn::storage_error& e) {
      errors[tr.rank()] = e.what();
    }
  });
  for (std::size_t r = 0; r < 4; ++r) {
    const bool said = r == 1 ? errors[r].find("disk full (simulated)") != std::string::npos
                             : errors[r].find("not committed") != std::string::npos;
    CHECK_MESSAGE(said, r, ": ", errors[r]);
  }
  CHECK(nn::list_checkpoints(store).empty());
  // A torn folder (data, no manifest) is no checkpoint.
  CHECK(!nn::latest_checkpoint(store));
  CHECK(!store.list("step-").empty());
}

TEST_CASE("resume passes over a damaged newest checkpoint, on every unit alike") {
  SUBCASE("one network: the run still ends bitwise equal to the uninterrupted one") {
    const auto uninterrupted = serial_weights(4, plan_sgd());
    nn::testing::temp_dir dir;
    nn::directory_backend store(dir.path());
    train_and_checkpoint<void>(store, 3);  // steps 5, 10, 15
    const auto newest = *nn::latest_checkpoint(store);
    flip(dir.path() / store.list(newest + "/unit-").front(), 3);
    serial_net net(5);
    nn::trainer t(net, plan_sgd());
    nn::checkpointer ck(t, store);
    const auto info = ck.resume();
    REQUIRE(info);
    CHECK(info->name == "step-000000000010");
    REQUIRE(info->skipped.size() == 1);
    CHECK(info->skipped[0].find("step-000000000015: ") == 0);
    CHECK(info->skipped[0].find("checksum does not match") != std::string::npos);
    t.fit(plan_data<float>(), fit_for(4));
    CHECK(std::equal(uninterrupted.begin(), uninterrupted.end(), net.parameters().begin()));
  }
  SUBCASE("DP2xTP2: a chunk that only some units read") {
    nn::testing::temp_dir dir;
    nn::directory_backend store(dir.path());
    train_and_checkpoint<plan_dp2_tp2>(store, 2);  // steps 5, 10
    // Unit 1 wrote shard 1's blocks: only the units of shard 1 read them.
    const auto newest = *nn::latest_checkpoint(store);
    flip(dir.path() / store.list(newest + "/unit-1-").front(), 0);
    std::vector<std::string> names(4);
    std::vector<std::size_t> skipped(4);
    on_units<plan_dp2_tp2>([&](nn::local_transport& tr) {
      nn::distributed_network<plan_dp2_tp2, nn::local_transport> net(tr, 99);
      nn::trainer t(net, plan_sgd());
      nn::checkpointer ck(t, store);
      const auto info = ck.resume();
      names[tr.rank()] = info ? info->name : "none";
      skipped[tr.rank()] = info ? info->skipped.size() : 0;
    });
    CHECK(names == std::vector<std::string>(4, "step-000000000005"));
    CHECK(skipped == std::vector<std::size_t>(4, 1));
  }
  SUBCASE("none loads: a storage_error naming the newest problem") {
    nn::testing::temp_dir dir;
    nn::directory_backend store(dir.path());
    train_and_checkpoint<void>(store, 2);
    for (const auto& name : nn::list_checkpoints(store)) flip(dir.path() / name / "manifest.json", 40);
    serial_net net(5);
    nn::trainer t(net, plan_sgd());
    nn::checkpointer ck(t, store);
    CHECK_THROWS_WITH_AS(ck.resume(), doctest::Contains("no checkpoint could be loaded; the newest: step-000000000010"),
                         nn::storage_error);
  }
}

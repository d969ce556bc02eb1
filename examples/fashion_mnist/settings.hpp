// Shared by the Fashion-MNIST examples (main.cpp: one process; cluster.cpp: a plan's units):
// the command line and the data. train.hpp trains and reports (with checkpoints and the model's
// export: heavier to compile, so the cluster's plans and its training are in separate files).
#pragma once

#include <f2d2n/f2d2n.hpp>

#include <boost/program_options.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

namespace example {

namespace nn = f2d2n;
namespace po = boost::program_options;

using mlp = nn::sequential<nn::input<28, 28>, nn::dense<256>, nn::relu, nn::dense<128>, nn::relu, nn::dense<10>,
                           nn::softmax_cross_entropy>;

// A convolutional network under 100K parameters (93,322): channels-last images (model/conv.hpp),
// three 3 x 3 convolutions of 32, 64 and 64 channels, each followed by 2 x 2 max pooling
// (28 -> 14 -> 7 -> 3), dropout on the second pooled map and around dense 64.
using cnn = nn::sequential<nn::input<28, 28, 1>, nn::conv2d<32, 3, 1, 1>, nn::relu, nn::max_pool<2>,
                           nn::conv2d<64, 3, 1, 1>, nn::relu, nn::max_pool<2>, nn::dropout<0.1>,
                           nn::conv2d<64, 3, 1, 1>, nn::relu, nn::max_pool<2>, nn::flatten, nn::dropout<0.25>,
                           nn::dense<64>, nn::relu, nn::dropout<0.25>, nn::dense<10>, nn::softmax_cross_entropy>;
static_assert(cnn::parameter_count < 100000);

// The F2D2N paper's prototype network (Leite, Mourlin, Paradinas 2024).
using prototype =
    nn::sequential<nn::input<28, 28>, nn::dense<30>, nn::sigmoid, nn::dense<10>, nn::softmax_cross_entropy>;

struct settings {
  std::string data_dir;
  std::string preset;
  std::size_t epochs = 0;
  std::size_t batch_size = 0;
  double learning_rate = 0;
  double momentum = 0;
  double weight_decay = 0;
  double decay = 1;
  std::uint64_t seed = 0;
  std::string metrics;
  std::size_t train_limit = 0;
  std::string optimizer;
  std::string normalize;
  std::string plan;  // cluster.cpp only
  std::string checkpoint_dir;
  std::size_t checkpoint_every = 0;
  std::size_t checkpoint_keep = 3;
  bool resume = false;
  std::string save_model;
};

/// The options both examples take; `extra` adds a program's own. `preset`: the default preset.
inline po::options_description options(settings& s, const char* title, const char* preset = "mlp") {
  po::options_description opts(title);
  // clang-format off
  opts.add_options()
    ("help,h", "show this help")
    ("data-dir", po::value(&s.data_dir)->default_value(nn::fashion_mnist_dir),
        "directory with train-/t10k- images and labels IDX files, gzipped or not, or an object store's folder "
        "s3://bucket/prefix (credentials and endpoint: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)")
    ("preset", po::value(&s.preset)->default_value(preset),
        "mlp: 784-256-128-10 ReLU, Adam; cnn: three 3x3 convolutions (32, 64, 64 channels) with max pooling, dense "
        "64, dropout, Adam (93,322 parameters); f2d2n: the F2D2N prototype 784-30-10 sigmoid, SGD + L2, batch 30")
    ("epochs", po::value<std::size_t>(), "epochs (mlp: 15, cnn: 20, f2d2n: 15)")
    ("batch-size", po::value<std::size_t>(), "mini-batch size (mlp, cnn: 64, f2d2n: 30)")
    ("learning-rate", po::value<double>(), "learning rate (mlp, cnn: 0.001, f2d2n: 0.1)")
    ("momentum", po::value<double>(), "SGD momentum (mlp, cnn: 0.9, f2d2n: 0)")
    ("weight-decay", po::value<double>(), "L2 weight decay (mlp, cnn: 0, f2d2n: 1e-4)")
    ("lr-decay", po::value<double>(), "learning rate factor after each epoch (mlp: 0.85, cnn: 0.9, f2d2n: 1)")
    ("optimizer", po::value<std::string>(), "sgd (with momentum) or adam (mlp, cnn: adam, f2d2n: sgd)")
    ("normalize", po::value(&s.normalize),
        "scale: pixels / 255; standard: (pixels / 255 - 0.2860) / 0.3530, Fashion-MNIST's training mean and deviation "
        "(mlp, f2d2n: scale; cnn: standard)")
    ("seed", po::value(&s.seed)->default_value(1), "seed of the initial weights and of the shuffling")
    ("metrics", po::value(&s.metrics),
        "write per-epoch metrics (with this unit's compute / communication / wait time per step) to this CSV "
        "file; on a cluster each unit writes its own, with .unit<rank> before the extension")
    ("train-limit", po::value(&s.train_limit)->default_value(0), "use only the first N training samples (0: all)")
    ("checkpoint-dir", po::value(&s.checkpoint_dir),
        "write a checkpoint into this directory, or s3://bucket/prefix, after every epoch (and every "
        "--checkpoint-every steps); on a cluster every unit writes its own part of each")
    ("checkpoint-every", po::value(&s.checkpoint_every)->default_value(0), "also checkpoint every N steps (0: only after epochs)")
    ("checkpoint-keep", po::value(&s.checkpoint_keep)->default_value(3), "keep the newest N checkpoints (0: all)")
    ("resume", po::bool_switch(&s.resume),
        "first resume from the newest checkpoint in --checkpoint-dir, if there is one (from any plan of the model)")
    ("save-model", po::value(&s.save_model),
        "after training, save the model to this safetensors file, or object s3://bucket/prefix/name "
        "(PyTorch's state_dict names)");
  // clang-format on
  return opts;
}

/// Parses the command line into `s`; returns an exit code when the program should stop (help, or
/// a bad value), nothing when it should train.
inline std::optional<int> parse(int argc, char** argv, settings& s, const po::options_description& opts) {
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, opts), vm);
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  po::notify(vm);
  if (s.resume && s.checkpoint_dir.empty()) {
    std::cerr << argv[0] << ": --resume needs --checkpoint-dir\n";
    return 2;
  }
  const bool proto = s.preset == "f2d2n";
  if (!proto && s.preset != "mlp" && s.preset != "cnn") {
    std::cerr << argv[0] << ": unknown preset '" << s.preset << "' (use mlp, cnn or f2d2n)\n";
    return 2;
  }
  auto pick = [&](const char* name, auto mlp_value, auto proto_value) {
    using T = decltype(mlp_value);
    return vm.count(name) ? vm[name].as<T>() : (proto ? proto_value : mlp_value);
  };
  s.optimizer = pick("optimizer", std::string("adam"), std::string("sgd"));
  if (s.optimizer != "sgd" && s.optimizer != "adam") {
    std::cerr << argv[0] << ": unknown optimizer '" << s.optimizer << "' (use sgd or adam)\n";
    return 2;
  }
  if (s.normalize.empty()) s.normalize = s.preset == "cnn" ? "standard" : "scale";
  if (s.normalize != "scale" && s.normalize != "standard") {
    std::cerr << argv[0] << ": unknown normalization '" << s.normalize << "' (use scale or standard)\n";
    return 2;
  }
  s.epochs = pick("epochs", s.preset == "cnn" ? std::size_t{20} : std::size_t{15}, std::size_t{15});
  s.batch_size = pick("batch-size", std::size_t{64}, std::size_t{30});
  s.learning_rate = pick("learning-rate", s.optimizer == "adam" ? 0.001 : 0.05, 0.1);
  s.momentum = pick("momentum", 0.9, 0.0);
  s.weight_decay = pick("weight-decay", 0.0, 1e-4);
  s.decay = pick("lr-decay", s.preset == "cnn" ? 0.9 : 0.85, 1.0);
  return std::nullopt;
}

struct data {
  nn::dataset<float> train, test;
};

/// Pixels scaled to [0, 1], or standardised with Fashion-MNIST's training-set mean and deviation.
inline data load(const settings& s) {
  const nn::normalization norm =
      s.normalize == "standard" ? nn::normalization{.mean = 0.2860, .stddev = 0.3530} : nn::normalization{};
  // --train-limit N reads only N samples (from an object store, only their bytes when the files are
  // not compressed).
  const nn::sample_range train{0, s.train_limit != 0 ? s.train_limit : nn::sample_range{}.count};
  return {nn::load_mnist<float>(s.data_dir, nn::split::train, norm, train),
          nn::load_mnist<float>(s.data_dir, nn::split::test, norm)};
}

/// The settings, in one line after the model's.
inline void describe(const settings& s) {
  std::cout << s.optimizer << ": learning rate " << s.learning_rate;
  if (s.optimizer == "sgd") std::cout << ", momentum " << s.momentum;
  std::cout << ", weight decay " << s.weight_decay << ", decay per epoch " << s.decay << "; batch " << s.batch_size
            << ", " << s.epochs << " epochs, seed " << s.seed << ", inputs " << s.normalize << std::endl;
}

}  // namespace example

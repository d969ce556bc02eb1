// f2d2n/plan/messages.hpp: the messages of a training step as the plan states them, and their
// wire ids. Every id a distributed unit puts on the wire comes from message_id below; the plan's
// schema (distribute<...>::for_each_message) lists the messages with their ids, shapes and peers.
#pragma once

#include <f2d2n/core/unit.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace f2d2n {

/// What a message is.
enum class message_kind : std::uint8_t {
  all_gather,  ///< the blocks of a split layer's output (forward) or input gradient (backward)
  all_reduce,  ///< the partial sums of a split layer's output (forward) or input gradient (backward)
  activation,  ///< a micro-batch's activation entering `layer`, from the stage before
  gradient,    ///< a micro-batch's gradient of the input of `layer`, back to the stage before
  statistics,  ///< the step's loss and correct count, among the stages of a replica
  gradients,   ///< one bucket of the gradients (the last with the loss and count), among the replicas
  evaluation,  ///< an evaluated batch's loss and correct count, among the replicas (not a training step)
  agreement,   ///< a sum over every unit, by which they agree (checkpoints; not a training step)
  halo,        ///< a spatially split layer's input cells a neighbour's window reads (forward), or their gradient (backward)
  weight_gradient,  ///< a spatially split layer's weight gradients, summed over the grid
};

/// Limits of the id's fields (a plan past them does not compile).
inline constexpr std::size_t max_message_layers = std::size_t{1} << 11;
inline constexpr std::size_t max_message_index = std::size_t{1} << 16;

/// The wire id of a message: bits 28-31 the kind (+1, so that no id is 0), bit 27 the backward
/// pass, bits 16-26 the layer, bits 0-15 the index (the micro-batch, or the bucket of gradients).
/// Frames are matched by id and step, so a unit out of step with its peers gets a protocol_error.
[[nodiscard]] constexpr std::uint32_t message_id(message_kind kind, bool backward, std::size_t layer,
                                                 std::size_t index) noexcept {
  return (static_cast<std::uint32_t>(kind) + 1) << 28 | (backward ? std::uint32_t{1} << 27 : 0) |
         static_cast<std::uint32_t>(layer % max_message_layers) << 16 |
         static_cast<std::uint32_t>(index % max_message_index);
}

/// The name of a message kind ("activation", ...), as the flight recorder and errors print it.
[[nodiscard]] constexpr const char* to_string(message_kind k) noexcept {
  switch (k) {
    case message_kind::all_gather: return "all_gather";
    case message_kind::all_reduce: return "all_reduce";
    case message_kind::activation: return "activation";
    case message_kind::gradient: return "gradient";
    case message_kind::statistics: return "statistics";
    case message_kind::gradients: return "gradients";
    case message_kind::evaluation: return "evaluation";
    case message_kind::agreement: return "agreement";
    case message_kind::halo: return "halo";
    case message_kind::weight_gradient: return "weight_gradient";
  }
  return "unknown";
}

/// A wire id taken apart: message_id's fields. `known` is false for an id message_id cannot make
/// (kind bits 0 or past the last kind: e.g. the TCP handshake's own frames, or a forged id).
struct message_fields {
  bool known = false;
  message_kind kind = message_kind::all_reduce;
  bool backward = false;
  std::size_t layer = 0;
  std::size_t index = 0;
  friend constexpr bool operator==(const message_fields&, const message_fields&) = default;
};

/// The inverse of message_id (layer and index as they travel: modulo their fields' limits).
[[nodiscard]] constexpr message_fields decode_message_id(std::uint32_t id) noexcept {
  const std::uint32_t kind = id >> 28;
  if (kind == 0 || kind > static_cast<std::uint32_t>(message_kind::weight_gradient) + 1) return {};
  return {true, static_cast<message_kind>(kind - 1), (id >> 27 & 1) != 0, id >> 16 & (max_message_layers - 1),
          id & (max_message_index - 1)};
}

/// A wire id in words, e.g. "activation (forward) of layer 3, micro-batch 1" or "gradients
/// (backward) of layer 1, bucket 0"; the kinds without a layer say what they carry instead.
[[nodiscard]] inline std::string describe_message(std::uint32_t id) {
  const auto f = decode_message_id(id);
  if (!f.known) return "message " + std::to_string(id) + " (not a training message)";
  switch (f.kind) {
    case message_kind::statistics: return "statistics (the step's loss and correct count, among the stages)";
    case message_kind::evaluation: return "evaluation (a batch's loss and correct count, among the replicas)";
    case message_kind::agreement: return "agreement (a sum over every unit)";
    default: break;
  }
  return std::string(to_string(f.kind)) + (f.backward ? " (backward)" : " (forward)") + " of layer " +
         std::to_string(f.layer) + (f.kind == message_kind::gradients ? ", bucket " : ", micro-batch ") +
         std::to_string(f.index);
}

/// One message of a unit's training step, as the plan knows it at compile time: which tensor
/// (kind, pass, layer, micro-batch or bucket), its shape, with whom, how many elements this unit
/// sends for it, and its wire id.
struct step_message {
  message_kind kind = message_kind::all_reduce;
  bool backward = false;  ///< part of the backward pass
  std::size_t layer = 0;  ///< the layer it belongs to (0 for the statistics)
  std::size_t index = 0;  ///< the micro-batch (gradients: the bucket)
  std::size_t rows = 0;   ///< the tensor: rows x columns (the whole vector, for collectives)
  std::size_t columns = 0;
  std::size_t group = 0;  ///< collectives: the units taking part; sends: 2 (this unit and peer)
  unit_id peer = 0;       ///< sends: the unit it goes to
  std::size_t sent = 0;   ///< elements this unit sends for it (ring collectives: exact)
  std::uint32_t id = 0;   ///< message_id(kind, backward, layer, index)
  friend constexpr bool operator==(const step_message&, const step_message&) = default;
};

}  // namespace f2d2n

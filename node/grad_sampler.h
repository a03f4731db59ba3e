#ifndef FEDRAD_NODE_GRAD_SAMPLER_H_
#define FEDRAD_NODE_GRAD_SAMPLER_H_

// Torch-facing: include only from .cc files.

#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_zoo_torch.h"

namespace fedrad::node {

// Per-sample gradients by per-layer capture: during the forward pass it keeps
// each parametric layer's input and hooks its output's gradient; after
// backward() it forms every parameter's gradient for each sample separately
// (an outer product per sample for Linear; for Conv2d the convolution's own
// weight-gradient kernel run per sample where the output has many positions,
// else unfolded activations times output gradients; normalised activations
// times output gradients for GroupNorm and LayerNorm), materialised as
// [batch, ...parameter shape].
//
// Use: install with NetworkImpl::set_tap, run forward on a batch, then
// Backward(loss) (or the loss's own backward()), call PerSampleGradients()
// or ClippedSum(), then Clear() before the next batch. Layers' outputs must
// not be modified in place. Not thread-safe.
// The factor DP-SGD scales each unit's gradient by: min(1, clip / norm)
// where `usable` (a finite gradient), else 0. `norms` [U] float64; `clip`
// +inf leaves every usable unit unscaled (audits only: the broken clipping
// `fedrad audit empirical --without-clipping` shows). The one place a unit's
// contribution is bounded: the data's units and the audit's canaries both
// pass through it.
torch::Tensor ClipFactors(const torch::Tensor& norms, const torch::Tensor& usable, double clip);

class GradSampler : public LayerTap {
 public:
  void Linear(torch::nn::LinearImpl& layer, const torch::Tensor& input, const torch::Tensor& output) override;
  void Conv2d(torch::nn::Conv2dImpl& layer, const torch::Tensor& input, const torch::Tensor& output) override;
  void GroupNorm(torch::nn::GroupNormImpl& layer, const torch::Tensor& input, const torch::Tensor& output) override;
  void LayerNorm(torch::nn::LayerNormImpl& layer, const torch::Tensor& input, const torch::Tensor& output) override;
  void FrozenBatchNorm(FrozenBatchNorm2dImpl& layer, const torch::Tensor& input, const torch::Tensor& output) override;

  // Back-propagates `loss` to the captured layers' outputs only: their
  // gradients are all per-sample gradients are formed from, so the batch
  // gradients of the parameters (which DP-SGD replaces with its noisy clipped
  // sum) are never computed, and the parameters' .grad is left as it was.
  // Fails if `loss` has no gradient.
  absl::Status Backward(const torch::Tensor& loss);

  // One tensor per parameter of `model`, in named_parameters order, each
  // [batch, ...shape]. Fails if a parameter was not seen (a layer type the
  // sampler does not know), or if a layer was used without its gradient.
  absl::StatusOr<std::vector<torch::Tensor>> PerSampleGradients(const torch::nn::Module& model);

  // The clipped sum DP-SGD needs, without materialising what it can avoid.
  // Samples are grouped into `num_units` privacy units by `unit_of_sample`
  // [B]; each unit's gradient (the sum of its samples') is scaled by
  // min(1, clip / norm) and the scaled gradients are summed. For a Linear
  // layer on [B, I] inputs the per-unit norms come from Gram matrices,
  // ||Σ_{i∈u} g_i a_iᵀ||² = Σ_{i,j∈u} (g_i·g_j)(a_i·a_j) (just ||g_i||·||a_i||
  // with one sample per unit), and the sum is one GEMM (w ⊙ g)ᵀ a. A Conv2d
  // whose output has few positions for its width does the same over its
  // positions (Li et al. 2022's ghost norm), its sum one weight-gradient call
  // on the factor-scaled output gradients (Bu et al. 2023's book-keeping);
  // other layers go through per-sample gradients.
  //
  // A unit any of whose values (layer inputs, output gradients, per-sample
  // gradients) is not finite, or whose norm overflows, contributes exactly
  // zero: the sum stays finite and each unit still moves it by at most C.
  // Squared norms are clamped at zero before the square root.
  struct Clipped {
    std::vector<torch::Tensor> sums;  // per parameter, named_parameters order
    torch::Tensor unit_norms;         // [num_units], before clipping (float64); +inf for dropped units
    int64_t nonfinite_units = 0;      // units dropped as above
  };
  absl::StatusOr<Clipped> ClippedSum(const torch::nn::Module& model, const torch::Tensor& unit_of_sample,
                                     int64_t num_units, double clip);
  void Clear();

 private:
  enum class Kind { kLinear, kConv2d, kGroupNorm, kLayerNorm, kFrozenBatchNorm };
  struct Capture {
    Kind kind;
    void* layer;  // the LinearImpl*, Conv2dImpl*, ... that `kind` names
    torch::Tensor input;
    torch::Tensor output;  // kept for Backward(); undefined if it has no gradient
    torch::Tensor grad_output;
  };
  void Add(Kind kind, void* layer, const torch::Tensor& input, const torch::Tensor& output);
  // Whether a Conv2d capture's unit norms are cheaper by Gram matrices of
  // its positions than by materialised per-sample gradients.
  static bool GhostConvIsCheaper(const Capture& c, double samples_per_unit);
  // Per-sample gradients of one capture, keyed by parameter.
  absl::Status Accumulate(const Capture& c, std::map<const void*, torch::Tensor>* out);

  std::vector<Capture> captures_;
};

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_GRAD_SAMPLER_H_

#include "node/grad_sampler.h"

#include <cmath>

#include <c10/util/variant.h>
#include <torch/autograd.h>
#include <torch/nn/functional/fold.h>
#include <torch/nn/functional/normalization.h>

#include "absl/strings/str_cat.h"

namespace fedrad::node {
namespace {

namespace F = torch::nn::functional;

// Output positions from which a Conv2d's per-sample weight gradients come
// from a backward call per sample rather than an unfolded batch: at 169
// positions (the Tramer-Boneh CNN's first layer at batch 256) both take the
// same time, at 4 the unfold is five times faster, at 1,024 and more the
// calls are 4 to 16 times faster (bench/RESULTS.md, "per-sample
// convolution gradients").
constexpr int64_t kPerSampleConvPositions = 128;

void AddTo(std::map<const void*, torch::Tensor>* out, const torch::Tensor& param, torch::Tensor grad) {
  auto it = out->find(param.unsafeGetTensorImpl());
  if (it == out->end()) {
    out->emplace(param.unsafeGetTensorImpl(), std::move(grad));
  } else {
    it->second = it->second + grad;  // a layer applied twice in one forward
  }
}

// `by_param`'s tensors in the model's named_parameters order; names the first
// trainable parameter that has none.
absl::StatusOr<std::vector<torch::Tensor>> InParameterOrder(const torch::nn::Module& model,
                                                            const std::map<const void*, torch::Tensor>& by_param) {
  std::vector<torch::Tensor> out;
  for (const auto& item : model.named_parameters(true)) {
    if (!item.value().requires_grad()) continue;
    auto it = by_param.find(item.value().unsafeGetTensorImpl());
    if (it == by_param.end()) {
      return absl::UnimplementedError(absl::StrCat(
          "no per-sample gradient for parameter '", item.key(),
          "': its layer type is not supported under DP (BatchNorm never is: batch statistics mix samples)"));
    }
    out.push_back(it->second);
  }
  return out;
}

}  // namespace

bool GradSampler::GhostConvIsCheaper(const Capture& c, double samples_per_unit) {
  auto* layer = static_cast<torch::nn::Conv2dImpl*>(c.layer);
  const auto& o = layer->options;
  if (o.groups() != 1 || !c10::holds_alternative<torch::ExpandingArray<2>>(o.padding()) ||
      !c10::holds_alternative<torch::enumtype::kZeros>(o.padding_mode())) {
    return false;  // Accumulate says why it cannot take them either
  }
  // Per sample, materialising costs T·P (P = C·kh·kw·O, the weight's size,
  // and P floats to hold) and the ghost norm (n·T)²·(C·kh·kw + O) over a
  // unit of n samples: the ghost wins where the output has few positions
  // for its width, as in a ResNet's later stages (T = 4 to 64 at 64x64).
  const double positions = static_cast<double>(c.grad_output.numel() / (c.grad_output.size(0) * c.grad_output.size(1)));
  const double patch = static_cast<double>(c.input.size(1) * (*o.kernel_size())[0] * (*o.kernel_size())[1]);
  const double out = static_cast<double>(c.grad_output.size(1));
  return samples_per_unit * positions * (patch + out) < patch * out;
}

void GradSampler::Add(Kind kind, void* layer, const torch::Tensor& input, const torch::Tensor& output) {
  const size_t index = captures_.size();
  captures_.push_back({kind, layer, input.detach(), torch::Tensor(), torch::Tensor()});
  if (output.requires_grad()) {
    captures_.back().output = output;
    output.register_hook([this, index](torch::Tensor grad) { captures_[index].grad_output = grad.detach(); });
  }
}

absl::Status GradSampler::Backward(const torch::Tensor& loss) {
  if (!loss.requires_grad()) return absl::InvalidArgumentError("the loss has no gradient to back-propagate");
  std::vector<torch::Tensor> outputs;
  std::vector<size_t> index;
  for (size_t i = 0; i < captures_.size(); ++i) {
    if (!captures_[i].output.defined()) continue;
    outputs.push_back(captures_[i].output);
    index.push_back(i);
  }
  if (outputs.empty()) return absl::OkStatus();
  // Only the gradients reaching the requested tensors are computed; the
  // engine skips each layer's weight gradient, whose parameter is not asked
  // for. The hooks fire on the way with the same values.
  const std::vector<torch::Tensor> grads =
      torch::autograd::grad({loss}, outputs, /*grad_outputs=*/{}, /*retain_graph=*/false, /*create_graph=*/false,
                            /*allow_unused=*/true);
  for (size_t k = 0; k < grads.size(); ++k) {
    // An output the loss does not reach keeps no gradient, as with backward().
    if (grads[k].defined()) captures_[index[k]].grad_output = grads[k].detach();
    captures_[index[k]].output = torch::Tensor();  // the graph is spent
  }
  return absl::OkStatus();
}

// A frozen layer ([model] freeze: its parameters take no gradient) is not
// captured: no per-sample work is done for it, and the gradient still flows
// through it to the layers before. [model] freeze names whole layers only.
void GradSampler::Linear(torch::nn::LinearImpl& l, const torch::Tensor& in, const torch::Tensor& out) {
  if (l.weight.requires_grad()) Add(Kind::kLinear, &l, in, out);
}
void GradSampler::Conv2d(torch::nn::Conv2dImpl& l, const torch::Tensor& in, const torch::Tensor& out) {
  if (l.weight.requires_grad()) Add(Kind::kConv2d, &l, in, out);
}
void GradSampler::GroupNorm(torch::nn::GroupNormImpl& l, const torch::Tensor& in, const torch::Tensor& out) {
  if (l.weight.defined() && l.weight.requires_grad()) Add(Kind::kGroupNorm, &l, in, out);
}
void GradSampler::LayerNorm(torch::nn::LayerNormImpl& l, const torch::Tensor& in, const torch::Tensor& out) {
  if (l.weight.defined() && l.weight.requires_grad()) Add(Kind::kLayerNorm, &l, in, out);
}
void GradSampler::FrozenBatchNorm(FrozenBatchNorm2dImpl& l, const torch::Tensor& in, const torch::Tensor& out) {
  if (l.weight.requires_grad()) Add(Kind::kFrozenBatchNorm, &l, in, out);
}

void GradSampler::Clear() { captures_.clear(); }

absl::Status GradSampler::Accumulate(const Capture& c, std::map<const void*, torch::Tensor>* out) {
  const torch::Tensor& a = c.input;
  const torch::Tensor& g = c.grad_output;
  const int64_t batch = a.size(0);
  switch (c.kind) {
    case Kind::kLinear: {
      auto* layer = static_cast<torch::nn::LinearImpl*>(c.layer);
      if (a.dim() == 2) {
        // One outer product per sample: a broadcast multiply, which is much
        // faster than a batched GEMM with an inner dimension of 1.
        AddTo(out, layer->weight, g.unsqueeze(2) * a.unsqueeze(1));
        if (layer->bias.defined()) AddTo(out, layer->bias, g);
        return absl::OkStatus();
      }
      // [B, T, I] and [B, T, O]: sum the outer products over T.
      const torch::Tensor a3 = a.reshape({batch, -1, a.size(-1)});
      const torch::Tensor g3 = g.reshape({batch, -1, g.size(-1)});
      AddTo(out, layer->weight, torch::bmm(g3.transpose(1, 2), a3));
      if (layer->bias.defined()) AddTo(out, layer->bias, g3.sum(1));
      return absl::OkStatus();
    }
    case Kind::kConv2d: {
      auto* layer = static_cast<torch::nn::Conv2dImpl*>(c.layer);
      const auto& o = layer->options;  // detail::ConvNdOptions<2>
      if (o.groups() != 1 || !c10::holds_alternative<torch::ExpandingArray<2>>(o.padding()) ||
          !c10::holds_alternative<torch::enumtype::kZeros>(o.padding_mode())) {
        return absl::UnimplementedError("per-sample gradients support Conv2d with groups = 1 and zero padding only");
      }
      const auto& padding = c10::get<torch::ExpandingArray<2>>(o.padding());
      const torch::Tensor g3 = g.reshape({batch, g.size(1), -1});
      std::vector<int64_t> shape{batch};
      for (int64_t d : layer->weight.sizes()) shape.push_back(d);
      torch::Tensor gw;
      if (g3.size(2) >= kPerSampleConvPositions) {
        // Large outputs: the convolution's own weight gradient, one sample at
        // a time (a backward that computes nothing else). It reads the
        // input in place, where the unfolded copy below would be kh*kw
        // times its size: about 16 times faster for the U-Net's 64x64
        // layers (measured with bench/fedrad-bench-dpsgd).
        gw = torch::empty(shape, layer->weight.options());
        for (int64_t b = 0; b < batch; ++b) {
          gw[b].copy_(std::get<1>(at::convolution_backward(
              g.narrow(0, b, 1), a.narrow(0, b, 1), layer->weight, c10::nullopt, *o.stride(), *padding, *o.dilation(),
              /*transposed=*/false, /*output_padding=*/{0, 0}, /*groups=*/1, {false, true, false})));
        }
      } else {
        // Small outputs, where a call per sample would cost more than the
        // copy: unfolded input [B, C*kh*kw, L] times output gradients [B, O, L].
        const torch::Tensor cols = F::unfold(
            a, F::UnfoldFuncOptions(*o.kernel_size()).dilation(*o.dilation()).padding(*padding).stride(*o.stride()));
        gw = torch::bmm(g3, cols.transpose(1, 2)).reshape(shape);
      }
      AddTo(out, layer->weight, gw);
      if (layer->bias.defined()) AddTo(out, layer->bias, g3.sum(2));
      return absl::OkStatus();
    }
    case Kind::kGroupNorm: {
      auto* layer = static_cast<torch::nn::GroupNormImpl*>(c.layer);
      const auto& o = layer->options;
      const torch::Tensor normalized = F::group_norm(a, F::GroupNormFuncOptions(o.num_groups()).eps(o.eps()));
      std::vector<int64_t> spatial;
      for (int64_t d = 2; d < a.dim(); ++d) spatial.push_back(d);
      if (o.affine()) {
        AddTo(out, layer->weight, spatial.empty() ? g * normalized : (g * normalized).sum(spatial));
        AddTo(out, layer->bias, spatial.empty() ? g : g.sum(spatial));
      }
      return absl::OkStatus();
    }
    case Kind::kLayerNorm: {
      auto* layer = static_cast<torch::nn::LayerNormImpl*>(c.layer);
      const auto& o = layer->options;
      const torch::Tensor normalized = F::layer_norm(a, F::LayerNormFuncOptions(o.normalized_shape()).eps(o.eps()));
      // Sum over the dimensions between the batch and the normalised ones.
      std::vector<int64_t> middle;
      const int64_t first_normalized = a.dim() - static_cast<int64_t>(o.normalized_shape().size());
      for (int64_t d = 1; d < first_normalized; ++d) middle.push_back(d);
      if (o.elementwise_affine()) {
        AddTo(out, layer->weight, middle.empty() ? g * normalized : (g * normalized).sum(middle));
        AddTo(out, layer->bias, middle.empty() ? g : g.sum(middle));
      }
      return absl::OkStatus();
    }
    case Kind::kFrozenBatchNorm: {
      // A per-channel affine map of fixed statistics: per sample, weight's
      // gradient is the output gradient times the normalised input, bias's
      // the output gradient, each summed over the positions.
      auto* layer = static_cast<FrozenBatchNorm2dImpl*>(c.layer);
      std::vector<int64_t> spatial;
      for (int64_t d = 2; d < a.dim(); ++d) spatial.push_back(d);
      const torch::Tensor normalized = layer->Normalized(a);
      AddTo(out, layer->weight, spatial.empty() ? g * normalized : (g * normalized).sum(spatial));
      AddTo(out, layer->bias, spatial.empty() ? g : g.sum(spatial));
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unknown layer kind");
}

absl::StatusOr<std::vector<torch::Tensor>> GradSampler::PerSampleGradients(const torch::nn::Module& model) {
  std::map<const void*, torch::Tensor> grads;
  torch::NoGradGuard no_grad;
  for (const Capture& c : captures_) {
    if (!c.grad_output.defined()) continue;  // a branch the loss did not reach
    absl::Status s = Accumulate(c, &grads);
    if (!s.ok()) return s;
  }
  return InParameterOrder(model, grads);
}

torch::Tensor ClipFactors(const torch::Tensor& norms, const torch::Tensor& usable, double clip) {
  const torch::Tensor scale = std::isinf(clip) ? torch::ones_like(norms) : (clip / (norms + 1e-6)).clamp_max(1.0);
  return torch::where(usable, scale, torch::zeros({}, norms.options()));
}

absl::StatusOr<GradSampler::Clipped> GradSampler::ClippedSum(const torch::nn::Module& model,
                                                             const torch::Tensor& unit_of_sample, int64_t num_units,
                                                             double clip) {
  torch::NoGradGuard no_grad;
  if (num_units == 0) {
    // An empty Poisson draw: nothing to clip; the step is noise only.
    Clipped empty;
    empty.unit_norms = torch::zeros({0}, torch::kFloat64);
    for (const auto& item : model.named_parameters(true)) {
      if (item.value().requires_grad()) empty.sums.push_back(torch::zeros_like(item.value()));
    }
    return empty;
  }
  const int64_t batch = unit_of_sample.size(0);
  const bool identity = num_units == batch && torch::equal(unit_of_sample, torch::arange(batch, torch::kInt64));
  // Linear layers on 2-D inputs, each captured once, take the Gram path.
  std::map<const void*, int> uses;
  for (const Capture& c : captures_) {
    if (c.grad_output.defined()) ++uses[c.layer];
  }
  const double samples_per_unit = static_cast<double>(batch) / static_cast<double>(num_units);
  auto ghost = [&](const Capture& c) {
    if (uses[c.layer] != 1) return false;
    if (c.kind == Kind::kLinear) return c.input.dim() == 2;
    if (c.kind == Kind::kConv2d) return GhostConvIsCheaper(c, samples_per_unit);
    return false;
  };
  // Materialised per-sample gradients first: a unit is kept only if every
  // value that feeds its gradient is finite. One NaN or Inf (a corrupt image,
  // an overflow) would otherwise pass through clipping (NaN compares false)
  // and, through 0 * NaN in the sums, turn the whole noised sum into NaN.
  std::map<const void*, torch::Tensor> materialised;  // parameter -> per-sample [B, ...]
  for (const Capture& c : captures_) {
    if (!c.grad_output.defined() || ghost(c)) continue;
    absl::Status s = Accumulate(c, &materialised);
    if (!s.ok()) return s;
  }
  auto rows_finite = [&](const torch::Tensor& t) { return torch::isfinite(t.reshape({batch, -1})).all(1); };
  torch::Tensor sample_ok = torch::ones({batch}, torch::kBool);
  for (const Capture& c : captures_) {
    if (!c.grad_output.defined() || !ghost(c)) continue;
    sample_ok = sample_ok & rows_finite(c.input) & rows_finite(c.grad_output);
  }
  // A materialised gradient's row is finite exactly when its norm is (a NaN
  // or Inf makes the norm so), save rows so large that the norm overflows,
  // which are dropped as well. The norms serve again below when each sample
  // is its own unit.
  std::map<const void*, torch::Tensor> sample_sq;  // parameter -> [B] squared norms, float64
  for (auto& [param, per_sample] : materialised) {
    torch::Tensor n2 = per_sample.reshape({batch, -1}).norm(2, {1}).to(torch::kFloat64).pow(2);
    sample_ok = sample_ok & torch::isfinite(n2);
    sample_sq[param] = std::move(n2);
  }
  // A unit with one bad sample is dropped whole: its other samples are not
  // a gradient of that unit.
  torch::Tensor unit_ok =
      torch::zeros({num_units}, torch::kInt64).index_add_(0, unit_of_sample, (~sample_ok).to(torch::kInt64)) == 0;
  const torch::Tensor keep = unit_ok.index_select(0, unit_of_sample);  // [B]
  auto zero_dropped = [&](const torch::Tensor& t) {
    std::vector<int64_t> shape(static_cast<size_t>(t.dim()), 1);
    shape[0] = batch;
    return torch::where(keep.reshape(shape), t, torch::zeros({}, t.options()));
  };

  // Squared norms of the units' gradients. Only pairs of samples of one unit
  // enter a unit's norm (torch::where, never a multiplication by a 0/1
  // mask, so an overflow in another unit cannot reach it).
  torch::Tensor sq = torch::zeros({num_units}, torch::kFloat64);
  // Each Gram-path layer's input and output gradient, dropped units zeroed.
  std::map<torch::nn::LinearImpl*, std::pair<torch::Tensor, torch::Tensor>> ghost_inputs;
  std::vector<std::pair<const Capture*, std::pair<torch::Tensor, torch::Tensor>>> ghost_convs;
  const torch::Tensor same_unit =
      identity ? torch::Tensor() : unit_of_sample.unsqueeze(0) == unit_of_sample.unsqueeze(1);  // [B, B]
  // The samples of each unit, for the convolutions' Gram path.
  std::vector<std::vector<int64_t>> members;
  if (!identity) {
    members.resize(static_cast<size_t>(num_units));
    const torch::Tensor units = unit_of_sample.contiguous();
    const int64_t* u = units.data_ptr<int64_t>();
    for (int64_t i = 0; i < batch; ++i) members[static_cast<size_t>(u[i])].push_back(i);
  }
  for (const Capture& c : captures_) {
    if (!c.grad_output.defined() || !ghost(c) || c.kind != Kind::kConv2d) continue;
    auto* layer = static_cast<torch::nn::Conv2dImpl*>(c.layer);
    const torch::Tensor a = zero_dropped(c.input);
    const torch::Tensor g = zero_dropped(c.grad_output);
    // A sample's weight gradient is Σ_t g_t a_tᵀ over output positions t
    // (a_t the unfolded input patch), so its squared norm is
    // Σ_{t,t'} (a_t·a_t')(g_t·g_t') (Li et al. 2022's ghost norm), and the
    // bias's is Σ_{t,t'} g_t·g_t'. Over a unit's samples the pairs run over
    // all their positions.
    const auto& o = layer->options;
    const torch::Tensor cols = F::unfold(a, F::UnfoldFuncOptions(*o.kernel_size())
                                                .dilation(*o.dilation())
                                                .padding(*c10::get<torch::ExpandingArray<2>>(o.padding()))
                                                .stride(*o.stride()));  // [B, C*kh*kw, T]
    const torch::Tensor g3 = g.reshape({batch, g.size(1), -1});         // [B, O, T]
    const double bias = layer->bias.defined() ? 1.0 : 0.0;
    if (identity) {
      const torch::Tensor ga = torch::bmm(cols.transpose(1, 2), cols);  // [B, T, T]
      const torch::Tensor gg = torch::bmm(g3.transpose(1, 2), g3);
      sq += ((ga + bias) * gg).sum({1, 2}).to(torch::kFloat64);
    } else {
      for (int64_t u = 0; u < num_units; ++u) {
        const std::vector<int64_t>& m = members[static_cast<size_t>(u)];
        if (m.empty()) continue;
        const torch::Tensor idx = torch::tensor(m, torch::kInt64);
        // The unit's positions as rows: [n*T, C*kh*kw] and [n*T, O].
        const torch::Tensor au = cols.index_select(0, idx).transpose(1, 2).reshape({-1, cols.size(1)});
        const torch::Tensor gu = g3.index_select(0, idx).transpose(1, 2).reshape({-1, g3.size(1)});
        sq[u] += ((au.mm(au.t()) + bias) * gu.mm(gu.t())).sum().to(torch::kFloat64);
      }
    }
    ghost_convs.push_back({&c, {a, g}});
  }
  for (const Capture& c : captures_) {
    if (!c.grad_output.defined() || !ghost(c) || c.kind != Kind::kLinear) continue;
    auto* layer = static_cast<torch::nn::LinearImpl*>(c.layer);
    const torch::Tensor a = zero_dropped(c.input);
    const torch::Tensor g = zero_dropped(c.grad_output);
    const double bias = layer->bias.defined() ? 1.0 : 0.0;
    if (identity) {
      const torch::Tensor g2 = g.pow(2).sum(1).to(torch::kFloat64);
      sq += g2 * (a.pow(2).sum(1).to(torch::kFloat64) + bias);
    } else {
      const torch::Tensor m = g.mm(g.t()) * (a.mm(a.t()) + bias);  // [B, B]
      const torch::Tensor within = torch::where(same_unit, m, torch::zeros({}, m.options())).sum(1);
      sq.index_add_(0, unit_of_sample, within.to(torch::kFloat64));
    }
    ghost_inputs[layer] = {a, g};
  }
  torch::Tensor one_hot;  // [units, batch]
  if (!identity) {
    one_hot = torch::zeros({num_units, batch}, torch::kFloat32);
    one_hot.index_put_({unit_of_sample, torch::arange(batch, torch::kInt64)}, 1.0);
  }
  std::map<const void*, torch::Tensor> per_unit;
  for (auto& [param, per_sample] : materialised) {
    torch::Tensor flat = per_sample.reshape({batch, -1});
    if (identity) {
      // Dropped units' rows are zeroed when summed (below).
      sq += torch::where(keep, sample_sq[param], torch::zeros({}, torch::kFloat64));
      per_unit[param] = std::move(flat);
      continue;
    }
    torch::Tensor u = one_hot.to(flat.dtype()).mm(zero_dropped(flat));
    sq += u.norm(2, {1}).to(torch::kFloat64).pow(2);
    per_unit[param] = std::move(u);
  }
  // Rounding in the Gram products can leave a tiny negative square.
  sq = sq.clamp_min(0);
  // A unit whose values were finite but whose norm overflowed is dropped too.
  unit_ok = unit_ok & torch::isfinite(sq);
  Clipped out;
  out.nonfinite_units = num_units - unit_ok.sum().item<int64_t>();
  out.unit_norms = torch::where(unit_ok, sq.sqrt(), torch::full({}, INFINITY, sq.options()));
  const torch::Tensor factor = ClipFactors(out.unit_norms, unit_ok, clip).to(torch::kFloat32);  // [U]
  const torch::Tensor weight = identity ? factor : factor.index_select(0, unit_of_sample);      // [B]
  std::map<const void*, torch::Tensor> sums;
  for (const auto& [layer, ag] : ghost_inputs) {
    const auto& [a, g] = ag;
    const torch::Tensor wg = g * weight.to(g.dtype()).unsqueeze(1);
    sums[layer->weight.unsafeGetTensorImpl()] = wg.t().mm(a);
    if (layer->bias.defined()) sums[layer->bias.unsafeGetTensorImpl()] = wg.sum(0);
  }
  for (const auto& [capture, ag] : ghost_convs) {
    // The clipped sum in one weight-gradient call, each sample's output
    // gradient scaled by its unit's factor (dropped samples are zero).
    const auto& [a, g] = ag;
    auto* layer = static_cast<torch::nn::Conv2dImpl*>(capture->layer);
    const auto& o = layer->options;
    std::vector<int64_t> shape(static_cast<size_t>(g.dim()), 1);
    shape[0] = batch;
    const torch::Tensor wg = g * weight.to(g.dtype()).reshape(shape);
    sums[layer->weight.unsafeGetTensorImpl()] = std::get<1>(at::convolution_backward(
        wg, a, layer->weight, c10::nullopt, *o.stride(), *c10::get<torch::ExpandingArray<2>>(o.padding()),
        *o.dilation(), /*transposed=*/false, /*output_padding=*/{0, 0}, /*groups=*/1, {false, true, false}));
    if (layer->bias.defined()) sums[layer->bias.unsafeGetTensorImpl()] = wg.sum({0, 2, 3});
  }
  for (auto& [param, u] : per_unit) {
    // Rows of dropped units may hold an overflow or a NaN: zeroed, not
    // multiplied by 0 (which leaves NaN). With none dropped, no copy.
    const torch::Tensor kept =
        out.nonfinite_units == 0 ? u : torch::where(unit_ok.unsqueeze(1), u, torch::zeros({}, u.options()));
    sums[param] = factor.to(u.dtype()).unsqueeze(0).mm(kept).squeeze(0);
  }
  absl::StatusOr<std::vector<torch::Tensor>> ordered = InParameterOrder(model, sums);
  if (!ordered.ok()) return ordered.status();
  size_t k = 0;
  for (const auto& item : model.named_parameters(true)) {
    if (item.value().requires_grad()) out.sums.push_back((*ordered)[k++].reshape(item.value().sizes()));
  }
  return out;
}

}  // namespace fedrad::node

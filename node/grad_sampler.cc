#include "node/grad_sampler.h"

#include <c10/util/variant.h>
#include <torch/nn/functional/fold.h>
#include <torch/nn/functional/normalization.h>

#include "absl/strings/str_cat.h"

namespace fedrad::node {
namespace {

namespace F = torch::nn::functional;

void AddTo(std::map<const void*, torch::Tensor>* out, const torch::Tensor& param, torch::Tensor grad) {
  auto it = out->find(param.unsafeGetTensorImpl());
  if (it == out->end()) {
    out->emplace(param.unsafeGetTensorImpl(), std::move(grad));
  } else {
    it->second = it->second + grad;  // a layer applied twice in one forward
  }
}

}  // namespace

void GradSampler::Add(Kind kind, void* layer, const torch::Tensor& input, const torch::Tensor& output) {
  const size_t index = captures_.size();
  captures_.push_back({kind, layer, input.detach(), torch::Tensor()});
  if (output.requires_grad()) {
    output.register_hook([this, index](torch::Tensor grad) { captures_[index].grad_output = grad.detach(); });
  }
}

void GradSampler::Linear(torch::nn::LinearImpl& l, const torch::Tensor& in, const torch::Tensor& out) {
  Add(Kind::kLinear, &l, in, out);
}
void GradSampler::Conv2d(torch::nn::Conv2dImpl& l, const torch::Tensor& in, const torch::Tensor& out) {
  Add(Kind::kConv2d, &l, in, out);
}
void GradSampler::GroupNorm(torch::nn::GroupNormImpl& l, const torch::Tensor& in, const torch::Tensor& out) {
  Add(Kind::kGroupNorm, &l, in, out);
}
void GradSampler::LayerNorm(torch::nn::LayerNormImpl& l, const torch::Tensor& in, const torch::Tensor& out) {
  Add(Kind::kLayerNorm, &l, in, out);
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
      // Unfolded input [B, C*kh*kw, L] times output gradients [B, O, L].
      const torch::Tensor cols = F::unfold(
          a, F::UnfoldFuncOptions(*o.kernel_size()).dilation(*o.dilation()).padding(*padding).stride(*o.stride()));
      const torch::Tensor g3 = g.reshape({batch, g.size(1), -1});
      const torch::Tensor gw = torch::bmm(g3, cols.transpose(1, 2));
      std::vector<int64_t> shape{batch};
      for (int64_t d : layer->weight.sizes()) shape.push_back(d);
      AddTo(out, layer->weight, gw.reshape(shape));
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
      const torch::Tensor normalized =
          F::layer_norm(a, F::LayerNormFuncOptions(o.normalized_shape()).eps(o.eps()));
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
  std::vector<torch::Tensor> out;
  for (const auto& item : model.named_parameters(true)) {
    if (!item.value().requires_grad()) continue;
    auto it = grads.find(item.value().unsafeGetTensorImpl());
    if (it == grads.end()) {
      return absl::UnimplementedError(absl::StrCat(
          "no per-sample gradient for parameter '", item.key(),
          "': its layer type is not supported under DP (BatchNorm never is: batch statistics mix samples)"));
    }
    out.push_back(it->second);
  }
  return out;
}

}  // namespace fedrad::node

#include "node/losses.h"

#include <torch/nn/functional/loss.h>
#include <torch/torch.h>

namespace fedrad::node {

namespace F = torch::nn::functional;

at::Tensor SoftDice(const at::Tensor& logits, const at::Tensor& masks) {
  const int64_t classes = logits.size(1);
  const torch::Tensor p = torch::softmax(logits, 1).narrow(1, 1, classes - 1);  // [N, K-1, S, S]
  const torch::Tensor t = F::one_hot(masks, classes).permute({0, 3, 1, 2}).narrow(1, 1, classes - 1).to(p.dtype());
  const torch::Tensor overlap = (p * t).sum({2, 3});
  return (2 * overlap + 1) / (p.sum({2, 3}) + t.sum({2, 3}) + 1);
}

at::Tensor TaskLoss(ModelTask task, const at::Tensor& logits, const at::Tensor& targets) {
  if (task == ModelTask::kMultilabel) {
    return F::binary_cross_entropy_with_logits(logits, targets.to(logits.dtype()),
                                               F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone))
        .mean(1)
        .sum();
  }
  if (task != ModelTask::kSegmentation) {
    return F::cross_entropy(logits, targets, F::CrossEntropyFuncOptions().reduction(torch::kSum));
  }
  const torch::Tensor ce =
      F::cross_entropy(logits, targets, F::CrossEntropyFuncOptions().reduction(torch::kNone)).mean({1, 2});
  const torch::Tensor dice = 1 - SoftDice(logits, targets).mean(1);
  return (ce + dice).sum();
}

}  // namespace fedrad::node

#ifndef FEDRAD_NODE_LOSSES_H_
#define FEDRAD_NODE_LOSSES_H_

// Torch-facing: include only from .cc files.

#include <ATen/Tensor.h>

#include "common/plan.h"

namespace fedrad::node {

// The training loss of a batch, summed over its images (never averaged over
// the batch), so that each image's gradient is its own term's: DP-SGD's
// per-sample gradients rely on it.
//
// Classification: cross-entropy of logits [N, K] against labels [N].
// Segmentation: per image, the cross-entropy averaged over its pixels plus
// the soft Dice loss 1 - mean over the foreground classes c >= 1 of
// (2·Σ p·t + 1) / (Σ p + Σ t + 1), with p the softmax of logits
// [N, K, S, S] and t the one-hot of masks [N, S, S] (Milletari et al.
// 2016, smoothed by 1 so that an image without foreground, where a perfect
// prediction has Σ p = Σ t = 0, scores 1 and stays finite).
// Multilabel: per image, the binary cross-entropy of each label's sigmoid
// (logits [N, L] against 0/1 targets [N, L]) averaged over the L labels, so
// an image's loss keeps the scale of one binary decision whatever L.
at::Tensor TaskLoss(ModelTask task, const at::Tensor& logits, const at::Tensor& targets);

// Per image soft Dice of each foreground class, [N, K - 1], as above.
at::Tensor SoftDice(const at::Tensor& logits, const at::Tensor& masks);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_LOSSES_H_

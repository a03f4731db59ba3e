#ifndef FEDRAD_COORDINATOR_FEDAVG_H_
#define FEDRAD_COORDINATOR_FEDAVG_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedrad::coordinator {

// Weighted federated averaging (McMahan et al. 2017) of weight deltas:
//   mean delta = sum_i(n_i * delta_i) / sum_i(n_i)
// folded one update at a time, chunk by chunk, so memory is one running sum
// of the model's size however many nodes answer.
class FedAvgAccumulator {
 public:
  explicit FedAvgAccumulator(size_t num_values) : sum_(num_values, 0.0f) {}

  // Adds weight * values to the running sum at [offset, offset + n).
  void AddChunk(size_t offset, const float* values, size_t n, double weight);
  // Counts one complete update of `weight` examples.
  void FinishUpdate(double weight) {
    total_weight_ += weight;
    ++updates_;
  }
  // Streams a spooled update file (raw float32 deltas) into the sum.
  absl::Status AddUpdateFile(const std::string& path, double weight);

  int updates() const { return updates_; }
  // The weighted mean delta, made in place from the running sum (which it
  // takes: no second model-sized buffer).
  absl::StatusOr<std::vector<float>> TakeMeanDelta() &&;

 private:
  std::vector<float> sum_;
  double total_weight_ = 0;
  int updates_ = 0;
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_FEDAVG_H_

#ifndef FEDRAD_COORDINATOR_FEDAVG_H_
#define FEDRAD_COORDINATOR_FEDAVG_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace fedrad::coordinator {

// The weighted sum of a round's update deltas for federated averaging
// (McMahan et al. 2017): mean delta = sum_i(w_i * delta_i) / sum_i(w_i).
//
// Updates are folded in chunk by chunk as they stream in, from any thread,
// so the coordinator holds one float64 sum of the model's size however many
// nodes answer (float64 makes the arrival order invisible in the float32
// mean but for rare rounding ties). An update rejected part-way (a bad
// value, a broken stream, the round closing under it) leaves no trace: the
// sum is folded again from the spool files of the others (subtracting it
// would leave rounding residue as large as its largest values). That costs
// one pass over the spooled updates, only when it happens.
// The weights to average with: each of `weights` (positive) capped at
// `ratio` times their lower median (the ⌊(n-1)/2⌋-th smallest, so with two
// sites the smaller one's), none capped when ratio is 0 or n < 2.
std::vector<double> CappedWeights(const std::vector<double>& weights, double ratio);

class UpdateSum {
 public:
  explicit UpdateSum(size_t num_values);
  UpdateSum(const UpdateSum&) = delete;
  UpdateSum& operator=(const UpdateSum&) = delete;

  size_t size() const { return sum_.size(); }
  // Empties the sum for a new round, keeping its memory. Contribution ids
  // must not be reused across rounds.
  void Reset();

  // Contribution `id` of `weight` starts; the bytes folded for it are also
  // written (before they are folded) to `spool_path`, in order.
  absl::Status Begin(uint64_t id, double weight, const std::string& spool_path);
  // Folds values [offset, offset + n) of contribution `id`; chunks come in
  // order from offset 0. Refused once the sum is sealed.
  absl::Status Add(uint64_t id, size_t offset, const float* values, size_t n);
  // Counts contribution `id`, which must be complete.
  absl::Status Accept(uint64_t id);
  // Takes back what was folded of `id`, unless it was accepted. Idempotent.
  // Reads the spool files of the other contributions, without holding up
  // their Add()s meanwhile (one withdrawal at a time).
  absl::Status Withdraw(uint64_t id);
  // No more folding; every contribution not accepted is withdrawn.
  absl::Status Seal();

  // After Seal(): the accepted contributions' weights become `weights`
  // (by id; others keep theirs), and the sum is folded again from the
  // spool files if any changed (weight capping, rarely).
  absl::Status Reweight(const std::map<uint64_t, double>& weights);

  // Folds a whole spooled update file and accepts it (for strategies given
  // spooled updates only, and tests); Seal() afterwards.
  absl::Status AddFile(const std::string& path, double weight);

  // The accepted contributions.
  int accepted() const;
  double total_weight() const;
  // After Seal(), with accepted() > 0: the mean delta of value i,
  // sum[i] / total_weight().
  double Mean(size_t i) const { return sum_[i] * inverse_weight_; }

 private:
  struct Contribution {
    double weight = 0;
    std::string spool_path;
    size_t folded = 0;  // values folded, from 0
    bool accepted = false;
  };
  void Fold(size_t offset, const float* values, size_t n, double weight) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The sum folded again from every contribution's spool file.
  absl::Status RefoldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex refold_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // one refold from the spool at a time
  mutable absl::Mutex mu_;
  std::vector<double> sum_;  // guarded by mu_ until sealed, then read-only
  std::map<uint64_t, Contribution> contributions_ ABSL_GUARDED_BY(mu_);
  bool sealed_ ABSL_GUARDED_BY(mu_) = false;
  double total_weight_ ABSL_GUARDED_BY(mu_) = 0;
  int accepted_ ABSL_GUARDED_BY(mu_) = 0;
  double inverse_weight_ = 0;  // set by Seal()
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_FEDAVG_H_

#ifndef FEDRAD_COORDINATOR_UPDATE_INTAKE_H_
#define FEDRAD_COORDINATOR_UPDATE_INTAKE_H_

// One owner of an update's way in: its spool file, the checks of every
// chunk (size, finite values, L2 norm), its hash, and its fold into the
// round's running sum (and its withdrawal from it). The gRPC service only
// moves bytes into an Upload; the round driver admits uploads, accepts or
// withdraws finished ones (on its worker: a withdrawal re-reads the spool)
// and seals the sum for the strategy. Nobody else touches the sum or the
// spool.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/wire_dtype.h"
#include "coordinator/fedavg.h"
#include "crypto/sha256.h"

namespace fedrad::coordinator {

// What an upload must be, from its checked claim.
struct UploadSpec {
  uint64_t id = 0;              // from Admit
  std::string spool_path;       // float32, manifest order
  uint64_t expected_bytes = 0;  // on the wire, in `dtype`
  WireDtype dtype = WireDtype::kFloat32;
  std::string update_sha256;  // of the bytes as sent
  double max_norm = 0;        // the plan's bound on the update's L2 norm
};

class UpdateIntake {
 public:
  // `folds`: the strategy takes the running sum (FedAvg family); otherwise
  // updates are only spooled, for the strategy to read.
  UpdateIntake(size_t num_values, bool folds);

  // One update's bytes as they arrive. Each error is the reason to reject
  // it (Internal: the coordinator's own failure, such as its spool).
  class Upload {
   public:
    ~Upload();
    Upload(const Upload&) = delete;
    Upload& operator=(const Upload&) = delete;

    // One chunk: whole values, in order, within the expected size.
    absl::Status Take(std::string_view data);
    // The stream ended: all bytes came (else Unavailable: the node may send
    // it again) and they match the claimed SHA-256.
    absl::Status Complete();
    uint64_t received() const { return received_; }
    uint64_t expected() const { return spec_.expected_bytes; }

   private:
    friend class UpdateIntake;
    Upload(UpdateSum* sum, UploadSpec spec, int fd);

    UpdateSum* const sum_;  // null: not folded
    const UploadSpec spec_;
    int fd_;
    uint64_t received_ = 0;
    double sum_squares_ = 0;
    std::vector<float> values_;  // a 16-bit chunk's values
    crypto::Sha256 hash_;
  };

  // A new round: the sum empties (its memory kept).
  void NewRound();
  // Starts contribution `id` of `weight` (driver, while it admits the
  // update). Refused once the round's sum is sealed.
  absl::Status Admit(uint64_t id, double weight, const std::string& spool_path);
  // Opens an admitted upload's spool file (overwritten in place).
  absl::StatusOr<std::unique_ptr<Upload>> Open(const UploadSpec& spec);
  // A finished upload counts; one rejected or interrupted comes out of the
  // sum without holding up the others' chunks (driver's worker).
  absl::Status Accept(uint64_t id);
  absl::Status Withdraw(uint64_t id);
  // The round's sum of exactly the accepted uploads, with their weights
  // changed to `weights` (by id) where given; null when not folding.
  // Only the round driver calls it, after the round closes.
  absl::StatusOr<const UpdateSum*> Seal(const std::map<uint64_t, double>& weights);

 private:
  std::unique_ptr<UpdateSum> sum_;  // null: not folding
};

}  // namespace fedrad::coordinator

#endif  // FEDRAD_COORDINATOR_UPDATE_INTAKE_H_

#include "coordinator/update_intake.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/bench_floor.h"
#include "common/plan.h"

namespace fedrad::coordinator {
namespace {

// Sum of v[i]^2 in double, in four independent lanes so the compiler can
// vectorise it. NaN or infinity in, non-finite out.
double SumOfSquares(const float* v, size_t n) {
  double lane[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) lane[k] += static_cast<double>(v[i + k]) * v[i + k];
  }
  for (; i < n; ++i) lane[0] += static_cast<double>(v[i]) * v[i];
  return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

}  // namespace

UpdateIntake::UpdateIntake(size_t num_values, bool folds) {
  if (folds) sum_ = std::make_unique<UpdateSum>(num_values);
}

void UpdateIntake::NewRound() {
  if (sum_) sum_->Reset();
}

absl::Status UpdateIntake::Admit(uint64_t id, double weight, const std::string& spool_path) {
  return sum_ ? sum_->Begin(id, weight, spool_path) : absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<UpdateIntake::Upload>> UpdateIntake::Open(const UploadSpec& spec) {
  const int fd = ::open(spec.spool_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("coordinator cannot spool the update: ", std::strerror(errno)));
  return std::unique_ptr<Upload>(new Upload(sum_.get(), spec, fd));
}

absl::Status UpdateIntake::Accept(uint64_t id) { return sum_ ? sum_->Accept(id) : absl::OkStatus(); }

absl::Status UpdateIntake::Withdraw(uint64_t id) { return sum_ ? sum_->Withdraw(id) : absl::OkStatus(); }

absl::StatusOr<const UpdateSum*> UpdateIntake::Seal(const std::map<uint64_t, double>& weights) {
  if (!sum_) return nullptr;
  absl::Status s = sum_->Seal();
  if (s.ok() && !weights.empty()) s = sum_->Reweight(weights);
  if (!s.ok()) return s;
  return sum_.get();
}

UpdateIntake::Upload::Upload(UpdateSum* sum, UploadSpec spec, int fd) : sum_(sum), spec_(std::move(spec)), fd_(fd) {}

UpdateIntake::Upload::~Upload() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status UpdateIntake::Upload::Take(std::string_view data) {
  const size_t width = BytesPerValue(spec_.dtype);
  if (data.size() > kMaxChunkBytes || data.size() % width != 0 || received_ + data.size() > spec_.expected_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed chunk of ", data.size(), " bytes at offset ", received_, " (chunks hold whole ",
        WireDtypeName(spec_.dtype), " values, at most ", kMaxChunkBytes, " bytes, within the manifest's size)"));
  }
  const size_t n = data.size() / width;
  const size_t first = received_ / width;  // index of the chunk's first value
  // Float32 chunks are read in place (the message's buffer comes from the
  // heap, aligned for float); 16-bit ones are decoded into values_.
  const float* values = nullptr;
  if (spec_.dtype == WireDtype::kFloat32 && reinterpret_cast<uintptr_t>(data.data()) % alignof(float) == 0) {
    values = reinterpret_cast<const float*>(data.data());
  } else {
    values_.resize(n);
    DecodeValues(data.data(), n, spec_.dtype, values_.data());
    values = values_.data();
  }
  if (kBenchFloor) {  // common/bench_floor.h: transport alone
    absl::Status folded = first == 0 && sum_ ? sum_->Add(spec_.id, first, values, n) : absl::OkStatus();
    received_ += data.size();
    return folded;
  }
  const double squares = SumOfSquares(values, n);
  if (!std::isfinite(squares)) {  // squares of finite floats cannot overflow a double
    const size_t bad =
        static_cast<size_t>(std::find_if(values, values + n, [](float v) { return !std::isfinite(v); }) - values);
    return absl::InvalidArgumentError(absl::StrCat("the update holds a non-finite value at parameter ", first + bad));
  }
  sum_squares_ += squares;
  if (std::sqrt(sum_squares_) > spec_.max_norm) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the update's L2 norm passes the plan's max_update_norm %g", spec_.max_norm));
  }
  hash_.Update(data);
  // Spooled as float32, whatever the wire carried.
  const char* spooled = reinterpret_cast<const char*>(values);
  const size_t spooled_bytes = n * sizeof(float);
  size_t done = 0;
  while (done < spooled_bytes) {
    ssize_t w = ::write(fd_, spooled + done, spooled_bytes - done);
    if (w <= 0) {
      return absl::InternalError(
          absl::StrCat("coordinator cannot spool the update: ", w < 0 ? std::strerror(errno) : "nothing written"));
    }
    done += static_cast<size_t>(w);
  }
  // Folded only once spooled: a later withdrawal reads it back.
  if (sum_) {
    absl::Status folded = sum_->Add(spec_.id, first, values, n);
    if (!folded.ok()) return folded;
  }
  received_ += data.size();
  return absl::OkStatus();
}

absl::Status UpdateIntake::Upload::Complete() {
  if (received_ != spec_.expected_bytes) {
    // The stream broke (the node went away, or cancelled): the node keeps
    // the update and may send it again.
    return absl::UnavailableError(
        absl::StrCat("the update ended after ", received_, " of ", spec_.expected_bytes, " bytes"));
  }
  if (!kBenchFloor && hash_.FinishHex() != spec_.update_sha256) {
    return absl::InvalidArgumentError("the update's bytes do not match its SHA-256");
  }
  ::close(fd_);
  fd_ = -1;
  return absl::OkStatus();
}

}  // namespace fedrad::coordinator

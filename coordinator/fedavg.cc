#include "coordinator/fedavg.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/bench_floor.h"

namespace fedrad::coordinator {
namespace {

// Reads values [from, max_values) of `path` a block at a time, handing each
// block of floats to `fn` with its offset. Returns how many values were read.
absl::StatusOr<size_t> ReadFloats(const std::string& path, size_t max_values,
                                  const std::function<void(size_t, const float*, size_t)>& fn, size_t from = 0) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open spooled update '", path, "'"));
  if (from > 0 && std::fseek(f.get(), static_cast<long>(from * sizeof(float)), SEEK_SET) != 0) {
    return absl::DataLossError(absl::StrCat("spooled update '", path, "' is shorter than ", from, " values"));
  }
  std::vector<float> buf(size_t{1} << 18);
  size_t offset = from;
  while (offset < max_values) {
    const size_t want = std::min(buf.size(), max_values - offset);
    const size_t n = std::fread(buf.data(), sizeof(float), want, f.get());
    if (n == 0) break;
    fn(offset, buf.data(), n);
    offset += n;
  }
  return offset - from;
}

absl::Status Lost(const std::string& path) {
  return absl::DataLossError(
      absl::StrCat("spooled update '", path, "' lost values that were folded; the round's sum is unusable"));
}

}  // namespace

std::vector<double> CappedWeights(const std::vector<double>& weights, double ratio) {
  if (ratio <= 0 || weights.size() < 2) return weights;
  std::vector<double> sorted = weights;
  std::sort(sorted.begin(), sorted.end());
  const double cap = ratio * sorted[(sorted.size() - 1) / 2];
  std::vector<double> out = weights;
  for (double& w : out) w = std::min(w, cap);
  return out;
}

UpdateSum::UpdateSum(size_t num_values) : sum_(num_values, 0.0) {}

void UpdateSum::Reset() {
  absl::MutexLock serial(&refold_mu_);  // no withdrawal of the last round swaps its sum in later
  absl::MutexLock lock(&mu_);
  std::fill(sum_.begin(), sum_.end(), 0.0);
  contributions_.clear();
  sealed_ = false;
  total_weight_ = 0;
  accepted_ = 0;
  inverse_weight_ = 0;
}

void UpdateSum::Fold(size_t offset, const float* values, size_t n, double weight) {
  double* out = sum_.data() + offset;
  for (size_t i = 0; i < n; ++i) out[i] += weight * values[i];
}

absl::Status UpdateSum::Begin(uint64_t id, double weight, const std::string& spool_path) {
  absl::MutexLock lock(&mu_);
  if (sealed_) return absl::FailedPreconditionError("the round has closed");
  if (!(weight > 0)) return absl::InvalidArgumentError("an update needs a positive weight");
  if (!contributions_.emplace(id, Contribution{weight, spool_path, 0, false}).second) {
    return absl::AlreadyExistsError(absl::StrCat("update ", id, " began twice"));
  }
  return absl::OkStatus();
}

absl::Status UpdateSum::Add(uint64_t id, size_t offset, const float* values, size_t n) {
  absl::MutexLock lock(&mu_);
  if (sealed_) return absl::FailedPreconditionError("the round has closed");
  auto c = contributions_.find(id);
  if (c == contributions_.end() || c->second.accepted) {
    return absl::FailedPreconditionError(absl::StrCat("update ", id, " is not being received"));
  }
  if (offset != c->second.folded || offset + n > sum_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("values at ", offset, " out of order or past the model's end"));
  }
  Fold(offset, values, n, c->second.weight);
  c->second.folded += n;
  return absl::OkStatus();
}

absl::Status UpdateSum::Accept(uint64_t id) {
  absl::MutexLock lock(&mu_);
  if (sealed_) return absl::FailedPreconditionError("the round has closed");
  auto c = contributions_.find(id);
  if (c == contributions_.end() || c->second.accepted) {
    return absl::FailedPreconditionError(absl::StrCat("update ", id, " is not being received"));
  }
  // (A benchmark-floor build folds each update's first chunk only.)
  if (c->second.folded != sum_.size() && !kBenchFloor) {
    return absl::FailedPreconditionError(
        absl::StrCat("update ", id, " has ", c->second.folded, " of ", sum_.size(), " values"));
  }
  c->second.accepted = true;
  total_weight_ += c->second.weight;
  ++accepted_;
  return absl::OkStatus();
}

absl::Status UpdateSum::RefoldLocked() {
  std::fill(sum_.begin(), sum_.end(), 0.0);
  for (const auto& entry : contributions_) {
    const Contribution& k = entry.second;  // a plain reference: lambdas may not capture bindings in C++17
    absl::StatusOr<size_t> read = ReadFloats(
        k.spool_path, k.folded, [&](size_t offset, const float* v, size_t n) { Fold(offset, v, n, k.weight); });
    if (!read.ok()) return read.status();
    if (*read != k.folded) return Lost(k.spool_path);
  }
  return absl::OkStatus();
}

absl::Status UpdateSum::Withdraw(uint64_t id) {
  absl::MutexLock serial(&refold_mu_);
  std::map<uint64_t, Contribution> others;  // as they were folded when it was taken out
  {
    absl::MutexLock lock(&mu_);
    auto c = contributions_.find(id);
    if (c == contributions_.end() || c->second.accepted) return absl::OkStatus();
    const size_t folded = c->second.folded;
    contributions_.erase(c);
    if (folded == 0) return absl::OkStatus();
    others = contributions_;
  }
  // Subtracting it again would leave rounding residue as large as the
  // largest value it brought; folding the others again from their spool
  // files leaves none. That pass reads every other spooled update, so it
  // runs without mu_: the other uploads' chunks keep being folded into
  // sum_ meanwhile, and are caught up on below from their files (a chunk is
  // spooled before it is folded).
  std::vector<double> fresh(sum_.size(), 0.0);
  for (const auto& entry : others) {
    const Contribution& k = entry.second;
    absl::StatusOr<size_t> read = ReadFloats(k.spool_path, k.folded, [&](size_t offset, const float* v, size_t n) {
      for (size_t i = 0; i < n; ++i) fresh[offset + i] += k.weight * v[i];
    });
    if (!read.ok()) return read.status();
    if (*read != k.folded) return Lost(k.spool_path);
  }
  absl::MutexLock lock(&mu_);
  for (const auto& entry : contributions_) {
    const uint64_t other = entry.first;
    const Contribution& k = entry.second;
    auto before = others.find(other);
    const size_t from = before == others.end() ? 0 : before->second.folded;
    if (k.folded <= from) continue;
    absl::StatusOr<size_t> read = ReadFloats(
        k.spool_path, k.folded,
        [&](size_t offset, const float* v, size_t n) {
          for (size_t i = 0; i < n; ++i) fresh[offset + i] += k.weight * v[i];
        },
        from);
    if (!read.ok()) return read.status();
    if (*read != k.folded - from) return Lost(k.spool_path);
  }
  sum_.swap(fresh);
  return absl::OkStatus();
}

absl::Status UpdateSum::Reweight(const std::map<uint64_t, double>& weights) {
  absl::MutexLock lock(&mu_);
  if (!sealed_) return absl::FailedPreconditionError("weights change only once the round's sum is sealed");
  bool changed = false;
  for (const auto& [id, w] : weights) {
    auto c = contributions_.find(id);
    if (c == contributions_.end() || !c->second.accepted) continue;
    if (!(w > 0)) return absl::InvalidArgumentError("an update needs a positive weight");
    if (c->second.weight == w) continue;
    total_weight_ += w - c->second.weight;
    c->second.weight = w;
    changed = true;
  }
  if (!changed) return absl::OkStatus();
  absl::Status s = RefoldLocked();
  if (!s.ok()) return s;
  inverse_weight_ = total_weight_ > 0 ? 1.0 / total_weight_ : 0;
  return absl::OkStatus();
}

absl::Status UpdateSum::Seal() {
  absl::MutexLock serial(&refold_mu_);
  absl::MutexLock lock(&mu_);
  sealed_ = true;
  // Nothing folds any more: what was not accepted comes out in one pass.
  bool withdrawn = false;
  for (auto it = contributions_.begin(); it != contributions_.end();) {
    if (it->second.accepted) {
      ++it;
      continue;
    }
    withdrawn = withdrawn || it->second.folded > 0;
    it = contributions_.erase(it);
  }
  if (withdrawn) {
    absl::Status s = RefoldLocked();
    if (!s.ok()) return s;
  }
  inverse_weight_ = total_weight_ > 0 ? 1.0 / total_weight_ : 0;
  return absl::OkStatus();
}

absl::Status UpdateSum::AddFile(const std::string& path, double weight) {
  absl::MutexLock lock(&mu_);
  if (sealed_) return absl::FailedPreconditionError("the sum is sealed");
  // Checks the length first, so a short or long file folds nothing.
  std::error_code ec;
  const uintmax_t bytes = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("cannot open spooled update '", path, "': ", ec.message()));
  if (bytes != sum_.size() * sizeof(float)) {
    return absl::DataLossError(
        absl::StrCat("spooled update '", path, "' has ", bytes / sizeof(float), " values, expected ", sum_.size()));
  }
  absl::StatusOr<size_t> read =
      ReadFloats(path, sum_.size(), [&](size_t offset, const float* v, size_t n) { Fold(offset, v, n, weight); });
  if (!read.ok()) return read.status();
  total_weight_ += weight;
  ++accepted_;
  return absl::OkStatus();
}

int UpdateSum::accepted() const {
  absl::MutexLock lock(&mu_);
  return accepted_;
}

double UpdateSum::total_weight() const {
  absl::MutexLock lock(&mu_);
  return total_weight_;
}

}  // namespace fedrad::coordinator

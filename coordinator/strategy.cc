#include "coordinator/strategy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace fedrad::coordinator {

TrainingSettings Strategy::ConfigureTraining(int, const TrainingSettings& base) const { return base; }

absl::Status Strategy::RestoreState(const std::vector<float>& state) {
  if (!state.empty()) return absl::DataLossError(absl::StrCat(name(), " keeps no state, but some was saved"));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<UpdateSum>> FoldFiles(const std::vector<UpdateRef>& updates, size_t num_values) {
  auto sum = std::make_unique<UpdateSum>(num_values);
  for (const UpdateRef& u : updates) {
    absl::Status s = sum->AddFile(u.path, u.weight);
    if (!s.ok()) return s;
  }
  absl::Status s = sum->Seal();
  if (!s.ok()) return s;
  return sum;
}

absl::Status ForEachSlice(const std::vector<UpdateRef>& updates, size_t num_values, size_t slice_values,
                          const std::function<void(size_t, const std::vector<std::vector<float>>&)>& fn) {
  std::vector<FILE*> files;
  auto close_all = [&] {
    for (FILE* f : files) std::fclose(f);
  };
  for (const UpdateRef& u : updates) {
    FILE* f = std::fopen(u.path.c_str(), "rb");
    if (f == nullptr) {
      close_all();
      return absl::NotFoundError(absl::StrCat("cannot open spooled update '", u.path, "'"));
    }
    files.push_back(f);
  }
  std::vector<std::vector<float>> slices(updates.size());
  for (size_t offset = 0; offset < num_values; offset += slice_values) {
    const size_t len = std::min(slice_values, num_values - offset);
    for (size_t i = 0; i < files.size(); ++i) {
      slices[i].resize(len);
      if (std::fread(slices[i].data(), sizeof(float), len, files[i]) != len) {
        close_all();
        return absl::DataLossError(
            absl::StrCat("spooled update '", updates[i].path, "' is shorter than ", num_values, " values"));
      }
    }
    fn(offset, slices);
  }
  close_all();
  return absl::OkStatus();
}

}  // namespace fedrad::coordinator

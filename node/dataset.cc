#include "node/dataset.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "common/files.h"
#include "crypto/sha256.h"

namespace fedrad::node {

void ImageSet::Append(const ImageSet& other, int64_t index) {
  const size_t per = static_cast<size_t>(other.channels) * other.size * other.size;
  channels = other.channels;
  size = other.size;
  pixels.insert(pixels.end(), other.pixels.begin() + index * per,
                other.pixels.begin() + (index + 1) * per);
  labels.push_back(other.labels[index]);
  patients.push_back(other.patients[index]);
}

absl::StatusOr<std::vector<LabelRow>> LoadLabels(const std::string& csv_path, int num_classes) {
  absl::StatusOr<std::string> text = ReadFile(csv_path, 256 << 20);
  if (!text.ok()) return absl::Status(text.status().code(), absl::StrCat("labels: ", text.status().message()));
  if (absl::StripAsciiWhitespace(*text).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(csv_path, ": empty file; expected a header \"path,label\""));
  }
  std::vector<LabelRow> rows;
  std::set<std::string> seen;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_no;
    line = absl::StripTrailingAsciiWhitespace(line);
    if (line_no == 1) {
      if (absl::StripAsciiWhitespace(line) != "path,label") {
        return absl::InvalidArgumentError(absl::StrCat(
            csv_path, ":1: the header must be \"path,label\""));
      }
      continue;
    }
    if (line.empty()) continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          csv_path, ":", line_no, ": expected 2 fields (path,label), found ", fields.size()));
    }
    LabelRow row;
    row.path = std::string(absl::StripAsciiWhitespace(fields[0]));
    row.line = line_no;
    if (row.path.empty() || row.path[0] == '/' || row.path.find("..") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          csv_path, ":", line_no, ": path must be relative to the data folder and stay inside it"));
    }
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(fields[1]), &row.label) || row.label < 0 ||
        row.label >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          csv_path, ":", line_no, ": label '", std::string(fields[1]),
          "' is not an integer class in [0, ", num_classes, ")"));
    }
    if (!seen.insert(row.path).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          csv_path, ":", line_no, ": path '", row.path, "' is listed twice"));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

absl::StatusOr<ImageSet> LoadImageSet(const std::string& data_dir, const std::string& labels_csv,
                                      int num_classes, const PreprocessSettings& settings,
                                      LoadReport* report) {
  std::error_code ec;
  if (!std::filesystem::is_directory(data_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("data folder '", data_dir, "' does not exist"));
  }
  absl::StatusOr<std::vector<LabelRow>> rows = LoadLabels(labels_csv, num_classes);
  if (!rows.ok()) return rows.status();
  *report = LoadReport{};
  report->label_rows = static_cast<int>(rows->size());

  ImageSet set;
  set.size = settings.output_size;
  std::set<std::string> labelled;
  std::set<std::string> patients;
  for (const LabelRow& row : *rows) {
    labelled.insert(row.path);
    const std::string path = (std::filesystem::path(data_dir) / row.path).string();
    if (!std::filesystem::exists(path, ec)) {
      ++report->rows_without_file;
      continue;
    }
    DicomReadOptions read_options;
    read_options.color_to_gray = settings.color_to_gray;
    absl::StatusOr<DicomImageFile> file = ReadDicomImage(path, read_options);
    if (!file.ok()) {
      if (IsNoImage(file.status())) {
        ++report->no_image;
      } else {
        ++report->skipped[ReasonOf(file.status())];
      }
      continue;
    }
    // Without a PatientID the file is its own privacy unit.
    const std::string patient =
        file->patient_id.empty() ? absl::StrCat("file:", row.path) : file->patient_id;
    patients.insert(patient);
    for (const ModalityFrame& frame : file->frames) {
      std::vector<float> pixels = PreprocessFrame(frame, *file, settings);
      set.pixels.insert(set.pixels.end(), pixels.begin(), pixels.end());
      set.labels.push_back(row.label);
      set.patients.push_back(patient);
      ++report->images_loaded;
    }
  }
  for (auto it = std::filesystem::recursive_directory_iterator(data_dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const std::string rel = std::filesystem::relative(it->path(), data_dir, ec).string();
    if (it->path().extension() == ".csv" || it->path() == std::filesystem::path(labels_csv)) continue;
    if (!labelled.count(rel)) ++report->files_without_row;
  }
  report->patients = static_cast<int>(patients.size());
  return set;
}

PatientSplit SplitByPatient(const ImageSet& images, double validation_fraction, uint64_t seed) {
  PatientSplit split;
  std::set<std::string> val_patients, train_patients;
  auto in_validation = [&](const std::string& patient) {
    const std::string h = crypto::Sha256Hex(absl::StrCat(seed, ":", patient));
    uint64_t x = 0;
    for (int i = 0; i < 13; ++i) x = x * 16 + static_cast<uint64_t>(std::stoi(h.substr(i, 1), nullptr, 16));
    return static_cast<double>(x) / static_cast<double>(uint64_t{1} << 52) < validation_fraction;
  };
  split.train.channels = split.validation.channels = images.channels;
  split.train.size = split.validation.size = images.size;
  for (int64_t i = 0; i < images.count(); ++i) {
    const std::string& p = images.patients[i];
    if (in_validation(p)) {
      split.validation.Append(images, i);
      val_patients.insert(p);
    } else {
      split.train.Append(images, i);
      train_patients.insert(p);
    }
  }
  split.train_patients = static_cast<int>(train_patients.size());
  split.validation_patients = static_cast<int>(val_patients.size());
  return split;
}

}  // namespace fedrad::node

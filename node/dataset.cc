#include "node/dataset.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <set>
#include <unordered_map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "crypto/sha256.h"
#include "node/dicom_rtstruct.h"
#include "node/dicom_seg.h"
#include "node/label_cache.h"

#include <opencv2/imgcodecs.hpp>

namespace fedrad::node {

namespace fs = std::filesystem;

namespace {

// A labels.csv path: relative to the data folder and staying inside it.
bool StaysInside(const std::string& path) {
  return !path.empty() && path[0] != '/' && path != ".." && path.rfind("../", 0) != 0 &&
         path.find("/../") == std::string::npos && (path.size() < 3 || path.substr(path.size() - 3) != "/..");
}

}  // namespace

void ImageSet::Append(const ImageSet& other, int64_t index) {
  const size_t per = static_cast<size_t>(other.channels) * other.size * other.size;
  channels = other.channels;
  size = other.size;
  pixels.insert(pixels.end(), other.pixels.begin() + index * per, other.pixels.begin() + (index + 1) * per);
  if (!other.masks.empty()) {
    const size_t m = static_cast<size_t>(other.size) * other.size;
    masks.insert(masks.end(), other.masks.begin() + index * m, other.masks.begin() + (index + 1) * m);
  }
  if (!other.targets.empty()) {
    const size_t k = other.targets.size() / other.labels.size();
    targets.insert(targets.end(), other.targets.begin() + index * k, other.targets.begin() + (index + 1) * k);
  }
  labels.push_back(other.labels[index]);
  patients.push_back(other.patients[index]);
  if (static_cast<int64_t>(other.sources.size()) > index) sources.push_back(other.sources[index]);
}

namespace {

// labels.csv's header: the key column, the label column(s), an optional
// patient column last. Multilabel: "labels" (a list per row) or one column
// per label, each named as one of the model's labels, in any order.
struct LabelHeader {
  LabelTable::Key key = LabelTable::Key::kPath;
  bool has_patient = false;
  bool list = false;              // multilabel: one "labels" column holding a list
  std::vector<int> column_label;  // multilabel with label columns: each column's label
};

absl::StatusOr<LabelHeader> ParseLabelHeader(const std::string& csv_path, absl::string_view line, ModelTask task,
                                             const std::vector<std::string>& class_names) {
  const bool multilabel = task == ModelTask::kMultilabel;
  const std::string usage =
      multilabel ? "\"path,labels\" (a list per row, names separated by '|'), or \"path,\" and one column per label "
                   "(0 or 1), with \"sop_instance_uid\" for \"path\" if you like"
                 : "\"path,label\" or \"sop_instance_uid,label\"";
  std::vector<std::string> columns;
  for (absl::string_view f : absl::StrSplit(line, ',')) columns.emplace_back(absl::StripAsciiWhitespace(f));
  LabelHeader h;
  const std::string first = columns.empty() ? "" : absl::AsciiStrToLower(columns.front());
  if (first == "path") {
    h.key = LabelTable::Key::kPath;
  } else if (first == "sop_instance_uid") {
    h.key = LabelTable::Key::kSopInstanceUid;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(csv_path, ":1: the header must be ", usage, ", optionally followed by \",patient\""));
  }
  columns.erase(columns.begin());
  h.has_patient = !columns.empty() && absl::AsciiStrToLower(columns.back()) == "patient";
  if (h.has_patient) columns.pop_back();
  if (!multilabel) {
    if (columns.size() != 1 || absl::AsciiStrToLower(columns[0]) != "label") {
      return absl::InvalidArgumentError(
          absl::StrCat(csv_path, ":1: the header must be ", usage, ", optionally followed by \",patient\""));
    }
    return h;
  }
  if (columns.size() == 1 && absl::AsciiStrToLower(columns[0]) == "labels") {
    h.list = true;
    return h;
  }
  std::vector<bool> named(class_names.size(), false);
  for (const std::string& column : columns) {
    int found = -1;
    for (size_t c = 0; c < class_names.size(); ++c) {
      if (absl::EqualsIgnoreCase(class_names[c], column)) found = static_cast<int>(c);
    }
    if (found < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(csv_path, ":1: column '", column, "' is not one of the model's labels (",
                       absl::StrJoin(class_names, ", "), "); the header must be ", usage));
    }
    if (named[found]) {
      return absl::InvalidArgumentError(absl::StrCat(csv_path, ":1: label '", class_names[found], "' has two columns"));
    }
    named[found] = true;
    h.column_label.push_back(found);
  }
  std::vector<std::string> missing;
  for (size_t c = 0; c < class_names.size(); ++c) {
    if (!named[c]) missing.push_back(class_names[c]);
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(csv_path, ":1: no column for label(s) ",
                                                   absl::StrJoin(missing, ", "), "; the header must be ", usage));
  }
  return h;
}

// A label by name (exact) or by its index.
std::optional<int> ClassByName(absl::string_view cell, int num_classes, const std::vector<std::string>& class_names) {
  int64_t index = 0;
  if (absl::SimpleAtoi(cell, &index) && index >= 0 && index < num_classes) return static_cast<int>(index);
  for (size_t i = 0; i < class_names.size(); ++i) {
    if (class_names[i] == cell) return static_cast<int>(i);
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> LabelColumnNames(const std::string& csv_path) {
  absl::StatusOr<std::string> text = ReadFile(csv_path, 256 << 20);
  if (!text.ok()) return absl::Status(text.status().code(), absl::StrCat("labels: ", text.status().message()));
  const absl::string_view first = absl::StripPrefix(
      absl::StripTrailingAsciiWhitespace(absl::string_view(*text).substr(0, text->find('\n'))), "\xEF\xBB\xBF");
  std::vector<std::string> columns;
  for (absl::string_view f : absl::StrSplit(first, ',')) columns.emplace_back(absl::StripAsciiWhitespace(f));
  if (!columns.empty()) columns.erase(columns.begin());
  if (!columns.empty() && absl::AsciiStrToLower(columns.back()) == "patient") columns.pop_back();
  if (columns.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(csv_path,
                     ":1: the header names no labels (one column per label, e.g. \"path,lesion,effusion\"); "
                     "with a list column give the labels' names in [data] class_names"));
  }
  return columns;
}

absl::StatusOr<LabelTable> LoadLabels(const std::string& csv_path, int num_classes,
                                      const std::vector<std::string>& class_names, ModelTask task) {
  const bool multilabel = task == ModelTask::kMultilabel;
  if (multilabel && static_cast<int>(class_names.size()) != num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat(csv_path, ": a multilabel model needs its ", num_classes, " labels named ([model] class_names)"));
  }
  absl::StatusOr<std::string> text = ReadFile(csv_path, 256 << 20);
  if (!text.ok()) return absl::Status(text.status().code(), absl::StrCat("labels: ", text.status().message()));
  if (absl::StripAsciiWhitespace(*text).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(csv_path, ": empty file; expected a header ",
                                                   multilabel ? "\"path,labels\" or \"path,\" and one column per label"
                                                              : "\"path,label\" or \"sop_instance_uid,label\""));
  }
  LabelTable table;
  LabelHeader header;
  std::set<std::string> seen;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_no;
    line = absl::StripTrailingAsciiWhitespace(line);
    if (line_no == 1) {
      line = absl::StripPrefix(line, "\xEF\xBB\xBF");  // a BOM from spreadsheet exports
      absl::StatusOr<LabelHeader> h = ParseLabelHeader(csv_path, line, task, class_names);
      if (!h.ok()) return h.status();
      header = std::move(*h);
      table.key = header.key;
      table.has_patient = header.has_patient;
      continue;
    }
    if (line.empty()) continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
    const size_t label_columns = multilabel && !header.list ? header.column_label.size() : 1;
    const size_t columns = 1 + label_columns + (table.has_patient ? 1 : 0);
    if (fields.size() != columns) {
      return absl::InvalidArgumentError(
          absl::StrCat(csv_path, ":", line_no, ": expected ", columns, " fields, found ", fields.size()));
    }
    LabelTable::Row row;
    row.key = std::string(absl::StripAsciiWhitespace(fields[0]));
    row.line = line_no;
    if (table.key == LabelTable::Key::kPath && !StaysInside(row.key)) {
      return absl::InvalidArgumentError(
          absl::StrCat(csv_path, ":", line_no, ": path must be relative to the data folder and stay inside it"));
    }
    if (row.key.empty()) return absl::InvalidArgumentError(absl::StrCat(csv_path, ":", line_no, ": empty key"));
    if (!multilabel) {
      const std::string label(absl::StripAsciiWhitespace(fields[1]));
      std::optional<int> known = ClassByName(label, num_classes, class_names);
      if (!known) {
        return absl::InvalidArgumentError(absl::StrCat(
            csv_path, ":", line_no, ": label '", label, "' is not a class: use an integer in [0, ", num_classes, ")",
            class_names.empty() ? " or list class names in [data] class_names" : " or one of the class_names"));
      }
      row.label = *known;
    } else if (header.list) {
      // "Effusion|Infiltration"; an empty cell: none of the labels.
      row.targets.assign(static_cast<size_t>(num_classes), 0);
      const absl::string_view cell = absl::StripAsciiWhitespace(fields[1]);
      if (!cell.empty()) {
        for (absl::string_view item : absl::StrSplit(cell, '|')) {
          item = absl::StripAsciiWhitespace(item);
          std::optional<int> known = ClassByName(item, num_classes, class_names);
          if (!known) {
            return absl::InvalidArgumentError(
                absl::StrCat(csv_path, ":", line_no, ": '", item, "' is not one of the model's labels (",
                             absl::StrJoin(class_names, ", "), "); an image with none of them has an empty cell"));
          }
          if (row.targets[*known]) {
            return absl::InvalidArgumentError(
                absl::StrCat(csv_path, ":", line_no, ": label '", class_names[*known], "' is listed twice"));
          }
          row.targets[*known] = 1;
        }
      }
    } else {
      row.targets.assign(static_cast<size_t>(num_classes), 0);
      for (size_t c = 0; c < header.column_label.size(); ++c) {
        const absl::string_view cell = absl::StripAsciiWhitespace(fields[1 + c]);
        double v = -1;
        if (!absl::SimpleAtod(cell, &v) || (v != 0 && v != 1)) {
          return absl::InvalidArgumentError(absl::StrCat(
              csv_path, ":", line_no, ": label '", class_names[header.column_label[c]], "' is '", cell,
              "'; each label column holds 0 or 1 (map uncertain or missing findings to one of them first)"));
        }
        row.targets[header.column_label[c]] = v == 1 ? 1 : 0;
      }
    }
    if (multilabel) row.label = std::count(row.targets.begin(), row.targets.end(), 1) > 0 ? 1 : 0;
    if (table.has_patient) {
      row.patient = std::string(absl::StripAsciiWhitespace(fields[columns - 1]));
      if (row.patient.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            csv_path, ":", line_no, ": empty patient: with a patient column every image needs its patient"));
      }
    }
    if (!seen.insert(row.key).second) {
      return absl::InvalidArgumentError(absl::StrCat(csv_path, ":", line_no, ": '", row.key, "' is listed twice"));
    }
    table.rows.push_back(std::move(row));
  }
  return table;
}

std::vector<std::string> ListDataFiles(const std::string& dir, const std::string& skip_dir) {
  std::error_code ec;
  const fs::path skip = skip_dir.empty() ? fs::path() : fs::weakly_canonical(skip_dir, ec);
  std::vector<std::string> files;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const bool hidden = !name.empty() && name[0] == '.';
    if (it->is_directory(ec)) {
      if (hidden || (!skip.empty() && fs::weakly_canonical(it->path(), ec) == skip)) it.disable_recursion_pending();
      continue;
    }
    if (hidden || !it->is_regular_file(ec) || it->path().extension() == ".csv") continue;
    files.push_back(fs::relative(it->path(), dir, ec).string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

namespace {

// The report's bookkeeping both loaders share: files that did not load,
// each loaded file's facts, and the patient figures at the end.
class Tally {
 public:
  explicit Tally(LoadReport* report) : report_(report) {}
  // Decodes the files (relative to the data folder) with the threaded loader.
  static std::vector<LoadedImage> LoadAll(const DatasetSpec& spec, const std::vector<std::string>& to_load) {
    std::vector<std::string> paths;
    for (const std::string& rel : to_load) paths.push_back((fs::path(spec.data_dir) / rel).string());
    std::vector<LoadedImage> loaded(paths.size());
    ImageLoader loader(paths, spec.preprocess, spec.loader);
    while (std::optional<LoadedImage> image = loader.Next()) loaded[image->item] = std::move(*image);
    return loaded;
  }
  // False (and counted) when `image` did not load.
  bool Loaded(const LoadedImage& image, const std::string& rel) {
    if (image.status.ok()) return true;
    if (IsNoImage(image.status)) {
      ++report_->no_image;
    } else {
      ++report_->skipped[ReasonOf(image.status)];
    }
    report_->unusable[rel] = ReasonOf(image.status);
    return false;
  }
  // The image's privacy unit; "" (and counted) when it has none and one is required.
  std::string Patient(const DatasetSpec& spec, const LoadedImage& image, const LabelTable::Row* row,
                      const std::string& rel) {
    std::string patient = PatientKey(image.facts, row);
    if (!patient.empty()) return patient;
    ++report_->files_without_patient_key;
    if (spec.require_patient_key) {
      ++report_->skipped[kNoPatientKey];
      report_->unusable[rel] = kNoPatientKey;
      return "";
    }
    return absl::StrCat("file:", rel);  // its own unit
  }
  void File(const LoadedImage& image, const std::string& patient) {
    ++report_->files_loaded;
    report_->from_cache += image.from_cache ? 1 : 0;
    ++report_->modalities[image.facts.modality.empty() ? "(none)" : image.facts.modality];
    ++report_->transfer_syntaxes[image.facts.transfer_syntax];
    ++report_->photometrics[image.facts.photometric];
    ++report_->sizes[absl::StrCat(image.facts.rows, "x", image.facts.columns)];
    if (!image.facts.study_instance_uid.empty()) study_patients_[image.facts.study_instance_uid].insert(patient);
  }
  // Multilabel (`targets` not empty): each label the image shows.
  void Image(const std::string& patient, int64_t label, const std::vector<uint8_t>& targets = {}) {
    ++report_->images_loaded;
    if (targets.empty()) {
      ++report_->labels[label];
    } else {
      for (size_t c = 0; c < targets.size(); ++c) report_->labels[static_cast<int64_t>(c)] += targets[c];
    }
    ++per_patient_[patient];
  }
  void Finish() {
    report_->patients = static_cast<int>(per_patient_.size());
    for (const auto& [patient, n] : per_patient_) {
      ++report_->images_per_patient[n];
      report_->largest_patient_images = std::max(report_->largest_patient_images, n);
    }
    report_->studies = static_cast<int>(study_patients_.size());
    for (const auto& [study, patients] : study_patients_) {
      report_->studies_with_several_patients += patients.size() > 1;
    }
  }

 private:
  LoadReport* report_;
  std::map<std::string, int> per_patient_;
  std::map<std::string, std::set<std::string>> study_patients_;
};

// What the folder's SEG objects say of one source image: its mask per frame
// (class indices, at the SEG's size), or only that it is labelled (an image
// referenced without a frame shows none of any segment).
struct SourceMasks {
  int rows = 0, columns = 0;                   // of the SEG frames (0: none)
  std::map<int, std::vector<uint8_t>> frames;  // frame index -> rows * columns classes
  std::vector<RtContour> contours;             // RTSTRUCT contours on it, `roi` holding their class
};

// Segment or ROI names to classes: by the class names past the background
// when there are any, else by number (segment n, or the n-th ROI by ROI
// Number, is class n); unknown names are counted.
std::map<int, int> ClassesOf(const DatasetSpec& spec, const std::map<int, std::string>& names, LoadReport* report) {
  std::map<int, int> out;
  int position = 0;
  for (const auto& [number, label] : names) {
    ++position;
    int c = -1;
    if (!spec.class_names.empty()) {
      for (size_t i = 1; i < spec.class_names.size(); ++i) {
        if (spec.class_names[i] == label) c = static_cast<int>(i);
      }
    } else if (position < spec.num_classes) {
      c = position;
    }
    if (c < 0) {
      ++report->masks.unknown_segments[label.empty() ? absl::StrCat("number ", number) : label];
    } else {
      out[number] = c;
    }
  }
  return out;
}

// An image's RTSTRUCT contours as a mask on its grid.
absl::StatusOr<std::vector<uint8_t>> RasterizeSourceContours(const SourceMasks& m, const DicomFacts& facts) {
  absl::StatusOr<ImageGeometry> geometry =
      ParseGeometry(facts.image_position, facts.image_orientation, facts.pixel_spacing);
  if (!geometry.ok()) return geometry.status();
  std::vector<const RtContour*> contours;
  std::map<int, int> identity;
  for (const RtContour& c : m.contours) {
    contours.push_back(&c);
    identity[c.roi] = c.roi;  // `roi` holds the class already
  }
  return RasterizeContours(contours, identity, *geometry, facts.rows, facts.columns);
}

// Reads every SEG object and RT Structure Set among `files` (relative to
// the data folder) and maps their segments and ROIs to classes (ClassesOf).
std::map<std::string, SourceMasks> ReadMaskObjects(const DatasetSpec& spec, const std::vector<std::string>& files,
                                                   std::set<std::string>* label_files, LoadReport* report) {
  std::map<std::string, SourceMasks> out;
  for (const std::string& rel : files) {
    const std::string path = (fs::path(spec.data_dir) / rel).string();
    const std::string sop_class = SopClassOfFile(path);
    if (sop_class != kRtStructureSetStorage && sop_class != kSegmentationStorage) continue;
    label_files->insert(rel);
    // An unreadable label object is counted with its reason; the rest load.
    auto refused = [&](const absl::Status& status) {
      ++report->masks.unreadable_label_objects;
      ++report->skipped[ReasonOf(status)];
      report->unusable[rel] = ReasonOf(status);
    };
    if (sop_class == kRtStructureSetStorage) {
      bool cached = false;
      absl::StatusOr<RtStructObject> rt = ReadRtStructCached(path, spec.loader.cache_dir, &cached);
      report->masks.label_objects_from_cache += cached;
      if (!rt.ok()) {
        refused(rt.status());
        continue;
      }
      ++report->masks.label_objects;
      const std::map<int, int> class_of_roi = ClassesOf(spec, rt->rois, report);
      for (const std::string& uid : rt->referenced_instances) out[uid];
      for (RtContour& c : rt->contours) {
        auto cls = class_of_roi.find(c.roi);
        if (cls == class_of_roi.end()) continue;
        c.roi = cls->second;
        out[c.image_sop_instance_uid].contours.push_back(std::move(c));
      }
      continue;
    }
    bool cached = false;
    absl::StatusOr<SegObject> seg = ReadSegmentationCached(path, spec.loader.cache_dir, &cached);
    report->masks.label_objects_from_cache += cached;
    if (!seg.ok()) {
      refused(seg.status());
      continue;
    }
    ++report->masks.label_objects;
    const std::map<int, int> class_of_segment = ClassesOf(spec, seg->segments, report);
    for (const std::string& uid : seg->referenced_instances) {
      SourceMasks& m = out[uid];
      m.rows = seg->rows;
      m.columns = seg->columns;
    }
    for (SegFrame& f : seg->frames) {
      auto c = class_of_segment.find(f.segment);
      if (c == class_of_segment.end()) continue;
      SourceMasks& m = out[f.source_sop_instance_uid];
      std::vector<uint8_t>& mask = m.frames[f.source_frame];
      if (mask.empty()) mask.assign(f.mask.size(), 0);
      // Overlapping segments: the higher class wins, whatever the file order.
      for (size_t i = 0; i < mask.size() && i < f.mask.size(); ++i) {
        if (f.mask[i] && c->second > mask[i]) mask[i] = static_cast<uint8_t>(c->second);
      }
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<ImageSet> LoadImageSet(const DatasetSpec& spec, LoadReport* report) {
  std::error_code ec;
  if (!fs::is_directory(spec.data_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("data folder '", spec.data_dir, "' does not exist"));
  }
  if (spec.task == ModelTask::kSegmentation) return LoadSegmentationSet(spec, report);
  absl::StatusOr<LabelTable> labels = LoadLabels(spec.labels_csv, spec.num_classes, spec.class_names, spec.task);
  if (!labels.ok()) return labels.status();
  *report = LoadReport{};
  report->label_rows = static_cast<int>(labels->rows.size());

  const std::vector<std::string> files = ListDataFiles(spec.data_dir);
  report->files_seen = static_cast<int>(files.size());

  // Which files to decode, and the label of each.
  std::vector<std::string> to_load;
  std::vector<const LabelTable::Row*> path_rows;
  std::unordered_map<std::string, const LabelTable::Row*> by_uid;
  if (labels->key == LabelTable::Key::kPath) {
    std::set<std::string> present(files.begin(), files.end());
    std::set<std::string> labelled;
    for (const LabelTable::Row& row : labels->rows) {
      labelled.insert(row.key);
      if (!present.count(row.key)) {
        ++report->rows_without_file;
        continue;
      }
      to_load.push_back(row.key);
      path_rows.push_back(&row);
    }
    for (const std::string& f : files) report->files_without_row += labelled.count(f) ? 0 : 1;
  } else {
    to_load = files;  // the UID is inside each file
    for (const LabelTable::Row& row : labels->rows) by_uid[row.key] = &row;
  }

  std::vector<LoadedImage> loaded = Tally::LoadAll(spec, to_load);
  ImageSet set;
  set.size = spec.preprocess.output_size;
  std::set<std::string> uids_matched;
  Tally tally(report);
  for (size_t i = 0; i < loaded.size(); ++i) {
    LoadedImage& image = loaded[i];
    if (!tally.Loaded(image, to_load[i])) continue;
    const LabelTable::Row* row;
    if (labels->key == LabelTable::Key::kPath) {
      row = path_rows[i];
    } else {
      auto it = by_uid.find(image.facts.sop_instance_uid);
      if (it == by_uid.end()) {
        ++report->files_without_row;
        continue;
      }
      uids_matched.insert(it->first);
      row = it->second;
    }
    const int64_t label = row->label;
    const std::string patient = tally.Patient(spec, image, row, to_load[i]);
    if (patient.empty()) continue;
    tally.File(image, patient);
    for (PreparedFrame& frame : image.frames) {
      set.pixels.insert(set.pixels.end(), frame.pixels.begin(), frame.pixels.end());
      set.labels.push_back(label);
      set.targets.insert(set.targets.end(), row->targets.begin(), row->targets.end());
      set.patients.push_back(patient);
      set.sources.push_back(
          {to_load[i], frame.index,
           image.facts.sop_instance_uid.empty() ? absl::StrCat("file:", to_load[i]) : image.facts.sop_instance_uid});
      tally.Image(patient, label, row->targets);
    }
  }
  if (labels->key == LabelTable::Key::kSopInstanceUid) {
    report->rows_without_file = static_cast<int>(labels->rows.size() - uids_matched.size());
  }
  tally.Finish();
  if (spec.on_loaded) spec.on_loaded(set);
  return set;
}

absl::StatusOr<std::vector<uint8_t>> ReadPngMask(const std::string& path, int rows, int columns, int num_classes) {
  absl::StatusOr<std::string> bytes = ReadFile(path, 256 << 20);
  if (!bytes.ok()) return bytes.status();
  const std::vector<uint8_t> encoded(bytes->begin(), bytes->end());
  cv::Mat mask;
  try {
    mask = cv::imdecode(encoded, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception&) {
    mask = cv::Mat();
  }
  if (mask.empty() || mask.type() != CV_8UC1) {
    return absl::InvalidArgumentError(absl::StrCat("the mask '", path, "' is not an 8-bit single-channel PNG"));
  }
  if (mask.rows != rows || mask.cols != columns) {
    return absl::InvalidArgumentError(
        absl::StrCat("the mask '", path, "' is ", mask.rows, " x ", mask.cols, ", its image ", rows, " x ", columns));
  }
  std::vector<uint8_t> out(mask.datastart, mask.dataend);
  // 0/255 (what most tools save) is background/class 1; else class indices.
  const bool binary = std::all_of(out.begin(), out.end(), [](uint8_t v) { return v == 0 || v == 255; });
  for (uint8_t& v : out) {
    if (binary) {
      v = v ? 1 : 0;
    } else if (v >= num_classes) {
      return absl::InvalidArgumentError(
          absl::StrCat("the mask '", path, "' holds class ", int{v}, "; the model has ", num_classes));
    }
  }
  return out;
}

absl::StatusOr<MaskTable> LoadMaskTable(const std::string& csv_path) {
  MaskTable table;
  std::error_code ec;
  if (csv_path.empty() || !fs::exists(csv_path, ec)) return table;
  absl::StatusOr<std::string> text = ReadFile(csv_path, 256 << 20);
  if (!text.ok()) return absl::Status(text.status().code(), absl::StrCat("labels: ", text.status().message()));
  int line_no = 0;
  bool patient = false;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_no;
    line = absl::StripTrailingAsciiWhitespace(line);
    if (line_no == 1) {
      const std::string header =
          absl::AsciiStrToLower(absl::StripAsciiWhitespace(absl::StripPrefix(line, "\xEF\xBB\xBF")));
      if (header != "path,mask" && header != "path,mask,patient") return table;  // not a mask table
      table.present = true;
      patient = header == "path,mask,patient";
      continue;
    }
    if (line.empty()) continue;
    const std::vector<std::string> fields = absl::StrSplit(line, ',');
    if (fields.size() != (patient ? 3u : 2u)) {
      return absl::InvalidArgumentError(
          absl::StrCat(csv_path, ":", line_no, ": expected ", patient ? 3 : 2, " fields, found ", fields.size()));
    }
    MaskTable::Row row;
    const std::string image(absl::StripAsciiWhitespace(fields[0]));
    row.mask = std::string(absl::StripAsciiWhitespace(fields[1]));
    if (patient) row.patient = std::string(absl::StripAsciiWhitespace(fields[2]));
    if (!StaysInside(image) || !StaysInside(row.mask)) {
      return absl::InvalidArgumentError(absl::StrCat(
          csv_path, ":", line_no, ": the image and the mask must be paths relative to the data folder, inside it"));
    }
    if (patient && row.patient.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(csv_path, ":", line_no, ": empty patient"));
    }
    if (!table.rows.emplace(image, std::move(row)).second) {
      return absl::InvalidArgumentError(absl::StrCat(csv_path, ":", line_no, ": '", image, "' is listed twice"));
    }
  }
  return table;
}

absl::StatusOr<ImageSet> LoadSegmentationSet(const DatasetSpec& spec, LoadReport* report) {
  *report = LoadReport{};
  absl::StatusOr<MaskTable> table = LoadMaskTable(spec.labels_csv);
  if (!table.ok()) return table.status();
  const std::vector<std::string> files = ListDataFiles(spec.data_dir);
  report->files_seen = static_cast<int>(files.size());
  std::set<std::string> label_files;
  // A mask table's PNG masks are labels, not images.
  for (const auto& [image, row] : table->rows) {
    std::string ext = fs::path(row.mask).extension().string();
    for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (ext == ".png") label_files.insert(row.mask);
  }
  const std::map<std::string, SourceMasks> masks = ReadMaskObjects(spec, files, &label_files, report);
  std::vector<std::string> to_load;
  for (const std::string& f : files) {
    if (!label_files.count(f)) to_load.push_back(f);
  }
  std::vector<LoadedImage> loaded = Tally::LoadAll(spec, to_load);
  ImageSet set;
  set.size = spec.preprocess.output_size;
  std::set<std::string> matched;
  Tally tally(report);
  const size_t square = static_cast<size_t>(set.size) * set.size;
  for (size_t i = 0; i < loaded.size(); ++i) {
    LoadedImage& image = loaded[i];
    if (!tally.Loaded(image, to_load[i])) continue;
    const auto listed = table->rows.find(to_load[i]);
    // With a mask table only its images are used.
    if (table->present && listed == table->rows.end()) {
      ++report->masks.images_without_mask;
      report->unusable[to_load[i]] = "labels.csv names no mask for it";
      continue;
    }
    std::optional<std::vector<uint8_t>> png;
    const bool png_mask = listed != table->rows.end() && label_files.count(listed->second.mask) &&
                          fs::path(listed->second.mask).extension() != ".dcm";
    if (png_mask) {
      absl::StatusOr<std::vector<uint8_t>> read = ReadPngMask((fs::path(spec.data_dir) / listed->second.mask).string(),
                                                              image.facts.rows, image.facts.columns, spec.num_classes);
      if (!read.ok()) {
        ++report->masks.geometry_mismatch;
        report->unusable[to_load[i]] = std::string(read.status().message());
        continue;
      }
      png = std::move(*read);
    }
    static const SourceMasks kNone;
    auto m = masks.find(image.facts.sop_instance_uid);
    if (m == masks.end() && !png) {
      ++report->masks.images_without_mask;
      report->unusable[to_load[i]] = "no segmentation references it";
      continue;
    }
    const SourceMasks& found = m == masks.end() ? kNone : m->second;
    if (m != masks.end()) matched.insert(m->first);
    if (!found.frames.empty() && (found.rows != image.facts.rows || found.columns != image.facts.columns)) {
      ++report->masks.geometry_mismatch;
      report->unusable[to_load[i]] = "its segmentation's size differs from the image's";
      continue;
    }
    // RTSTRUCT contours on it, rasterised on its own grid.
    std::optional<std::vector<uint8_t>> drawn = png;
    if (!found.contours.empty()) {
      absl::StatusOr<std::vector<uint8_t>> raster = RasterizeSourceContours(found, image.facts);
      if (!raster.ok()) {
        ++report->masks.geometry_mismatch;
        report->unusable[to_load[i]] = std::string(raster.status().message());
        continue;
      }
      if (drawn) {
        for (size_t p = 0; p < drawn->size(); ++p) (*drawn)[p] = std::max((*drawn)[p], (*raster)[p]);
      } else {
        drawn = std::move(*raster);
      }
    }
    LabelTable::Row pseudonym;  // the mask table's patient column, if any
    if (listed != table->rows.end()) pseudonym.patient = listed->second.patient;
    const std::string patient = tally.Patient(spec, image, &pseudonym, to_load[i]);
    if (patient.empty()) continue;
    tally.File(image, patient);
    const std::vector<uint8_t> background(static_cast<size_t>(image.facts.rows) * image.facts.columns, 0);
    // The input's pixel spacing: the file's, over the pipeline's scale.
    double spacing[2] = {0, 0};
    {
      const std::vector<std::string> parts = absl::StrSplit(image.facts.pixel_spacing, '\\');
      const double scale = PlaceInput(image.facts.rows, image.facts.columns, spec.preprocess).scale;
      if (parts.size() == 2 && absl::SimpleAtod(parts[0], &spacing[0]) && absl::SimpleAtod(parts[1], &spacing[1]) &&
          spacing[0] > 0 && spacing[1] > 0 && std::isfinite(spacing[0]) && std::isfinite(spacing[1])) {
        spacing[0] /= scale;
        spacing[1] /= scale;
      } else {
        spacing[0] = spacing[1] = 0;
      }
    }
    for (PreparedFrame& frame : image.frames) {
      auto f = found.frames.find(frame.index);
      std::vector<uint8_t> source = f == found.frames.end() ? background : f->second;
      if (drawn && frame.index == 0) {  // contours are on single-frame images
        for (size_t p = 0; p < source.size(); ++p) source[p] = std::max(source[p], (*drawn)[p]);
      }
      const std::vector<uint8_t> mask = PreprocessMask(source, image.facts.rows, image.facts.columns, spec.preprocess);
      const bool foreground = std::any_of(mask.begin(), mask.end(), [](uint8_t c) { return c != 0; });
      set.pixels.insert(set.pixels.end(), frame.pixels.begin(), frame.pixels.end());
      set.masks.insert(set.masks.end(), mask.begin(), mask.begin() + static_cast<std::ptrdiff_t>(square));
      set.labels.push_back(foreground ? 1 : 0);
      set.patients.push_back(patient);
      set.sources.push_back({to_load[i], frame.index, image.facts.sop_instance_uid, spacing[0], spacing[1]});
      report->masks.images_with_foreground += foreground;
      tally.Image(patient, foreground ? 1 : 0);
    }
  }
  for (const auto& [uid, m] : masks) report->masks.references_without_image += matched.count(uid) ? 0 : 1;
  tally.Finish();
  if (spec.on_loaded) spec.on_loaded(set);
  return set;
}

std::string PatientKey(const DicomFacts& facts, const LabelTable::Row* row) {
  if (row != nullptr && !row->patient.empty()) return row->patient;
  const std::string id(absl::StripAsciiWhitespace(facts.patient_id));
  if (id.empty()) return "";
  const std::string issuer(absl::StripAsciiWhitespace(facts.issuer_of_patient_id));
  // The same ID from two issuers is two patients. PatientID (LO) holds no
  // control character, so the separator cannot be forged.
  if (!issuer.empty()) return absl::StrCat(id, "\x1f", issuer);
  return id;
}

std::vector<std::string> PatientKeyWarnings(const LoadReport& r, bool key_required) {
  std::vector<std::string> out;
  if (r.files_without_patient_key > 0) {
    out.push_back(absl::StrCat(r.files_without_patient_key,
                               " file(s) have no patient key (PatientID empty or missing, no patient column "
                               "in labels.csv): ",
                               key_required ? "refused under patient-level DP" : "each counted as its own patient",
                               "; give labels.csv a patient column (the site's pseudonym map) to use them"));
  }
  if (r.studies_with_several_patients > 0) {
    out.push_back(absl::StrCat(
        r.studies_with_several_patients, " of ", r.studies,
        " stud(ies) hold images of more than one patient key: "
        "PatientID looks replaced per file or series by de-identification, so one patient may count as several "
        "privacy units and the patient-level epsilon would not hold for them; give labels.csv a patient column"));
  }
  // One key for a large share of a sizeable set, far above the others: a
  // constant dummy ID merges patients, whose true epsilon is then a group's.
  const int others = r.images_loaded - r.largest_patient_images;
  const bool dominant =
      r.patients == 1 || r.largest_patient_images * (r.patients - 1) > 5 * others;  // 5x the others' mean
  if (r.images_loaded >= 20 && r.patients >= 1 && r.largest_patient_images * 5 > r.images_loaded && dominant) {
    out.push_back(absl::StrFormat(
        "one patient key covers %d of %d images (%.0f%%): a constant PatientID (such as ANONYMOUS after "
        "de-identification) merges patients into one privacy unit; check PatientID or give labels.csv a patient "
        "column",
        r.largest_patient_images, r.images_loaded, 100.0 * r.largest_patient_images / r.images_loaded));
  }
  return out;
}

std::string SopInstanceUidsSha256(const ImageSet& set) {
  std::set<std::string> uids;
  for (const SampleSource& s : set.sources) uids.insert(s.sop_instance_uid);
  return UidsSha256(uids);
}

std::string UidsSha256(const std::set<std::string>& uids) {
  crypto::Sha256 hash;
  for (const std::string& uid : uids) {
    hash.Update(uid);
    hash.Update("\n");
  }
  return hash.FinishHex();
}

int64_t DistinctPatients(const ImageSet& set) {
  return static_cast<int64_t>(std::set<std::string>(set.patients.begin(), set.patients.end()).size());
}

PatientSplit SplitByPatient(const ImageSet& images, double validation_fraction, uint64_t seed) {
  PatientSplit split;
  std::set<std::string> val_patients, train_patients;
  auto in_validation = [&](const std::string& patient) {
    const std::string h = crypto::Sha256Hex(absl::StrCat(seed, ":", patient));
    const uint64_t x = std::stoull(h.substr(0, 13), nullptr, 16);  // 52 uniform bits
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

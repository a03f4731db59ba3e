#include "node/inspect.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/files.h"
#include "node/dicom_reader.h"

namespace fedrad::node {
namespace {

namespace fs = std::filesystem;

void PrintCounts(std::ostream& out, const char* title, const std::map<std::string, int>& counts) {
  out << absl::StrFormat("  %-20s", title);
  bool first = true;
  for (const auto& [name, n] : counts) {
    out << (first ? "" : ", ") << name << ": " << n;
    first = false;
  }
  out << (first ? "(none)" : "") << "\n";
}

// Writes each sample as an 8-bit PNG. Inputs in [0, 1] map to 0..255; other
// normalizations are stretched from their min to their max.
absl::Status WritePreviews(const ImageSet& set, const std::string& dir) {
  absl::Status s = EnsureDirectory(dir);
  if (!s.ok()) return s;
  const size_t per = static_cast<size_t>(set.size) * set.size;
  for (int64_t i = 0; i < set.count(); ++i) {
    cv::Mat img(set.size, set.size, CV_32F, const_cast<float*>(set.pixels.data() + i * per));
    double lo, hi;
    cv::minMaxLoc(img, &lo, &hi);
    if (lo >= 0 && hi <= 1) {
      lo = 0;
      hi = 1;
    }
    cv::Mat u8;
    img.convertTo(u8, CV_8U, hi > lo ? 255.0 / (hi - lo) : 0, hi > lo ? -lo * 255.0 / (hi - lo) : 0);
    const std::string path = absl::StrCat(dir, "/", ExportName(set.sources[i].path, set.sources[i].frame), ".png");
    if (!cv::imwrite(path, u8)) return absl::InternalError(absl::StrCat("cannot write '", path, "'"));
  }
  return absl::OkStatus();
}

absl::Status ExportRaw(const DatasetSpec& spec, const ImageSet& set, const std::string& dir) {
  absl::Status s = EnsureDirectory(dir);
  if (!s.ok()) return s;
  std::string last;
  for (int64_t i = 0; i < set.count(); ++i) {
    if (set.sources[i].path == last) continue;  // all frames of a file at once
    last = set.sources[i].path;
    DicomReadOptions options;
    options.color_to_gray = spec.preprocess.color_to_gray;
    absl::StatusOr<DicomImageFile> file = ReadDicomImage((fs::path(spec.data_dir) / last).string(), options);
    if (!file.ok()) return file.status();
    for (const ModalityFrame& frame : file->frames) {
      s = WriteNpy(absl::StrCat(dir, "/", ExportName(last, frame.index), ".npy"), frame.values.data(), frame.rows,
                   frame.columns);
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string ExportName(const std::string& relative_path, int frame) {
  return absl::StrCat(absl::StrReplaceAll(relative_path, {{"/", "__"}}), ".f", frame);
}

absl::Status WriteNpy(const std::string& path, const float* values, int rows, int columns) {
  std::string header = absl::StrFormat("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, columns);
  // Magic, version 1.0, header length; the whole preamble is padded with
  // spaces to a multiple of 64 bytes and ends in a newline.
  const size_t preamble = 10;
  while ((preamble + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.append(reinterpret_cast<const char*>(&len), 2);
  out += header;
  out.append(reinterpret_cast<const char*>(values), static_cast<size_t>(rows) * columns * sizeof(float));
  return WriteFileAtomically(path, out);
}

absl::Status Inspect(const InspectOptions& options, std::ostream& out) {
  LoadReport r;
  absl::StatusOr<ImageSet> set = LoadImageSet(options.dataset, &r);
  if (!set.ok()) return set.status();
  int skipped = 0;
  for (const auto& [reason, n] : r.skipped) skipped += n;
  out << "fedrad inspect: " << options.dataset.data_dir << "\n";
  out << absl::StrFormat(
      "files        %d under the folder (not .csv): %d loaded (%d from the cache), "
      "%d no image, %d unreadable\n",
      r.files_seen, r.files_loaded, r.from_cache, r.no_image, skipped);
  for (const auto& [reason, n] : r.skipped) out << absl::StrFormat("  skipped %4d  %s\n", n, reason);
  if (r.no_image > 0) {
    out << absl::StrFormat("  no image %3d  DICOM objects without pixel data (reports, plans, DICOMDIR...)\n",
                           r.no_image);
  }
  if (options.dataset.task == ModelTask::kSegmentation) {
    const LoadReport::Masks& m = r.masks;
    out << absl::StrFormat(
        "masks        %d label object(s) read (DICOM SEG, RT Structure Sets; %d from the cache), %d unreadable; %d "
        "image(s) with foreground\n",
        m.label_objects, m.label_objects_from_cache, m.unreadable_label_objects, m.images_with_foreground);
    out << absl::StrFormat(
        "             %d image(s) no label object references (not used); %d reference(s) to images not in the "
        "folder; %d image(s) whose mask does not fit (size, plane or geometry; not used)\n",
        m.images_without_mask, m.references_without_image, m.geometry_mismatch);
    for (const auto& [name, n] : m.unknown_segments) {
      out << absl::StrFormat("  unknown segment '%s' in %d object(s): not a class (give it in class_names)\n", name, n);
    }
  } else {
    out << absl::StrFormat("labels       %d rows in %s; %d name no file; %d files have no row\n", r.label_rows,
                           options.dataset.labels_csv, r.rows_without_file, r.files_without_row);
  }
  out << absl::StrFormat("patients     %d (privacy units: %s)\n", r.patients,
                         options.dataset.require_patient_key ? "patients; files without a patient key are refused"
                                                             : "patients; a file without a patient key is its own");
  out << absl::StrFormat(
      "patient keys %d file(s) without one; %d of %d stud(ies) span several keys; the largest "
      "key has %d image(s)\n",
      r.files_without_patient_key, r.studies_with_several_patients, r.studies, r.largest_patient_images);
  for (const std::string& w : PatientKeyWarnings(r, options.dataset.require_patient_key)) {
    out << "  WARNING: " << w << "\n";
  }
  out << "images/patient";
  for (const auto& [n, patients] : r.images_per_patient) out << absl::StrFormat("  %d: %d patients", n, patients);
  out << "\n";
  out << absl::StrFormat("images       %d (frames after the pipeline)\n", r.images_loaded);
  out << "by file\n";
  PrintCounts(out, "modality", r.modalities);
  PrintCounts(out, "transfer syntax", r.transfer_syntaxes);
  PrintCounts(out, "photometric", r.photometrics);
  PrintCounts(out, "size (rows x cols)", r.sizes);
  out << (options.dataset.task == ModelTask::kMultilabel ? "showing     " : "labels      ");
  for (const auto& [label, n] : r.labels) {
    std::string name = label < static_cast<int64_t>(options.dataset.class_names.size())
                           ? absl::StrCat(" (", options.dataset.class_names[label], ")")
                           : "";
    out << absl::StrFormat("  %d%s: %d (%.1f%%)", label, name, n, 100.0 * n / std::max(1, r.images_loaded));
  }
  out << "\n";
  out << "pipeline     " << DescribePipeline(options.dataset.preprocess) << "\n";
  out << "             sha256 " << PipelineSha256(options.dataset.preprocess) << "\n";
  if (options.list_skipped && (skipped > 0 || r.no_image > 0)) {
    out << "unusable files (relative paths; they may contain identifiers, keep this output on site):\n";
    for (const auto& [path, reason] : r.unusable) out << "  " << path << ": " << reason << "\n";
  }
  if (!options.preview_dir.empty()) {
    absl::Status s = WritePreviews(*set, options.preview_dir);
    if (!s.ok()) return s;
    out << absl::StrFormat("preview      %d PNG files in %s\n", set->count(), options.preview_dir);
  }
  if (!options.export_raw_dir.empty()) {
    absl::Status s = ExportRaw(options.dataset, *set, options.export_raw_dir);
    if (!s.ok()) return s;
    out << absl::StrFormat("export-raw   %d .npy files (float32 modality values) in %s\n", set->count(),
                           options.export_raw_dir);
  }
  return absl::OkStatus();
}

}  // namespace fedrad::node

#include "node/predict.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "node/dataset.h"
#include "node/dicom_reader.h"
#include "node/heatmap.h"
#include "node/inference.h"
#include "node/saved_model.h"

namespace fedrad::node {
namespace {

namespace fs = std::filesystem;

struct Row {
  std::string path;
  std::string sop_instance_uid;
  int frame = 0;  // from 1
  int predicted = -1;
  std::vector<float> probabilities;
  std::string heatmap;
  std::string error;
};

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// Hershey fonts draw ASCII only.
std::string Printable(const std::string& s) {
  std::string out;
  for (char c : s) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out;
}

class Run {
 public:
  Run(const PredictOptions& o, const SavedModel& model, PreprocessSettings settings,
      std::unique_ptr<Predictor> predictor, std::vector<std::string> class_names)
      : o_(o),
        model_(model),
        settings_(std::move(settings)),
        predictor_(std::move(predictor)),
        class_names_(std::move(class_names)) {}

  absl::StatusOr<PredictReport> Go(const std::vector<std::string>& paths, const std::vector<std::string>& relative) {
    report_.model_sha256 = model_.sha256;
    report_.files = static_cast<int>(paths.size());
    relative_ = &relative;
    paths_ = &paths;
    LoaderOptions loader;
    loader.threads = o_.loader_threads;
    ImageLoader images(paths, settings_, loader);
    absl::Time last_progress = absl::Now();
    int done = 0;
    while (std::optional<LoadedImage> image = images.Next()) {
      ++done;
      if (!image->status.ok()) {
        const std::string reason = ReasonOf(image->status);
        ++report_.skipped[reason];
        Row row;
        row.path = relative[image->item];
        row.error = reason;
        rows_.push_back(std::move(row));
      } else {
        frames_ += static_cast<int>(image->frames.size());
        batch_.push_back(std::move(*image));
        if (frames_ >= o_.batch) {
          absl::Status s = Flush();
          if (!s.ok()) return s;
        }
      }
      if (absl::Now() - last_progress > absl::Seconds(5)) {
        last_progress = absl::Now();
        spdlog::info("predict: {}/{} files, {} images", done, paths.size(), report_.images);
      }
    }
    absl::Status s = Flush();
    if (!s.ok()) return s;
    s = WriteCsv();
    if (!s.ok()) return s;
    report_.patients = static_cast<int>(patients_.size());
    report_.sop_instance_uids_sha256 = UidsSha256(uids_);
    return report_;
  }

 private:
  absl::Status Flush() {
    if (batch_.empty()) return absl::OkStatus();
    const size_t per = static_cast<size_t>(settings_.output_size) * settings_.output_size;
    std::vector<float> pixels;
    pixels.reserve(static_cast<size_t>(frames_) * per);
    for (const LoadedImage& image : batch_) {
      for (const PreparedFrame& f : image.frames) pixels.insert(pixels.end(), f.pixels.begin(), f.pixels.end());
    }
    const bool heatmaps = !o_.heatmap_dir.empty();
    absl::StatusOr<BatchOutput> out = predictor_->Run(pixels.data(), frames_, heatmaps);
    if (!out.ok()) return out.status();
    const int k = model_.spec.num_classes;
    size_t at = 0;
    for (const LoadedImage& image : batch_) {
      std::vector<size_t> rows_of_image;
      for (const PreparedFrame& f : image.frames) {
        Row row;
        row.path = (*relative_)[image.item];
        row.sop_instance_uid = image.facts.sop_instance_uid;
        uids_.insert(image.facts.sop_instance_uid.empty() ? "file:" + row.path : image.facts.sop_instance_uid);
        patients_.insert(PatientKey(image.facts, nullptr));
        row.frame = f.index + 1;
        row.probabilities.assign(out->probabilities.begin() + at * k, out->probabilities.begin() + (at + 1) * k);
        // A model whose weights overflow gives NaN: no row would be true.
        if (!std::all_of(row.probabilities.begin(), row.probabilities.end(),
                         [](float p) { return std::isfinite(p); })) {
          return absl::FailedPreconditionError(
              absl::StrCat("the model '", o_.model_path, "' gives a non-finite probability for ", row.path, " frame ",
                           row.frame, ": it is broken (its weights overflow), and no prediction of it is written"));
        }
        row.predicted = static_cast<int>(std::max_element(row.probabilities.begin(), row.probabilities.end()) -
                                         row.probabilities.begin());
        ++report_.predicted[row.predicted];
        ++report_.images;
        rows_of_image.push_back(rows_.size());
        rows_.push_back(std::move(row));
        ++at;
      }
      if (heatmaps) {
        absl::Status s = DrawHeatmaps(image, rows_of_image, out->heatmaps, at - image.frames.size());
        if (!s.ok()) return s;
      }
    }
    batch_.clear();
    frames_ = 0;
    return absl::OkStatus();
  }

  std::string ClassName(int c) const { return class_names_.empty() ? std::to_string(c) : class_names_[c]; }

  // Decodes the file again at full resolution and draws each frame's map on it.
  absl::Status DrawHeatmaps(const LoadedImage& image, const std::vector<size_t>& rows, const std::vector<float>& maps,
                            size_t first) {
    const std::string& source = (*paths_)[image.item];
    DicomReadOptions read;
    read.color_to_gray = settings_.color_to_gray;
    absl::StatusOr<DicomImageFile> file = ReadDicomImage(source, read);
    if (!file.ok()) return file.status();  // it was read a moment ago
    const size_t per = static_cast<size_t>(settings_.output_size) * settings_.output_size;
    const bool multi_frame = file->frames.size() > 1;
    for (size_t i = 0; i < image.frames.size(); ++i) {
      Row& row = rows_[rows[i]];
      const ModalityFrame* frame = nullptr;
      for (const ModalityFrame& f : file->frames) {
        if (f.index == image.frames[i].index) frame = &f;
      }
      if (frame == nullptr) return absl::InternalError(absl::StrCat("'", source, "' lost a frame"));
      const std::vector<float> map(maps.begin() + (first + i) * per, maps.begin() + (first + i + 1) * per);
      const float p = row.probabilities[row.predicted];
      const std::string caption = Printable(
          absl::StrFormat("%s p=%.2f | Grad-CAM | fedrad %s", ClassName(row.predicted), p, model_.sha256.substr(0, 8)));
      const RgbImage drawn =
          DrawHeatmap(WindowFrame(*frame, *file, settings_), frame->rows, frame->columns, map, settings_, caption);
      const std::string name = multi_frame ? absl::StrCat(row.path, ".frame", row.frame) : row.path;
      const std::string base = absl::StrCat(o_.heatmap_dir, "/", name);
      absl::Status s = EnsureDirectory(fs::path(base).parent_path().string());
      if (!s.ok()) return s;
      s = WritePng(drawn, base + ".png");
      if (!s.ok()) return s;
      row.heatmap = name + ".png";
      if (o_.dicom_overlays) {
        SecondaryCapture sc;
        sc.source_path = source;
        sc.frame = image.frames[i].index;
        sc.model_sha256 = model_.sha256;
        auto round = model_.metadata.find("round");
        sc.description = absl::StrFormat(
            "Grad-CAM heatmap of the predicted class %s (probability %.3f) by fedrad model %s (%s%s); research use",
            ClassName(row.predicted), p, model_.sha256.substr(0, 12), model_.spec.architecture,
            round == model_.metadata.end() ? "" : absl::StrCat(", round ", round->second));
        sc.instance_number = ++report_.heatmaps;
        s = WriteSecondaryCapture(drawn, sc, base + ".dcm");
        if (!s.ok()) return s;
      } else {
        ++report_.heatmaps;
      }
    }
    return absl::OkStatus();
  }

  absl::Status WriteCsv() {
    std::sort(rows_.begin(), rows_.end(),
              [](const Row& a, const Row& b) { return std::tie(a.path, a.frame) < std::tie(b.path, b.frame); });
    const bool heatmaps = !o_.heatmap_dir.empty();
    std::string csv = "path,sop_instance_uid,frame,predicted_class";
    for (int c = 0; c < model_.spec.num_classes; ++c) absl::StrAppend(&csv, ",", CsvField("p_" + ClassName(c)));
    if (heatmaps) absl::StrAppend(&csv, ",heatmap");
    absl::StrAppend(&csv, ",error\n");
    for (const Row& r : rows_) {
      absl::StrAppend(&csv, CsvField(r.path), ",", CsvField(r.sop_instance_uid), ",");
      if (r.error.empty()) {
        absl::StrAppend(&csv, r.frame, ",", CsvField(ClassName(r.predicted)));
        for (float p : r.probabilities) absl::StrAppend(&csv, ",", absl::StrFormat("%.6f", p));
      } else {
        absl::StrAppend(&csv, ",");
        for (int c = 0; c < model_.spec.num_classes; ++c) absl::StrAppend(&csv, ",");
      }
      if (heatmaps) absl::StrAppend(&csv, ",", CsvField(r.heatmap));
      absl::StrAppend(&csv, ",", CsvField(r.error), "\n");
    }
    return WriteFileAtomically(o_.out_csv, csv);
  }

  const PredictOptions& o_;
  const SavedModel& model_;
  const PreprocessSettings settings_;
  std::unique_ptr<Predictor> predictor_;
  const std::vector<std::string> class_names_;
  const std::vector<std::string>* relative_ = nullptr;
  const std::vector<std::string>* paths_ = nullptr;
  std::vector<LoadedImage> batch_;
  int frames_ = 0;
  std::vector<Row> rows_;
  PredictReport report_;
  std::set<std::string> uids_, patients_;
};

}  // namespace

absl::StatusOr<PredictReport> Predict(const PredictOptions& o) {
  if (o.out_csv.empty()) return absl::InvalidArgumentError("predict needs an output CSV");
  if (o.batch < 1) return absl::InvalidArgumentError("the batch must hold at least one image");
  absl::StatusOr<SavedModel> model = LoadSavedModel(o.model_path);
  if (!model.ok()) return model.status();
  PreprocessSettings settings = o.preprocess;
  settings.output_size = model->spec.input_size;
  absl::Status s = CheckPipeline(*model, settings);
  if (!s.ok()) return s;
  if (!o.class_names.empty() && static_cast<int>(o.class_names.size()) != model->spec.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat("'", o.model_path, "' has ", model->spec.num_classes,
                                                   " classes, the site names ", o.class_names.size(), " (",
                                                   absl::StrJoin(o.class_names, ", "), ")"));
  }

  std::vector<std::string> paths, relative;
  std::error_code ec;
  if (fs::is_directory(o.input, ec)) {
    relative = ListDataFiles(o.input, o.heatmap_dir);
    for (const std::string& r : relative) paths.push_back((fs::path(o.input) / r).string());
  } else if (fs::is_regular_file(o.input, ec)) {
    paths.push_back(o.input);
    relative.push_back(fs::path(o.input).filename().string());
  } else {
    return absl::NotFoundError(absl::StrCat("input '", o.input, "' is neither a file nor a folder"));
  }
  if (paths.empty()) return absl::NotFoundError(absl::StrCat("no files under '", o.input, "'"));
  if (!o.heatmap_dir.empty()) {
    s = EnsureDirectory(o.heatmap_dir);
    if (!s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<Predictor>> predictor = Predictor::Create(*model);
  if (!predictor.ok()) return predictor.status();
  spdlog::info("predict: {} file(s) with model {} ({}, {} classes, input {}x{})", paths.size(),
               model->sha256.substr(0, 12), model->spec.architecture, model->spec.num_classes, model->spec.input_size,
               model->spec.input_size);
  Run run(o, *model, settings, std::move(*predictor), o.class_names);
  return run.Go(paths, relative);
}

}  // namespace fedrad::node

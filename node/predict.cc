#include "node/predict.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <memory>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/multilabel_metrics.h"
#include "crypto/sha256.h"
#include "node/dataset.h"
#include "node/dicom_reader.h"
#include "node/dicom_seg.h"
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
  // The model found something: a class other than 0, or a multilabel
  // model's label at kMultilabelThreshold or more.
  bool positive = false;
  std::vector<float> probabilities;
  std::string heatmap;
  std::string segmentation;  // the SEG object that holds its mask, when written
  std::string error;
};

// What a segmentation run keeps of each series for its SEG object: the
// source files and, for each image with anything found, its mask on the
// image's own grid.
struct SeriesMasks {
  std::vector<std::string> sources;  // absolute paths
  std::vector<SegFrame> frames;
  std::vector<size_t> rows;  // CSV rows of its images
  std::string first_relative;
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

// Where an image's outputs go: its path relative to the input, without a
// .dcm extension (01.dcm -> 01, so no 01.dcm.dcm), a frame suffix for
// multi-frame files, and what the output is.
std::string OutputName(const std::string& relative, bool multi_frame, int frame, const char* what) {
  fs::path p(relative);
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".dcm" || ext == ".dicom") p.replace_extension();
  std::string name = p.string();
  if (multi_frame) absl::StrAppend(&name, ".frame", frame);
  return absl::StrCat(name, ".", what);
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
    s = WriteSegmentations();
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
    const bool segmentation = model_.spec.task == ModelTask::kSegmentation;
    const bool multilabel = model_.spec.task == ModelTask::kMultilabel;
    const bool heatmaps = !o_.heatmap_dir.empty() && !segmentation;
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
        // A segmentation's image is of the foreground class covering most of
        // it, or background when nothing was found.
        const auto first = row.probabilities.begin() + (segmentation ? 1 : 0);
        row.predicted = static_cast<int>(std::max_element(first, row.probabilities.end()) - row.probabilities.begin());
        if (segmentation && row.probabilities[row.predicted] == 0) row.predicted = 0;
        if (multilabel) {
          // Each label the image shows counts; predicted is the most probable.
          for (int c = 0; c < k; ++c) report_.predicted[c] += row.probabilities[c] >= kMultilabelThreshold ? 1 : 0;
          row.positive = row.probabilities[row.predicted] >= kMultilabelThreshold;
        } else {
          ++report_.predicted[row.predicted];
          row.positive = row.predicted != 0;
        }
        ++report_.images;
        rows_of_image.push_back(rows_.size());
        rows_.push_back(std::move(row));
        ++at;
      }
      if (heatmaps) {
        absl::Status s = DrawHeatmaps(image, rows_of_image, out->heatmaps, at - image.frames.size());
        if (!s.ok()) return s;
      }
      if (segmentation && !o_.heatmap_dir.empty()) {
        absl::Status s = DrawMasks(image, rows_of_image, out->masks, at - image.frames.size());
        if (!s.ok()) return s;
      }
    }
    batch_.clear();
    frames_ = 0;
    return absl::OkStatus();
  }

  std::string ClassName(int c) const {
    if (!class_names_.empty()) return class_names_[c];
    if (!model_.spec.class_names.empty()) return model_.spec.class_names[c];
    return std::to_string(c);
  }

  // The image's file decoded again at full resolution (it was read a
  // moment ago), and the frame of it that `prepared` was made from.
  absl::StatusOr<DicomImageFile> ReadSource(const LoadedImage& image) const {
    DicomReadOptions read;
    read.color_to_gray = settings_.color_to_gray;
    return ReadDicomImage((*paths_)[image.item], read);
  }
  static absl::StatusOr<const ModalityFrame*> FrameOf(const DicomImageFile& file, const PreparedFrame& prepared,
                                                      const std::string& source) {
    for (const ModalityFrame& f : file.frames) {
      if (f.index == prepared.index) return &f;
    }
    return absl::InternalError(absl::StrCat("'", source, "' lost a frame"));
  }

  // Decodes the file again at full resolution and draws each frame's map on it.
  absl::Status DrawHeatmaps(const LoadedImage& image, const std::vector<size_t>& rows, const std::vector<float>& maps,
                            size_t first) {
    const std::string& source = (*paths_)[image.item];
    absl::StatusOr<DicomImageFile> file = ReadSource(image);
    if (!file.ok()) return file.status();
    const size_t per = static_cast<size_t>(settings_.output_size) * settings_.output_size;
    const bool multi_frame = file->frames.size() > 1;
    for (size_t i = 0; i < image.frames.size(); ++i) {
      Row& row = rows_[rows[i]];
      absl::StatusOr<const ModalityFrame*> found = FrameOf(*file, image.frames[i], source);
      if (!found.ok()) return found.status();
      const ModalityFrame* frame = *found;
      // A predicted negative gets no heatmap unless asked (PredictOptions).
      if (!row.positive && !o_.heatmap_negatives) continue;
      const std::vector<float> map(maps.begin() + (first + i) * per, maps.begin() + (first + i + 1) * per);
      const float p = row.probabilities[row.predicted];
      const std::string caption = Printable(
          absl::StrFormat("%s p=%.2f | Grad-CAM | fedrad %s", ClassName(row.predicted), p, model_.sha256.substr(0, 8)));
      const RgbImage drawn =
          DrawHeatmap(WindowFrame(*frame, *file, settings_), frame->rows, frame->columns, map, settings_, caption);
      const std::string name = OutputName(row.path, multi_frame, row.frame, "heatmap");
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

  // Segmentation: each frame's predicted mask brought back onto the frame,
  // its outline drawn over the windowed frame (a PNG), and kept for the
  // series' SEG object.
  absl::Status DrawMasks(const LoadedImage& image, const std::vector<size_t>& rows, const std::vector<uint8_t>& masks,
                         size_t first) {
    const std::string& source = (*paths_)[image.item];
    absl::StatusOr<DicomImageFile> file = ReadSource(image);
    if (!file.ok()) return file.status();
    const size_t per = static_cast<size_t>(settings_.output_size) * settings_.output_size;
    const bool multi_frame = file->frames.size() > 1;
    SeriesMasks& series = series_[file->series_instance_uid.empty() ? "file:" + source : file->series_instance_uid];
    if (series.sources.empty()) series.first_relative = (*relative_)[image.item];
    series.sources.push_back(source);
    for (size_t i = 0; i < image.frames.size(); ++i) {
      Row& row = rows_[rows[i]];
      absl::StatusOr<const ModalityFrame*> found = FrameOf(*file, image.frames[i], source);
      if (!found.ok()) return found.status();
      const ModalityFrame* frame = *found;
      const std::vector<uint8_t> input(masks.begin() + (first + i) * per, masks.begin() + (first + i + 1) * per);
      const std::vector<uint8_t> on_frame = MaskToFrame(input, frame->rows, frame->columns, settings_);
      const std::string caption =
          Printable(absl::StrFormat("%s %.1f%% of the input | fedrad %s",
                                    row.predicted == 0 ? std::string("nothing found") : ClassName(row.predicted),
                                    100.0 * (1 - row.probabilities[0]), model_.sha256.substr(0, 8)));
      const RgbImage drawn =
          DrawMaskContours(WindowFrame(*frame, *file, settings_), frame->rows, frame->columns, on_frame, caption);
      const std::string name = OutputName(row.path, multi_frame, row.frame, "overlay");
      const std::string base = absl::StrCat(o_.heatmap_dir, "/", name);
      absl::Status s = EnsureDirectory(fs::path(base).parent_path().string());
      if (!s.ok()) return s;
      s = WritePng(drawn, base + ".png");
      if (!s.ok()) return s;
      row.heatmap = name + ".png";
      ++report_.heatmaps;
      series.rows.push_back(rows[i]);
      for (int c = 1; c < model_.spec.num_classes; ++c) {
        SegFrame f{file->sop_instance_uid, image.frames[i].index, c, std::vector<uint8_t>(on_frame.size(), 0)};
        bool any = false;
        for (size_t p = 0; p < on_frame.size(); ++p) any |= (f.mask[p] = on_frame[p] == c) != 0;
        if (any) series.frames.push_back(std::move(f));
      }
    }
    return absl::OkStatus();
  }

  // With dicom_overlays: one SEG object per series, in the source's study,
  // beside the series' first overlay. UIDs derive from the model and the
  // series, so a rerun replaces the object instead of adding another.
  absl::Status WriteSegmentations() {
    if (!o_.dicom_overlays || model_.spec.task != ModelTask::kSegmentation) return absl::OkStatus();
    for (auto& [series_uid, series] : series_) {
      SegWrite w;
      w.source_paths = series.sources;
      for (int c = 1; c < model_.spec.num_classes; ++c) w.segment_labels.push_back(ClassName(c));
      w.frames = std::move(series.frames);
      w.sop_instance_uid = crypto::UidFromKey(absl::StrCat("fedrad/seg/", model_.sha256, "/", series_uid));
      w.series_instance_uid = crypto::UidFromKey(absl::StrCat("fedrad/seg-series/", model_.sha256, "/", series_uid));
      w.series_description = absl::StrCat("fedrad segmentation, model ", model_.sha256.substr(0, 12));
      w.algorithm_name = absl::StrCat("fedrad ", model_.spec.architecture);
      w.algorithm_version = model_.sha256.substr(0, 12);
      const std::string name = absl::StrCat(fs::path(series.first_relative).parent_path().string(), "/fedrad-seg-",
                                            crypto::Sha256Hex(series_uid).substr(0, 12), ".dcm");
      absl::Status s = WriteSegmentation(w, absl::StrCat(o_.heatmap_dir, "/", name));
      if (!s.ok()) return s;
      for (size_t r : series.rows) rows_[r].segmentation = name;
      ++report_.segmentations;
    }
    return absl::OkStatus();
  }

  absl::Status WriteCsv() {
    std::sort(rows_.begin(), rows_.end(),
              [](const Row& a, const Row& b) { return std::tie(a.path, a.frame) < std::tie(b.path, b.frame); });
    const bool heatmaps = !o_.heatmap_dir.empty();
    const bool segmentation = model_.spec.task == ModelTask::kSegmentation;
    const bool seg_objects = segmentation && o_.dicom_overlays;
    const bool multilabel = model_.spec.task == ModelTask::kMultilabel;
    // Multilabel: the labels at kMultilabelThreshold or more, '|'-separated
    // (labels.csv's list form); empty when none.
    std::string csv =
        multilabel ? "path,sop_instance_uid,frame,predicted_labels" : "path,sop_instance_uid,frame,predicted_class";
    // Segmentation: the share of the input predicted as each class.
    for (int c = 0; c < model_.spec.num_classes; ++c) {
      absl::StrAppend(&csv, ",", CsvField((segmentation ? "share_" : "p_") + ClassName(c)));
    }
    if (heatmaps) absl::StrAppend(&csv, segmentation ? ",overlay" : ",heatmap");
    if (seg_objects) absl::StrAppend(&csv, ",segmentation");
    absl::StrAppend(&csv, ",error\n");
    for (const Row& r : rows_) {
      absl::StrAppend(&csv, CsvField(r.path), ",", CsvField(r.sop_instance_uid), ",");
      if (r.error.empty()) {
        std::string predicted = ClassName(r.predicted);
        if (multilabel) {
          std::vector<std::string> found;
          for (int c = 0; c < model_.spec.num_classes; ++c) {
            if (r.probabilities[c] >= kMultilabelThreshold) found.push_back(ClassName(c));
          }
          predicted = absl::StrJoin(found, "|");
        }
        absl::StrAppend(&csv, r.frame, ",", CsvField(predicted));
        for (float p : r.probabilities) absl::StrAppend(&csv, ",", absl::StrFormat("%.6f", p));
      } else {
        absl::StrAppend(&csv, ",");
        for (int c = 0; c < model_.spec.num_classes; ++c) absl::StrAppend(&csv, ",");
      }
      if (heatmaps) absl::StrAppend(&csv, ",", CsvField(r.heatmap));
      if (seg_objects) absl::StrAppend(&csv, ",", CsvField(r.segmentation));
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
  std::map<std::string, SeriesMasks> series_;  // segmentation, by SeriesInstanceUID
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

#include "node/train_local.h"

#include <cmath>
#include <map>

#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/model_zoo.h"
#include "common/privacy_accountant.h"
#include "common/safetensors.h"
#include "node/privacy_budget.h"
#include "node/trainer.h"

namespace fedrad::node {

absl::Status TrainLocal(const TrainLocalOptions& o, std::ostream& out) {
  if (o.threads > 0) SetTorchThreads(o.threads);
  LoadReport report;
  absl::StatusOr<ImageSet> data = LoadImageSet(o.spec, &report);
  if (!data.ok()) return data.status();
  ImageSet train, test;
  if (o.test) {
    LoadReport test_report;
    absl::StatusOr<ImageSet> t = LoadImageSet(*o.test, &test_report);
    if (!t.ok()) return t.status();
    train = std::move(*data);
    test = std::move(*t);
  } else {
    PatientSplit split = SplitByPatient(*data, o.validation_fraction, o.split_seed);
    train = std::move(split.train);
    test = std::move(split.validation);
  }
  spdlog::info("train-local: {} training images, {} held out", train.count(), test.count());
  absl::StatusOr<ModelParameters> params = InitialParameters(o.model, 1);
  if (!params.ok()) return params.status();

  LocalTrainingSettings settings;
  settings.local_epochs = o.epochs;
  settings.batch_size = o.batch;
  settings.learning_rate = o.learning_rate;
  settings.momentum = o.momentum;
  double epsilon = 0, sigma = 0, q = 0;
  int64_t steps = 0;
  if (o.dp) {
    const int64_t units = CountUnits(train.patients, o.dp->patient_level);
    const DpSchedule schedule = ScheduleFor(units, o.batch, o.epochs);
    q = schedule.sampling_rate;
    steps = schedule.steps;
    sigma = o.dp->noise_multiplier;
    if (sigma < 0) {
      if (o.dp->target_epsilon <= 0) return absl::InvalidArgumentError("DP needs --noise or --epsilon");
      absl::StatusOr<double> found = NoiseMultiplierFor(o.dp->target_epsilon, o.dp->delta, q, steps);
      if (!found.ok()) return found.status();
      sigma = *found;
    }
    epsilon = EpsilonFor(sigma, q, steps, o.dp->delta).epsilon;
    settings.dp = DpTrainingSettings{sigma, o.dp->clip_norm, q, steps, o.dp->patient_level, 0};
    out << absl::StrFormat("DP-SGD: %s-level, %d units, q = %.5f, %d steps, sigma = %.4f, C = %g -> epsilon = %.4f at delta = %g\n",
                           o.dp->patient_level ? "patient" : "image", units, q, steps, sigma, o.dp->clip_norm,
                           epsilon, o.dp->delta);
  }
  absl::StatusOr<TrainingOutcome> outcome = TrainLocally(o.model, *params, train, settings);
  if (!outcome.ok()) return outcome.status();
  for (size_t i = 0; i < params->values.size(); ++i) params->values[i] += outcome->delta[i];
  absl::StatusOr<Evaluation> eval = EvaluateModel(o.model, *params, test);
  if (!eval.ok()) return eval.status();
  out << absl::StrFormat("held-out accuracy %.4f, loss %.4f on %d images (%s, %d epochs)\n", eval->accuracy,
                         eval->loss, eval->count, o.model.architecture, o.epochs);
  if (o.dp) out << absl::StrFormat("privacy: epsilon = %.4f, delta = %g\n", epsilon, o.dp->delta);
  if (!o.save_path.empty()) {
    SafetensorsMetadata metadata = ModelShapeMetadata(o.model);
    metadata["manifest_sha256"] = params->manifest.Sha256();
    metadata["trained_by"] = "fedrad-node train-local";
    absl::Status s = WriteSafetensorsFile(o.save_path, *params, metadata);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<Evaluation> EvaluateModelFile(const std::string& model_path, EvaluateOptions o) {
  absl::StatusOr<SafetensorsFile> file = ReadSafetensorsFile(model_path);
  if (!file.ok()) return file.status();
  auto arch = file->metadata.find("architecture");
  if (arch == file->metadata.end()) {
    return absl::InvalidArgumentError(absl::StrCat("'", model_path, "' does not name its architecture"));
  }
  // A shape figure from the file, or `given` (0: not given), or `fallback`.
  auto shape = [&](const char* key, int given, int fallback, const char* flag) -> absl::StatusOr<int> {
    auto it = file->metadata.find(key);
    if (it == file->metadata.end()) return given > 0 ? given : fallback;
    int value = 0;
    if (!absl::SimpleAtoi(it->second, &value) || value <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("'", model_path, "': metadata ", key, " = '", it->second,
                                                     "' is not a positive integer"));
    }
    if (given > 0 && given != value) {
      return absl::InvalidArgumentError(absl::StrCat("'", model_path, "' is a model of ", key, " ", value,
                                                     ", not ", given, " (", flag, ")"));
    }
    return value;
  };
  absl::StatusOr<int> size = shape("input_size", o.spec.preprocess.output_size, o.default_size, "--size");
  if (!size.ok()) return size.status();
  absl::StatusOr<int> classes = shape("num_classes", o.spec.num_classes, o.default_classes, "--classes");
  if (!classes.ok()) return classes.status();
  absl::StatusOr<int> channels = shape("in_channels", 0, 1, "");
  if (!channels.ok()) return channels.status();
  ModelSpec model{arch->second, *channels, *size, *classes};
  absl::Status s = CheckModelSpec(model);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("'", model_path, "': ", s.message()));
  o.spec.preprocess.output_size = *size;
  o.spec.num_classes = *classes;
  LoadReport report;
  absl::StatusOr<ImageSet> data = LoadImageSet(o.spec, &report);
  if (!data.ok()) return data.status();
  if (o.validation_fraction) {
    PatientSplit split = SplitByPatient(*data, *o.validation_fraction, o.split_seed);
    if (split.validation.count() == 0) {
      return absl::FailedPreconditionError(absl::StrCat("the validation split of ", o.spec.data_dir, " is empty"));
    }
    return EvaluateModel(model, file->parameters, split.validation);
  }
  if (data->count() == 0) return absl::FailedPreconditionError(absl::StrCat("no labelled images in ", o.spec.data_dir));
  return EvaluateModel(model, file->parameters, *data);
}

}  // namespace fedrad::node

#include "node/train_local.h"

#include <cmath>
#include <map>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/model_zoo.h"
#include "common/multilabel_metrics.h"
#include "common/privacy_accountant.h"
#include "common/safetensors.h"
#include "node/privacy_budget.h"
#include "node/saved_model.h"
#include "node/trainer.h"

namespace fedrad::node {

absl::Status TrainLocal(const TrainLocalOptions& o, std::ostream& out) {
  SetTorchThreads(o.threads);
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
  absl::StatusOr<ModelParameters> params;
  if (o.init_path.empty()) {
    params = InitialParameters(o.model, 1);
  } else {
    absl::StatusOr<InitialWeights> given = WeightsFromFile(o.model, o.init_path, 1);
    if (!given.ok()) return given.status();
    for (const std::string& note : given->notes) out << "initial model: " << note << "\n";
    out << "starting from " << o.init_path << "\n";
    params = std::move(given->parameters);
  }
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
    out << absl::StrFormat(
        "DP-SGD: %s-level, %d units, q = %.5f, %d steps, sigma = %.4f, C = %g -> epsilon = %.4f at delta = %g\n",
        o.dp->patient_level ? "patient" : "image", units, q, steps, sigma, o.dp->clip_norm, epsilon, o.dp->delta);
  }
  absl::StatusOr<TrainingOutcome> outcome = TrainLocally(o.model, *params, train, settings);
  if (!outcome.ok()) return outcome.status();
  absl::StatusOr<TrainedParameters> trained = TrainedParametersOf(o.model);
  if (!trained.ok()) return trained.status();
  trained->AddTo(outcome->delta, &params->values);
  absl::StatusOr<Evaluation> eval = EvaluateModel(o.model, *params, test);
  if (!eval.ok()) return eval.status();
  if (o.model.task == ModelTask::kSegmentation) {
    double dice = 0;
    for (double d : eval->dice) dice += d;
    out << absl::StrFormat("held-out mean Dice %.4f, pixel accuracy %.4f, loss %.4f on %d images (%s, %d epochs)\n",
                           eval->dice.empty() ? 0.0 : dice / static_cast<double>(eval->dice.size()), eval->accuracy,
                           eval->loss, eval->count, o.model.architecture, o.epochs);
  } else if (o.model.task == ModelTask::kMultilabel) {
    absl::StatusOr<MultilabelMetrics> m = ComputeMultilabelMetrics(eval->scores);
    if (!m.ok()) return m.status();
    auto figure = [](const std::optional<double>& v) { return v ? absl::StrFormat("%.4f", *v) : std::string("-"); };
    out << absl::StrFormat(
        "held-out macro AUC %s, micro AUC %s, macro sensitivity %s, macro specificity %s, label accuracy %.4f, loss "
        "%.4f on %d images (%s, %d epochs)\n",
        figure(m->macro_roc_auc), figure(m->micro.roc_auc), figure(m->macro_sensitivity), figure(m->macro_specificity),
        eval->accuracy, eval->loss, eval->count, o.model.architecture, o.epochs);
    if (std::optional<std::string> warning = ConstantLabelWarning(*m, o.model.class_names)) {
      out << "warning: " << *warning << "\n";
    }
  } else {
    absl::StatusOr<Metrics> metrics = ComputeMetrics(eval->scores);
    if (!metrics.ok()) return metrics.status();
    out << absl::StrFormat("held-out accuracy %.4f, balanced accuracy %.4f, loss %.4f on %d images (%s, %d epochs)\n",
                           eval->accuracy, metrics->balanced_accuracy, eval->loss, eval->count, o.model.architecture,
                           o.epochs);
    if (std::optional<std::string> warning = SingleClassWarning(*metrics)) out << "warning: " << *warning << "\n";
  }
  if (o.dp) out << absl::StrFormat("privacy: epsilon = %.4f, delta = %g\n", epsilon, o.dp->delta);
  if (!o.save_path.empty()) {
    SafetensorsMetadata metadata = ModelShapeMetadata(o.model);
    metadata["manifest_sha256"] = params->manifest.Sha256();
    metadata["trained_by"] = "fedrad-node train-local";
    SetPipelineMetadata(o.spec.preprocess, &metadata);
    absl::Status s = WriteSafetensorsFile(o.save_path, *params, metadata);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<Evaluation> EvaluateModelFile(const std::string& model_path, EvaluateOptions o) {
  SavedModelShape shape;
  shape.size = o.spec.preprocess.output_size;
  shape.classes = o.spec.num_classes;
  shape.default_size = o.default_size;
  shape.default_classes = o.default_classes;
  absl::StatusOr<SavedModel> model = LoadSavedModel(model_path, shape);
  if (!model.ok()) return model.status();
  o.spec.preprocess.output_size = model->spec.input_size;
  o.spec.num_classes = model->spec.num_classes;
  o.spec.task = model->spec.task;
  if (o.spec.class_names.empty()) o.spec.class_names = model->spec.class_names;
  if (absl::Status s = CheckPipeline(*model, o.spec.preprocess); !s.ok()) {
    spdlog::warn("{}; the figures describe the model on this site's pipeline", std::string(s.message()));
  }
  LoadReport report;
  absl::StatusOr<ImageSet> data = LoadImageSet(o.spec, &report);
  if (!data.ok()) return data.status();
  if (o.validation_fraction) {
    PatientSplit split = SplitByPatient(*data, *o.validation_fraction, o.split_seed);
    if (split.validation.count() == 0) {
      return absl::FailedPreconditionError(absl::StrCat("the validation split of ", o.spec.data_dir, " is empty"));
    }
    return EvaluateModel(model->spec, model->parameters, split.validation);
  }
  if (data->count() == 0) return absl::FailedPreconditionError(absl::StrCat("no labelled images in ", o.spec.data_dir));
  return EvaluateModel(model->spec, model->parameters, *data);
}

}  // namespace fedrad::node

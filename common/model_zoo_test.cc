#include "common/model_zoo.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "common/safetensors.h"
#include "common/scratch_dir.h"

namespace fedrad {
namespace {

TEST(ModelZooTest, ManifestIsStableAndSeededInitIsDeterministic) {
  ModelSpec spec;
  auto m = ModelManifest(spec);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_FALSE(m->tensors.empty());
  EXPECT_EQ(m->tensors.front().name, "conv1.weight");
  EXPECT_EQ(m->tensors.front().shape, (std::vector<int64_t>{16, 1, 5, 5}));
  EXPECT_EQ(m->tensors.back().name, "fc2.bias");
  auto a = InitialParameters(spec, 7);
  auto b = InitialParameters(spec, 7);
  auto c = InitialParameters(spec, 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->values, b->values);
  EXPECT_NE(a->values, c->values);
  EXPECT_EQ(static_cast<int64_t>(a->values.size()), m->total_elements());
}

TEST(ModelZooTest, TramerBonehCnnHasPublishedShape) {
  ModelSpec spec{"tbcnn28", 1, 28, 10};
  auto m = ModelManifest(spec);
  ASSERT_TRUE(m.ok()) << m.status();
  // conv 16 k8, conv 32 k4, linear 512->32, linear 32->10: 26,010 parameters.
  EXPECT_EQ(m->total_elements(), 16 * 64 + 16 + 32 * 16 * 16 + 32 + 512 * 32 + 32 + 32 * 10 + 10);
  spec.input_size = 64;
  EXPECT_FALSE(CheckModelSpec(spec).ok());
}

// Every dimension is bounded (issue 18, defect 4): an input_size of
// 99,999,999 in a plan or a model file once reached OpenCV's resize.
TEST(ModelZooTest, EveryDimensionIsBounded) {
  EXPECT_TRUE(CheckModelSpec(ModelSpec{"ctnet", 1, kMaxInputSize, 2}).ok());
  const absl::Status big = CheckModelSpec(ModelSpec{"ctnet", 1, 99999999, 2});
  EXPECT_NE(big.message().find("input_size must be 1 to 1024, not 99999999"), std::string::npos) << big;
  EXPECT_FALSE(CheckModelSpec(ModelSpec{"ctnet", 1, kMaxInputSize + 1, 2}).ok());
  EXPECT_FALSE(CheckModelSpec(ModelSpec{"ctnet", 1, 0, 2}).ok());
  EXPECT_FALSE(CheckModelSpec(ModelSpec{"ctnet", 5, 64, 2}).ok());
  EXPECT_FALSE(CheckModelSpec(ModelSpec{"ctnet", 1, 64, 1001}).ok());
  ModelSpec flat{"flat", 1, 64, 2};
  flat.parameters = (int64_t{1} << 31) + 1;
  EXPECT_FALSE(CheckModelSpec(flat).ok());
}

// unet2d: its sizes are bounded, the input must halve depth times, the task
// must be segmentation (and a classifier's classification), class names
// one per class, distinct and printable.
TEST(ModelZooTest, UNetSpecIsCheckedAndItsManifestHasEveryLevel) {
  ModelSpec spec{"unet2d", 1, 64, 2};
  spec.task = ModelTask::kSegmentation;
  ASSERT_TRUE(CheckModelSpec(spec).ok()) << CheckModelSpec(spec);
  absl::StatusOr<Manifest> m = ModelManifest(spec);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->tensors.front().name, "down0.conv1.weight");
  EXPECT_EQ(m->tensors.back().name, "head.bias");
  // 4 per down level (conv1, norm1, conv2, norm2: 8 tensors), 6 layers per up level, the head.
  EXPECT_EQ(m->tensors.size(), static_cast<size_t>(8 * (spec.depth + 1) + 12 * spec.depth + 2));
  ModelSpec bad = spec;
  bad.input_size = 60;  // not a multiple of 8
  EXPECT_NE(CheckModelSpec(bad).message().find("multiple of 8"), std::string::npos) << CheckModelSpec(bad);
  bad = spec;
  bad.depth = 6;
  EXPECT_FALSE(CheckModelSpec(bad).ok());
  bad = spec;
  bad.base_width = 6;
  EXPECT_FALSE(CheckModelSpec(bad).ok());
  bad = spec;
  bad.task = ModelTask::kClassification;
  EXPECT_NE(CheckModelSpec(bad).message().find("does segmentation"), std::string::npos) << CheckModelSpec(bad);
  bad = spec;
  bad.task = static_cast<ModelTask>(7);
  EXPECT_NE(CheckModelSpec(bad).message().find("task 7"), std::string::npos) << CheckModelSpec(bad);
  ModelSpec classifier{"ctnet", 1, 64, 2};
  classifier.task = ModelTask::kSegmentation;
  EXPECT_NE(CheckModelSpec(classifier).message().find("unet2d"), std::string::npos) << CheckModelSpec(classifier);
  ModelSpec named = spec;
  named.class_names = {"background", "lesion"};
  EXPECT_TRUE(CheckModelSpec(named).ok());
  named.class_names = {"background"};
  EXPECT_FALSE(CheckModelSpec(named).ok());
  named.class_names = {"lesion", "lesion"};
  EXPECT_FALSE(CheckModelSpec(named).ok());
  named.class_names = {"background", "bad\nname"};
  EXPECT_FALSE(CheckModelSpec(named).ok());
  named.class_names = {"background", ""};
  EXPECT_FALSE(CheckModelSpec(named).ok());
  // The shape travels in the metadata, class names as JSON.
  named.class_names = {"background", "lesion"};
  const SafetensorsMetadata meta = ModelShapeMetadata(named);
  EXPECT_EQ(meta.at("task"), "segmentation");
  EXPECT_EQ(meta.at("depth"), "3");
  EXPECT_EQ(meta.at("base_width"), "16");
  EXPECT_EQ(meta.at("class_names"), "[\"background\",\"lesion\"]");
}

// resnet18 and resnet34 at He et al.'s width on ImageNet's shape have
// torchvision's parameter counts (11,689,512 and 21,797,672: a GroupNorm has
// BatchNorm's weight and bias) and its names, so its state_dicts map one to
// one; the ResNet's sizes are bounded.
TEST(ModelZooTest, ResNetsHaveTorchvisionsShapeAndNames) {
  for (auto [arch, count] : {std::pair{"resnet18", int64_t{11689512}}, std::pair{"resnet34", int64_t{21797672}}}) {
    ModelSpec spec{arch, 3, 224, 1000};
    spec.base_width = 64;
    absl::StatusOr<Manifest> m = ModelManifest(spec);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->total_elements(), count) << arch;
    std::map<std::string, std::vector<int64_t>> shape;
    for (const TensorSpec& t : m->tensors) shape[t.name] = t.shape;
    EXPECT_EQ(shape["conv1.weight"], (std::vector<int64_t>{64, 3, 7, 7}));
    EXPECT_FALSE(shape.count("conv1.bias")) << "torchvision's convolutions have no bias";
    EXPECT_EQ(shape["bn1.weight"], (std::vector<int64_t>{64}));
    EXPECT_EQ(shape["layer1.0.conv1.weight"], (std::vector<int64_t>{64, 64, 3, 3}));
    EXPECT_FALSE(shape.count("layer1.0.downsample.0.weight"));
    EXPECT_EQ(shape["layer2.0.downsample.0.weight"], (std::vector<int64_t>{128, 64, 1, 1}));
    EXPECT_EQ(shape["layer2.0.downsample.1.bias"], (std::vector<int64_t>{128}));
    EXPECT_EQ(shape["layer4.1.bn2.weight"], (std::vector<int64_t>{512}));
    EXPECT_EQ(shape["fc.weight"], (std::vector<int64_t>{1000, 512}));
  }
  EXPECT_EQ(ModelManifest(ModelSpec{"resnet34", 1, 64, 2})->tensors.back().name, "fc.bias");
  ModelSpec spec{"resnet18", 1, 64, 2};
  spec.base_width = 12;
  EXPECT_NE(CheckModelSpec(spec).message().find("multiple of 8"), std::string::npos) << CheckModelSpec(spec);
  spec.base_width = 8;
  EXPECT_TRUE(CheckModelSpec(spec).ok());
  spec.in_channels = 4;
  EXPECT_NE(CheckModelSpec(spec).message().find("1 to 3 input channels"), std::string::npos);
  spec.in_channels = 1;
  spec.input_size = 16;
  EXPECT_NE(CheckModelSpec(spec).message().find("at least 32"), std::string::npos);
  spec.input_size = 64;
  spec.task = ModelTask::kSegmentation;
  EXPECT_FALSE(CheckModelSpec(spec).ok()) << "a ResNet classifies";
  EXPECT_EQ(ModelShapeMetadata(ModelSpec{"resnet18", 1, 64, 2}).count("base_width"), 1u);
}

// Starting weights from a file: taken as they are where everything fits; a
// classifier head of another class count is freshly initialised and said
// so; a tensor the model lacks, or one missing, stops it, named.
TEST(ModelZooTest, WeightsFromAFileFitTheManifestOrSayWhyNot) {
  ScratchDir dir("weights_from_file");
  ModelSpec spec{"resnet18", 1, 64, 2};
  spec.base_width = 8;
  const std::string same = (dir.path() / "same.safetensors").string();
  absl::StatusOr<ModelParameters> trained = InitialParameters(spec, 41);
  ASSERT_TRUE(trained.ok());
  ASSERT_TRUE(WriteSafetensorsFile(same, *trained, {}).ok());
  absl::StatusOr<InitialWeights> w = WeightsFromFile(spec, same, 1);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->parameters.values, trained->values);
  EXPECT_TRUE(w->notes.empty());
  // Pretrained on 10 classes, federated on 2: the head starts fresh, the rest as given.
  ModelSpec ten = spec;
  ten.num_classes = 10;
  const std::string pretrained = (dir.path() / "ten.safetensors").string();
  absl::StatusOr<ModelParameters> ten_values = InitialParameters(ten, 41);
  ASSERT_TRUE(WriteSafetensorsFile(pretrained, *ten_values, {}).ok());
  w = WeightsFromFile(spec, pretrained, 1);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->notes.size(), 1u);
  EXPECT_NE(w->notes[0].find("fc.bias, fc.weight"), std::string::npos) << w->notes[0];
  EXPECT_NE(w->notes[0].find("freshly initialised for 2 classes"), std::string::npos) << w->notes[0];
  const absl::StatusOr<ModelParameters> fresh = InitialParameters(spec, 1);
  const int64_t head = spec.base_width * 8 * 2 + 2;  // fc's weight and bias, the last tensors
  const size_t body = w->parameters.values.size() - static_cast<size_t>(head);
  EXPECT_TRUE(std::equal(w->parameters.values.begin(), w->parameters.values.begin() + body, trained->values.begin()));
  EXPECT_TRUE(
      std::equal(w->parameters.values.begin() + body, w->parameters.values.end(), fresh->values.begin() + body));
  // An extra tensor, and one gone.
  ModelParameters extra = *trained;
  extra.manifest.tensors.push_back(TensorSpec{"bn1.running_mean", {8}});
  extra.values.insert(extra.values.end(), 8, 0.0f);
  ASSERT_TRUE(WriteSafetensorsFile((dir.path() / "extra.safetensors").string(), extra, {}).ok());
  w = WeightsFromFile(spec, (dir.path() / "extra.safetensors").string(), 1);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("not in the model: bn1.running_mean"), std::string::npos) << w.status();
  ModelParameters short_of_one = *trained;
  short_of_one.manifest.tensors.erase(short_of_one.manifest.tensors.begin());  // conv1.weight, the first
  short_of_one.values.erase(short_of_one.values.begin(), short_of_one.values.begin() + 8 * 49);
  ASSERT_TRUE(WriteSafetensorsFile((dir.path() / "short.safetensors").string(), short_of_one, {}).ok());
  w = WeightsFromFile(spec, (dir.path() / "short.safetensors").string(), 1);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("missing: conv1.weight"), std::string::npos) << w.status();
  EXPECT_FALSE(WeightsFromFile(spec, (dir.path() / "none.safetensors").string(), 1).ok());
}

TEST(ModelZooTest, UnknownArchitectureIsNamed) {
  ModelSpec spec{"resnet999", 1, 64, 2};
  absl::Status s = CheckModelSpec(spec);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("resnet999"), std::string::npos);
}

}  // namespace
}  // namespace fedrad

namespace fedrad {
namespace {

TEST(ModelZooFlatTest, FlatModelHasItsPlannedLength) {
  ModelSpec spec;
  spec.architecture = "flat";
  spec.parameters = 1000;
  absl::StatusOr<Manifest> m = ModelManifest(spec);
  ASSERT_TRUE(m.ok()) << m.status();
  absl::StatusOr<ModelParameters> p = InitialParameters(spec, 1);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->manifest == *m);
  EXPECT_EQ(p->values.size(), 1000u);
  spec.parameters = 0;
  EXPECT_FALSE(CheckModelSpec(spec).ok());
}

// [model] freeze: prefixes end at a name component, name whole layers, and
// leave something to train; the trained parameters gather and scatter back.
TEST(ModelZooTest, FreezeNamesWholeLayersAndTheRestTrains) {
  EXPECT_TRUE(FreezePrefixMatches("conv1", "conv1.weight"));
  EXPECT_TRUE(FreezePrefixMatches("layer1", "layer1.0.conv1.weight"));
  EXPECT_TRUE(FreezePrefixMatches("layer1.", "layer1.0.conv1.weight"));
  EXPECT_TRUE(FreezePrefixMatches("fc.weight", "fc.weight"));
  EXPECT_FALSE(FreezePrefixMatches("conv1", "conv10.weight"));
  EXPECT_FALSE(FreezePrefixMatches("layer1", "layer10.0.conv1.weight"));
  EXPECT_FALSE(FreezePrefixMatches("", "conv1.weight"));

  ModelSpec spec{"resnet18", 1, 64, 2};
  spec.base_width = 8;
  spec.freeze = {"conv1", "bn1", "layer1", "layer2"};
  absl::StatusOr<TrainedParameters> t = TrainedParametersOf(spec);
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<Manifest> all = ModelManifest(spec);
  ASSERT_TRUE(all.ok());
  for (const TensorSpec& tensor : t->trained.tensors) {
    EXPECT_TRUE(tensor.name.rfind("layer3", 0) == 0 || tensor.name.rfind("layer4", 0) == 0 ||
                tensor.name.rfind("fc.", 0) == 0)
        << tensor.name;
  }
  EXPECT_EQ(t->trained.tensors.size() + t->frozen.size(), all->tensors.size());
  EXPECT_EQ(t->spans.size(), 1u);  // the trained stages and the head are contiguous
  std::vector<float> full(static_cast<size_t>(all->total_elements()));
  for (size_t i = 0; i < full.size(); ++i) full[i] = static_cast<float>(i);
  std::vector<float> part = t->Gather(full);
  ASSERT_EQ(part.size(), static_cast<size_t>(t->elements()));
  EXPECT_EQ(part.front(), static_cast<float>(t->spans[0].first));
  std::vector<float> back(full.size(), -1.0f);
  t->Scatter(part, &back);
  for (size_t i = 0; i < full.size(); ++i) {
    ASSERT_EQ(back[i], i < static_cast<size_t>(t->spans[0].first) ? -1.0f : full[i]) << i;
  }
  t->AddTo(std::vector<float>(part.size(), 1.0f), &full);
  EXPECT_EQ(full[0], 0.0f);
  EXPECT_EQ(full.back(), static_cast<float>(full.size()));  // (size - 1) + 1

  // Gaps: ctnet with norm2 frozen trains conv1 .. conv2 and conv3 .. fc2.
  ModelSpec ct{"ctnet", 1, 32, 2};
  ct.freeze = {"norm2"};
  absl::StatusOr<TrainedParameters> gap = TrainedParametersOf(ct);
  ASSERT_TRUE(gap.ok()) << gap.status();
  EXPECT_EQ(gap->spans.size(), 2u);
  EXPECT_EQ(gap->frozen, (std::vector<std::string>{"norm2.weight", "norm2.bias"}));

  ct.freeze = {"conv9"};
  absl::Status s = CheckModelSpec(ct);
  EXPECT_NE(s.message().find("'conv9' names no parameter of 'ctnet' (its layers: conv1, norm1, conv2"),
            std::string::npos)
      << s;
  ct.freeze = {"fc2.bias"};
  s = CheckModelSpec(ct);
  EXPECT_NE(s.message().find("freezes part of layer 'fc2' (fc2.bias but not fc2.weight); freeze whole layers"),
            std::string::npos)
      << s;
  ct.freeze = {"conv", "norm", "fc"};
  EXPECT_FALSE(CheckModelSpec(ct).ok()) << "conv names no layer: prefixes end at a component";
  ct.freeze = {"conv1", "norm1", "conv2", "norm2", "conv3", "norm3", "fc1", "fc2"};
  s = CheckModelSpec(ct);
  EXPECT_NE(s.message().find("freezes every parameter"), std::string::npos) << s;
  ct.freeze = {"conv1 "};
  EXPECT_FALSE(CheckModelSpec(ct).ok());
}

// norm = "frozen_batch": a ResNet's norms are BatchNorm's four tensors
// (torchvision's names and order); the statistics are in the manifest, in
// no update, and a freeze of the whole layer is not a partial one. Other
// architectures and norms are refused, named.
TEST(ModelZooTest, FrozenBatchNormKeepsItsStatisticsOutOfUpdates) {
  ModelSpec spec{"resnet18", 1, 64, 2};
  spec.base_width = 8;
  spec.norm = kFrozenBatchNorm;
  absl::StatusOr<Manifest> m = ModelManifest(spec);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_GE(m->tensors.size(), 5u);
  EXPECT_EQ(m->tensors[1].name, "bn1.weight");
  EXPECT_EQ(m->tensors[2].name, "bn1.bias");
  EXPECT_EQ(m->tensors[3].name, "bn1.running_mean");
  EXPECT_EQ(m->tensors[4].name, "bn1.running_var");
  absl::StatusOr<ModelParameters> init = InitialParameters(spec, 1);
  ASSERT_TRUE(init.ok());
  EXPECT_EQ(init->values[static_cast<size_t>(8 * 49 + 8 * 3)], 1.0f);  // running_var starts at 1
  absl::StatusOr<TrainedParameters> t = TrainedParametersOf(spec);
  ASSERT_TRUE(t.ok()) << t.status();
  for (const TensorSpec& tensor : t->trained.tensors) EXPECT_FALSE(IsStatistic(tensor.name)) << tensor.name;
  EXPECT_EQ(t->frozen.size(), 40u);
  spec.freeze = {"bn1"};
  EXPECT_TRUE(CheckModelSpec(spec).ok()) << CheckModelSpec(spec);
  spec.freeze.clear();
  ModelSpec ct{"ctnet", 1, 32, 2};
  ct.norm = kFrozenBatchNorm;
  EXPECT_NE(CheckModelSpec(ct).message().find("model norm 'frozen_batch' is not \"group\" (the only one of 'ctnet')"),
            std::string::npos)
      << CheckModelSpec(ct);
  spec.norm = "batch";
  EXPECT_NE(CheckModelSpec(spec).message().find("is not \"group\" or \"frozen_batch\""), std::string::npos)
      << CheckModelSpec(spec);
  EXPECT_EQ(ModelShapeMetadata(ModelSpec{"resnet18", 1, 64, 2}).count("norm"), 0u);
  spec.norm = kFrozenBatchNorm;
  EXPECT_EQ(ModelShapeMetadata(spec).at("norm"), "frozen_batch");
}

}  // namespace
}  // namespace fedrad

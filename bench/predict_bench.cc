// Local inference as a clinician meets it (fedrad-node predict's library
// call, node::Predict): DICOM decode, the site's pipeline, the model, the
// CSV. Batch throughput over 200 synthetic 512x512 CT files, with and
// without Grad-CAM heatmaps (PNG + DICOM Secondary Capture), and the latency
// of one image (model load, decode, forward, CSV). Data from `fedrad synth`
// in a temp folder; the model is ctnet at 64x64 with initial weights (the
// cost does not depend on the values).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>

#include "common/model_zoo.h"
#include "node/predict.h"
#include "node/saved_model.h"
#include "node/trainer.h"
#include "tools/synth.h"

namespace {

namespace fs = std::filesystem;

struct Setup {
  fs::path dir;
  std::string data;
  std::string one_file;
  std::string model;
  fedrad::node::PreprocessSettings settings;
};

const Setup& Get() {
  static const Setup setup = [] {
    Setup s;
    s.dir = fs::temp_directory_path() / "fedrad-bench-predict";
    s.data = (s.dir / "data").string();
    fedrad::tools::SynthOptions o;
    o.sites = 1;
    o.patients_per_site = 50;
    o.images_per_patient = 4;
    o.image_size = 512;
    o.out_dir = s.data;
    if (!fs::exists(s.data) && !fedrad::tools::WriteSyntheticCohort(o).ok()) std::abort();
    for (const auto& e : fs::recursive_directory_iterator(s.data)) {
      if (e.path().extension() == ".dcm" && (s.one_file.empty() || e.path().string() < s.one_file)) {
        s.one_file = e.path().string();
      }
    }
    s.settings.output_size = 64;
    const fedrad::ModelSpec spec{"ctnet", 1, 64, 2};
    absl::StatusOr<fedrad::ModelParameters> p = fedrad::InitialParameters(spec, 1);
    if (!p.ok()) std::abort();
    fedrad::SafetensorsMetadata m = fedrad::ModelShapeMetadata(spec);
    fedrad::node::SetPipelineMetadata(s.settings, &m);
    s.model = (s.dir / "model.safetensors").string();
    if (!fedrad::WriteSafetensorsFile(s.model, *p, m).ok()) std::abort();
    return s;
  }();
  return setup;
}

void Run(benchmark::State& state, const std::string& input, bool heatmaps) {
  const Setup& s = Get();
  fedrad::node::PredictOptions o;
  o.model_path = s.model;
  o.input = input;
  o.out_csv = (s.dir / "out.csv").string();
  o.preprocess = s.settings;
  if (heatmaps) {
    o.heatmap_dir = (s.dir / "heatmaps").string();
    o.dicom_overlays = true;
  }
  int64_t images = 0;
  for (auto _ : state) {
    absl::StatusOr<fedrad::node::PredictReport> r = fedrad::node::Predict(o);
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    images += r->images;
  }
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(images), benchmark::Counter::kIsRate);
}

void BM_PredictFolder(benchmark::State& state) { Run(state, Get().data, false); }
void BM_PredictFolderHeatmaps(benchmark::State& state) { Run(state, Get().data, true); }
void BM_PredictOneImage(benchmark::State& state) { Run(state, Get().one_file, false); }
void BM_PredictOneImageHeatmap(benchmark::State& state) { Run(state, Get().one_file, true); }

BENCHMARK(BM_PredictFolder)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PredictFolderHeatmaps)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PredictOneImage)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PredictOneImageHeatmap)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

// Decode + preprocess throughput of the node's DICOM loader: 512x512 int16 CT
// to 128x128 float (window 40/400, area resize), cache off, so every
// iteration decodes every file. Images are written with `fedrad synth` by
// bench/loader.sh (or by this binary into a temp folder if FEDRAD_BENCH_DATA
// is unset).
//
// BM_SegmentationSetLoad/0 and /1: what a segmentation node does at each
// round, LoadImageSet on a synthetic folder of 50 patients (6 slices of
// 256x256 each, their SEG and RT Structure Set), to 64x64, without a cache
// and with a warm one (images and label objects from their entries).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>

#include "node/dataset.h"
#include "node/image_loader.h"
#include "tools/synth.h"

namespace {

namespace fs = std::filesystem;

const std::vector<std::string>& Files() {
  static const std::vector<std::string> files = [] {
    std::string dir;
    if (const char* env = std::getenv("FEDRAD_BENCH_DATA")) {
      dir = env;
    } else {
      dir = (fs::temp_directory_path() / "fedrad-bench-loader").string();
      fedrad::tools::SynthOptions o;
      o.sites = 1;
      o.patients_per_site = 25;
      o.images_per_patient = 4;
      o.image_size = 512;
      o.out_dir = dir;
      if (!fs::exists(dir) && !fedrad::tools::WriteSyntheticCohort(o).ok()) std::abort();
    }
    std::vector<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      if (e.path().extension() == ".dcm") out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }();
  return files;
}

void BM_LoaderDecodePreprocess(benchmark::State& state) {
  fedrad::node::PreprocessSettings settings;
  settings.output_size = 128;
  fedrad::node::LoaderOptions options;
  options.threads = static_cast<int>(state.range(0));
  int64_t images = 0;
  for (auto _ : state) {
    fedrad::node::ImageLoader loader(Files(), settings, options);
    while (std::optional<fedrad::node::LoadedImage> image = loader.Next()) {
      if (!image->status.ok() || image->frames.size() != 1) state.SkipWithError("decode failed");
      benchmark::DoNotOptimize(image->frames[0].pixels.data());
      ++images;
    }
  }
  state.SetItemsProcessed(images);
  state.counters["files"] = static_cast<double>(Files().size());
}
BENCHMARK(BM_LoaderDecodePreprocess)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_SegmentationSetLoad(benchmark::State& state) {
  const std::string dir = (fs::temp_directory_path() / "fedrad-bench-segmentation").string();
  if (!fs::exists(dir)) {
    fedrad::tools::SynthOptions o;
    o.sites = 1;
    o.patients_per_site = 50;
    o.images_per_patient = 6;
    o.image_size = 256;
    o.task = "segmentation";
    o.rtstruct = true;
    o.out_dir = dir;
    if (!fedrad::tools::WriteSyntheticCohort(o).ok()) std::abort();
  }
  fedrad::node::DatasetSpec spec;
  spec.data_dir = (fs::path(dir) / "hospital-a").string();
  spec.task = fedrad::ModelTask::kSegmentation;
  spec.preprocess.output_size = 64;
  spec.preprocess.window = "explicit";
  if (state.range(0) == 1) {
    spec.loader.cache_dir = dir + "-cache";
    fedrad::node::LoadReport warm;
    if (!fedrad::node::LoadImageSet(spec, &warm).ok()) state.SkipWithError("load failed");
  }
  int64_t images = 0;
  for (auto _ : state) {
    fedrad::node::LoadReport report;
    absl::StatusOr<fedrad::node::ImageSet> set = fedrad::node::LoadImageSet(spec, &report);
    if (!set.ok() || report.masks.label_objects != 100) state.SkipWithError("load failed");
    images += set->count();
  }
  state.SetItemsProcessed(images);
}
BENCHMARK(BM_SegmentationSetLoad)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

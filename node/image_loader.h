#ifndef FEDRAD_NODE_IMAGE_LOADER_H_
#define FEDRAD_NODE_IMAGE_LOADER_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "node/preprocess.h"

namespace fedrad::node {

// What a file is, as far as the cohort report and the split need to know.
struct DicomFacts {
  std::string patient_id;
  std::string issuer_of_patient_id;
  std::string study_instance_uid;
  std::string sop_instance_uid;
  std::string modality;
  std::string transfer_syntax;  // name, e.g. "JPEG-LS Lossless"
  std::string photometric;
  int rows = 0;
  int columns = 0;
  // Where the pixels lie in patient space, as the DICOM strings
  // (ImagePositionPatient, ImageOrientationPatient, PixelSpacing); empty
  // when absent. RT Structure Sets are rasterised with them.
  std::string image_position;
  std::string image_orientation;
  std::string pixel_spacing;
  std::string series_instance_uid;
};

// One preprocessed frame: output_size * output_size floats.
struct PreparedFrame {
  int index = 0;
  std::vector<float> pixels;
};

struct LoadedImage {
  size_t item = 0;      // position in the list given to the loader
  absl::Status status;  // not OK: skipped, with the reason
  DicomFacts facts;
  std::vector<PreparedFrame> frames;
  bool from_cache = false;
};

struct LoaderOptions {
  int threads = 0;             // 0: one per core
  size_t queue_capacity = 64;  // decoded images waiting for the consumer
  // Folder for cached preprocessed tensors; empty disables the cache.
  std::string cache_dir;
};

// Decodes and preprocesses a list of files on worker threads and hands the
// results out through a bounded queue, so decoding runs ahead of the
// consumer by at most queue_capacity images. With a cache folder, each
// result is stored under (SHA-256 of the file's bytes, pipeline hash) and
// later passes read it back instead of decoding. Next() is called from one
// thread; results arrive in completion order, each tagged with its item.
class ImageLoader {
 public:
  ImageLoader(std::vector<std::string> paths, PreprocessSettings settings, LoaderOptions options);
  ~ImageLoader();  // stops and joins the workers
  ImageLoader(const ImageLoader&) = delete;
  ImageLoader& operator=(const ImageLoader&) = delete;

  // The next finished image; nullopt once every item was handed out.
  std::optional<LoadedImage> Next();

  // Decodes one file without threads or cache (inspect, tests, benchmarks).
  static LoadedImage Load(const std::string& path, const PreprocessSettings& settings);

 private:
  void Work();
  LoadedImage Prepare(size_t item);

  const std::vector<std::string> paths_;
  const PreprocessSettings settings_;
  const LoaderOptions options_;
  const std::string pipeline_sha256_;
  std::mutex mu_;
  std::condition_variable ready_;  // a result was queued
  std::condition_variable space_;  // the queue has room
  std::deque<LoadedImage> queue_;
  size_t next_item_ = 0;  // guarded by mu_
  size_t handed_out_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_IMAGE_LOADER_H_

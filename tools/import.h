#ifndef FEDRAD_TOOLS_IMPORT_H_
#define FEDRAD_TOOLS_IMPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedrad::tools {

// A labelled set of 8-bit grayscale images held in memory.
struct LabelledImages {
  int rows = 0;
  int columns = 0;
  std::vector<uint8_t> pixels;  // count * rows * columns
  std::vector<int> labels;
  std::vector<std::string> class_names;  // empty when classes are numbered

  size_t count() const { return labels.size(); }
};

// Reads an IDX image file (magic 0x00000803) and its IDX label file (magic
// 0x00000801), plain or gzip-compressed, e.g. Fashion-MNIST as shipped in
// Debian's dataset-fashion-mnist. Every header field is checked.
absl::StatusOr<LabelledImages> ReadIdx(const std::string& images_path, const std::string& labels_path,
                                       size_t limit = 0);

// Reads DIR/<class>/*.png (any PNG the decoder can read, converted to 8-bit
// gray, all of one size). Classes are the folder names in sorted order.
absl::StatusOr<LabelledImages> ReadPngFolders(const std::string& dir, size_t limit = 0);

// Writes each image as a DICOM Secondary Capture file <out>/<nnnnn>/<i>.dcm
// (one patient per image, deterministic UIDs from `uid_seed`) and
// <out>/labels.csv ("path,label"). Class names, if any, go to
// <out>/classes.txt, one per line in class order.
absl::Status WriteAsDicom(const LabelledImages& images, const std::string& out_dir, const std::string& uid_seed);

// A segmentation set: images in `images_dir` (PNG or JPEG, any size,
// converted to 8-bit gray) and, in `masks_dir`, each image's mask under its
// stem with ".png" (lossless: a JPEG's artefacts would be classes): 8-bit,
// one channel (or equal colour channels), the image's size, 0/255 for one
// class, else class indices. Each image becomes a Secondary Capture
// <out>/<nnnnn>/<i>.dcm (one patient per image, UIDs from `uid_seed`), its
// mask class indices beside it (<i>.mask.png), and <out>/labels.csv is
// headed "path,mask": the node's mask table (node/dataset.h LoadMaskTable).
// An image without a mask, a mask of another size or with other values is
// an error naming both files; nothing is written until every pair is read.
struct SegmentationImport {
  int images = 0;
  int with_foreground = 0;  // images whose mask has a class above 0
  int classes = 0;          // the largest class index seen, plus one
};
absl::StatusOr<SegmentationImport> ImportSegmentation(const std::string& images_dir, const std::string& masks_dir,
                                                      const std::string& out_dir, const std::string& uid_seed,
                                                      size_t limit = 0);

}  // namespace fedrad::tools

#endif  // FEDRAD_TOOLS_IMPORT_H_

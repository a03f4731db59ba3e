#include "tools/import.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <zlib.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "crypto/sha256.h"
#include "tools/synth.h"

namespace fedrad::tools {
namespace {

namespace fs = std::filesystem;

// Reads a whole file, gunzipping it if it is gzip-compressed.
absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) {
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (size_t{4} << 30)) {
      gzclose(f);
      return absl::ResourceExhaustedError(absl::StrCat("'", path, "' is larger than 4 GiB"));
    }
  }
  const bool failed = n < 0;
  gzclose(f);
  if (failed) return absl::DataLossError(absl::StrCat("'", path, "': corrupt gzip data"));
  return out;
}

uint32_t BigEndian32(const std::string& s, size_t at) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(s[at])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(s[at + 3]));
}

// File names of the regular files in `dir` whose extension (lower case) is
// one of `extensions`, sorted.
absl::StatusOr<std::vector<std::string>> FilesWithExtension(const std::string& dir,
                                                            const std::vector<std::string>& extensions) {
  std::error_code ec;
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
    if (e.is_regular_file() && std::find(extensions.begin(), extensions.end(), ext) != extensions.end()) {
      out.push_back(e.path().filename().string());
    }
  }
  if (ec) return absl::NotFoundError(absl::StrCat("cannot list '", dir, "': ", ec.message()));
  std::sort(out.begin(), out.end());
  return out;
}

// One 8-bit grayscale image as a DICOM Secondary Capture of its own patient,
// study and series (number `index` of the import): every Type 1 and 2
// attribute of the SC Image IOD, the Type 2 ones empty where an import
// knows nothing (no date, so re-importing gives the same bytes).
absl::Status WriteImportedImage(const uint8_t* pixels, int rows, int columns, size_t index, const std::string& uid_seed,
                                const std::string& path) {
  const std::string patient = absl::StrFormat("IMG%06d", index);
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  OFCondition c = ds->putAndInsertString(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
  auto put = [&](const DcmTagKey& tag, const std::string& v) {
    if (c.good()) c = ds->putAndInsertString(tag, v.c_str());
  };
  put(DCM_SOPInstanceUID, crypto::UidFromKey(absl::StrCat(uid_seed, "/sop/", index)));
  put(DCM_StudyInstanceUID, crypto::UidFromKey(absl::StrCat(uid_seed, "/study/", index)));
  put(DCM_SeriesInstanceUID, crypto::UidFromKey(absl::StrCat(uid_seed, "/series/", index)));
  put(DCM_Modality, "OT");
  put(DCM_ConversionType, "WSD");
  put(DCM_PatientID, patient);
  put(DCM_PatientName, "Imported^" + patient);
  for (const DcmTagKey& tag :
       {DCM_PatientBirthDate, DCM_PatientSex, DCM_StudyDate, DCM_StudyTime, DCM_ReferringPhysicianName,
        DCM_AccessionNumber, DCM_Laterality, DCM_PatientOrientation}) {
    put(tag, "");
  }
  put(DCM_StudyID, "1");
  put(DCM_SeriesNumber, "1");
  put(DCM_PhotometricInterpretation, "MONOCHROME2");
  put(DCM_InstanceNumber, std::to_string(index + 1));
  if (c.good()) c = ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
  if (c.good()) c = ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(rows));
  if (c.good()) c = ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(columns));
  if (c.good()) c = ds->putAndInsertUint16(DCM_BitsAllocated, 8);
  if (c.good()) c = ds->putAndInsertUint16(DCM_BitsStored, 8);
  if (c.good()) c = ds->putAndInsertUint16(DCM_HighBit, 7);
  if (c.good()) c = ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
  if (c.good()) c = ds->putAndInsertUint8Array(DCM_PixelData, pixels, static_cast<unsigned long>(rows) * columns);
  if (c.good()) c = file.saveFile(path.c_str(), EXS_LittleEndianExplicit);
  if (c.bad()) return absl::InternalError(absl::StrCat("writing '", path, "': ", c.text()));
  return absl::OkStatus();
}

// Where import's image `index` goes: <sub>/<index>, with a new sub-folder
// every 1,000 images (created here).
absl::StatusOr<std::string> ImportedStem(const std::string& out_dir, size_t index) {
  const std::string sub = absl::StrFormat("%05d", index / 1000);
  if (index % 1000 == 0) {
    if (absl::Status s = EnsureDirectory(absl::StrCat(out_dir, "/", sub)); !s.ok()) return s;
  }
  return absl::StrFormat("%s/%06d", sub, index);
}

// A mask PNG as class indices: 8-bit, one channel (or equal colour
// channels), 0/255 meaning one class.
absl::StatusOr<cv::Mat> ReadMaskPng(const std::string& path, const std::string& image_path, int rows, int columns) {
  cv::Mat raw = cv::imread(path, cv::IMREAD_UNCHANGED);
  if (raw.empty()) return absl::InvalidArgumentError(absl::StrCat("mask '", path, "': not a readable PNG"));
  if (raw.depth() != CV_8U) {
    return absl::InvalidArgumentError(absl::StrCat("mask '", path, "': not 8-bit (class indices or 0/255)"));
  }
  cv::Mat mask;
  if (raw.channels() == 1) {
    mask = raw;
  } else {
    std::vector<cv::Mat> channels;
    cv::split(raw, channels);
    // An alpha channel is not a class; the colour channels must agree.
    for (int k = 1; k < std::min(3, raw.channels()); ++k) {
      if (cv::countNonZero(channels[k] != channels[0]) != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("mask '", path, "': its colour channels differ (a mask holds one class index per pixel)"));
      }
    }
    mask = channels[0];
  }
  if (mask.rows != rows || mask.cols != columns) {
    return absl::InvalidArgumentError(absl::StrCat("mask '", path, "' is ", mask.rows, "x", mask.cols, "; its image '",
                                                   image_path, "' is ", rows, "x", columns));
  }
  double low = 0, high = 0;
  cv::minMaxLoc(mask, &low, &high);
  const bool binary = high == 255 && cv::countNonZero((mask != 0) & (mask != 255)) == 0;
  if (binary) return cv::Mat(mask / 255);
  if (high == 255) {
    return absl::InvalidArgumentError(
        absl::StrCat("mask '", path, "': values other than 0 and 255 beside 255 (neither 0/255 nor class indices)"));
  }
  return mask;
}

}  // namespace

absl::StatusOr<SegmentationImport> ImportSegmentation(const std::string& images_dir, const std::string& masks_dir,
                                                      const std::string& out_dir, const std::string& uid_seed,
                                                      size_t limit) {
  absl::StatusOr<std::vector<std::string>> images = FilesWithExtension(images_dir, {".png", ".jpg", ".jpeg"});
  if (!images.ok()) return images.status();
  if (images->empty()) return absl::InvalidArgumentError(absl::StrCat("no PNG or JPEG images in '", images_dir, "'"));
  if (limit > 0 && images->size() > limit) images->resize(limit);
  // An image and its mask, read and checked.
  auto read_pair = [&](const std::string& name) -> absl::StatusOr<std::pair<cv::Mat, cv::Mat>> {
    const std::string image_path = (fs::path(images_dir) / name).string();
    const std::string mask_path = (fs::path(masks_dir) / fs::path(name).stem()).string() + ".png";
    cv::Mat image = cv::imread(image_path, cv::IMREAD_GRAYSCALE);
    if (image.empty()) return absl::InvalidArgumentError(absl::StrCat("'", image_path, "': not a readable image"));
    if (image.rows > 65535 || image.cols > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("'", image_path, "' is larger than DICOM's 65535 rows/columns"));
    }
    if (!fs::is_regular_file(mask_path)) {
      return absl::InvalidArgumentError(absl::StrCat("image '", image_path, "' has no mask '", mask_path, "'"));
    }
    absl::StatusOr<cv::Mat> mask = ReadMaskPng(mask_path, image_path, image.rows, image.cols);
    if (!mask.ok()) return mask.status();
    return std::make_pair(image.isContinuous() ? image : image.clone(), mask->isContinuous() ? *mask : mask->clone());
  };
  // Every pair is checked before anything is written, and read again to be
  // written, so memory holds one pair at a time.
  SegmentationImport out;
  for (const std::string& name : *images) {
    absl::StatusOr<std::pair<cv::Mat, cv::Mat>> pair = read_pair(name);
    if (!pair.ok()) return pair.status();
    double high = 0;
    cv::minMaxLoc(pair->second, nullptr, &high);
    out.classes = std::max(out.classes, static_cast<int>(high) + 1);
    out.with_foreground += high > 0;
  }
  out.classes = std::max(out.classes, 2);
  if (absl::Status s = EnsureDirectory(out_dir); !s.ok()) return s;
  std::string table = "path,mask\n";
  for (size_t i = 0; i < images->size(); ++i) {
    absl::StatusOr<std::pair<cv::Mat, cv::Mat>> pair = read_pair((*images)[i]);
    if (!pair.ok()) return pair.status();  // changed since it was checked
    const auto& [pixels, mask] = *pair;
    absl::StatusOr<std::string> stem = ImportedStem(out_dir, i);
    if (!stem.ok()) return stem.status();
    absl::Status s = WriteImportedImage(pixels.data, pixels.rows, pixels.cols, i, uid_seed,
                                        absl::StrCat(out_dir, "/", *stem, ".dcm"));
    if (!s.ok()) return s;
    std::vector<uint8_t> png;
    if (!cv::imencode(".png", mask, png)) {
      return absl::InternalError(absl::StrCat("cannot encode the mask of '", (*images)[i], "'"));
    }
    s = WriteFileAtomically(absl::StrCat(out_dir, "/", *stem, ".mask.png"),
                            {std::string_view(reinterpret_cast<const char*>(png.data()), png.size())}, 0644,
                            /*durable=*/false);
    if (!s.ok()) return s;
    absl::StrAppend(&table, *stem, ".dcm,", *stem, ".mask.png\n");
    ++out.images;
  }
  if (absl::Status s = WriteFileAtomically(out_dir + "/labels.csv", table); !s.ok()) return s;
  return out;
}

absl::StatusOr<LabelledImages> ReadIdx(const std::string& images_path, const std::string& labels_path, size_t limit) {
  absl::StatusOr<std::string> images = ReadMaybeGzip(images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<std::string> labels = ReadMaybeGzip(labels_path);
  if (!labels.ok()) return labels.status();
  if (images->size() < 16 || BigEndian32(*images, 0) != 0x803) {
    return absl::InvalidArgumentError(absl::StrCat("'", images_path, "': not an IDX image file (magic 0x00000803)"));
  }
  if (labels->size() < 8 || BigEndian32(*labels, 0) != 0x801) {
    return absl::InvalidArgumentError(absl::StrCat("'", labels_path, "': not an IDX label file (magic 0x00000801)"));
  }
  const uint32_t n = BigEndian32(*images, 4), rows = BigEndian32(*images, 8), cols = BigEndian32(*images, 12);
  if (rows == 0 || cols == 0 || rows > 4096 || cols > 4096 || images->size() != 16 + uint64_t{n} * rows * cols) {
    return absl::InvalidArgumentError(absl::StrCat("'", images_path, "': header says ", n, " images of ", rows, "x",
                                                   cols, " but the file has ", images->size(), " bytes"));
  }
  if (BigEndian32(*labels, 4) != n || labels->size() != 8 + uint64_t{n}) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", labels_path, "': ", BigEndian32(*labels, 4), " labels for ", n, " images"));
  }
  LabelledImages out;
  out.rows = static_cast<int>(rows);
  out.columns = static_cast<int>(cols);
  const size_t count = limit > 0 ? std::min<size_t>(limit, n) : n;
  const size_t per = size_t{rows} * cols;
  out.pixels.assign(images->begin() + 16, images->begin() + 16 + count * per);
  for (size_t i = 0; i < count; ++i) out.labels.push_back(static_cast<uint8_t>((*labels)[8 + i]));
  return out;
}

absl::StatusOr<LabelledImages> ReadPngFolders(const std::string& dir, size_t limit) {
  std::error_code ec;
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  }
  if (ec) return absl::NotFoundError(absl::StrCat("cannot list '", dir, "'"));
  std::sort(classes.begin(), classes.end());
  if (classes.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat("'", dir, "' needs one sub-folder per class (at least two)"));
  }
  LabelledImages out;
  out.class_names = classes;
  for (size_t c = 0; c < classes.size(); ++c) {
    absl::StatusOr<std::vector<std::string>> files =
        FilesWithExtension((fs::path(dir) / classes[c]).string(), {".png"});
    if (!files.ok()) return files.status();
    for (const std::string& name : *files) {
      const std::string f = (fs::path(dir) / classes[c] / name).string();
      if (limit > 0 && out.count() >= limit) break;
      cv::Mat img = cv::imread(f, cv::IMREAD_GRAYSCALE);
      if (img.empty()) return absl::InvalidArgumentError(absl::StrCat("'", f, "': not a readable PNG"));
      if (out.rows == 0) {
        out.rows = img.rows;
        out.columns = img.cols;
      }
      if (img.rows != out.rows || img.cols != out.columns) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", f, "' is ", img.rows, "x", img.cols, "; the others are ", out.rows, "x", out.columns));
      }
      out.pixels.insert(out.pixels.end(), img.datastart, img.dataend);
      out.labels.push_back(static_cast<int>(c));
    }
  }
  if (out.count() == 0) return absl::InvalidArgumentError(absl::StrCat("no PNG files under '", dir, "'"));
  return out;
}

absl::Status WriteAsDicom(const LabelledImages& images, const std::string& out_dir, const std::string& uid_seed) {
  absl::Status s = EnsureDirectory(out_dir);
  if (!s.ok()) return s;
  std::string labels = "path,label\n";
  const size_t per = static_cast<size_t>(images.rows) * images.columns;
  for (size_t i = 0; i < images.count(); ++i) {
    absl::StatusOr<std::string> stem = ImportedStem(out_dir, i);
    if (!stem.ok()) return stem.status();
    const std::string rel = *stem + ".dcm";
    s = WriteImportedImage(images.pixels.data() + i * per, images.rows, images.columns, i, uid_seed,
                           absl::StrCat(out_dir, "/", rel));
    if (!s.ok()) return s;
    absl::StrAppend(&labels, rel, ",", images.labels[i], "\n");
  }
  s = WriteFileAtomically(out_dir + "/labels.csv", labels);
  if (s.ok() && !images.class_names.empty()) {
    std::string names;
    for (const std::string& n : images.class_names) absl::StrAppend(&names, n, "\n");
    s = WriteFileAtomically(out_dir + "/classes.txt", names);
  }
  return s;
}

}  // namespace fedrad::tools

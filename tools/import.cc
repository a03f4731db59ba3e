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

}  // namespace

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
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(fs::path(dir) / classes[c])) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (e.is_regular_file() && ext == ".png") files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    for (const std::string& f : files) {
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
    const std::string sub = absl::StrFormat("%05d", i / 1000);
    if (i % 1000 == 0) {
      s = EnsureDirectory(absl::StrCat(out_dir, "/", sub));
      if (!s.ok()) return s;
    }
    const std::string rel = absl::StrFormat("%s/%06d.dcm", sub, i);
    const std::string patient = absl::StrFormat("IMG%06d", i);
    DcmFileFormat file;
    DcmDataset* ds = file.getDataset();
    OFCondition c = ds->putAndInsertString(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
    auto put = [&](const DcmTagKey& tag, const std::string& v) {
      if (c.good()) c = ds->putAndInsertString(tag, v.c_str());
    };
    put(DCM_SOPInstanceUID, crypto::UidFromKey(absl::StrCat(uid_seed, "/sop/", i)));
    put(DCM_StudyInstanceUID, crypto::UidFromKey(absl::StrCat(uid_seed, "/study/", i)));
    put(DCM_SeriesInstanceUID, crypto::UidFromKey(absl::StrCat(uid_seed, "/series/", i)));
    put(DCM_Modality, "OT");
    put(DCM_ConversionType, "WSD");
    put(DCM_PatientID, patient);
    put(DCM_PatientName, "Imported^" + patient);
    put(DCM_PhotometricInterpretation, "MONOCHROME2");
    put(DCM_InstanceNumber, std::to_string(i + 1));
    if (c.good()) c = ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
    if (c.good()) c = ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(images.rows));
    if (c.good()) c = ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(images.columns));
    if (c.good()) c = ds->putAndInsertUint16(DCM_BitsAllocated, 8);
    if (c.good()) c = ds->putAndInsertUint16(DCM_BitsStored, 8);
    if (c.good()) c = ds->putAndInsertUint16(DCM_HighBit, 7);
    if (c.good()) c = ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
    if (c.good()) c = ds->putAndInsertUint8Array(DCM_PixelData, images.pixels.data() + i * per, per);
    const std::string path = absl::StrCat(out_dir, "/", rel);
    if (c.good()) c = file.saveFile(path.c_str(), EXS_LittleEndianExplicit);
    if (c.bad()) return absl::InternalError(absl::StrCat("writing '", path, "': ", c.text()));
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

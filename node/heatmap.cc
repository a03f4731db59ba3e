#include "node/heatmap.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "crypto/sha256.h"

namespace fedrad::node {

RgbImage DrawHeatmap(const std::vector<float>& windowed, int rows, int columns, const std::vector<float>& heatmap,
                     const PreprocessSettings& settings, const std::string& caption, int min_side, int max_side) {
  const int longest = std::max(rows, columns);
  const double shrink = longest < min_side ? static_cast<double>(min_side) / longest
                                           : std::min(1.0, static_cast<double>(max_side) / longest);
  const int out_rows = std::max(1, static_cast<int>(std::lround(rows * shrink)));
  const int out_columns = std::max(1, static_cast<int>(std::lround(columns * shrink)));
  cv::Mat gray;
  cv::resize(cv::Mat(rows, columns, CV_32F, const_cast<float*>(windowed.data())), gray, cv::Size(out_columns, out_rows),
             0, 0, shrink > 1 ? cv::INTER_LINEAR : cv::INTER_AREA);

  // Output pixel centre (x + 0.5) / shrink in the frame lands at
  // frame * scale + offset in the model's input; warpAffine with
  // WARP_INVERSE_MAP takes that output -> input map. Outside the input
  // ("crop" cuts the edges off) the map is 0.
  const InputPlacement p = PlaceInput(rows, columns, settings);
  const double k = p.scale / shrink;
  const cv::Matx23d to_input(k, 0, 0.5 * k - 0.5 + p.offset_x, 0, k, 0.5 * k - 0.5 + p.offset_y);
  const int size = settings.output_size;
  cv::Mat strength;
  cv::warpAffine(cv::Mat(size, size, CV_32F, const_cast<float*>(heatmap.data())), strength, to_input,
                 cv::Size(out_columns, out_rows), cv::INTER_LINEAR | cv::WARP_INVERSE_MAP, cv::BORDER_CONSTANT, 0);

  cv::Mat strength8, colour;
  strength.convertTo(strength8, CV_8U, 255.0);
  cv::applyColorMap(strength8, colour, cv::COLORMAP_JET);  // BGR
  cv::Mat out(out_rows, out_columns, CV_8UC3);
  for (int y = 0; y < out_rows; ++y) {
    const float* g = gray.ptr<float>(y);
    const float* s = strength.ptr<float>(y);
    const cv::Vec3b* c = colour.ptr<cv::Vec3b>(y);
    cv::Vec3b* o = out.ptr<cv::Vec3b>(y);
    for (int x = 0; x < out_columns; ++x) {
      const float a = 0.6f * std::clamp(s[x], 0.0f, 1.0f);
      const float v = 255.0f * std::clamp(g[x], 0.0f, 1.0f) * (1 - a);
      for (int ch = 0; ch < 3; ++ch) o[x][2 - ch] = cv::saturate_cast<uint8_t>(v + a * c[x][ch]);  // to RGB
    }
  }
  if (!caption.empty()) {
    const double font = std::max(0.35, out_columns / 900.0);
    const int thickness = std::max(1, static_cast<int>(font * 2));
    int baseline = 0;
    const cv::Size text = cv::getTextSize(caption, cv::FONT_HERSHEY_SIMPLEX, font, thickness, &baseline);
    const cv::Point at(4, 4 + text.height);
    cv::putText(out, caption, at, cv::FONT_HERSHEY_SIMPLEX, font, cv::Scalar(0, 0, 0), thickness + 2, cv::LINE_AA);
    cv::putText(out, caption, at, cv::FONT_HERSHEY_SIMPLEX, font, cv::Scalar(255, 255, 255), thickness, cv::LINE_AA);
  }
  RgbImage image;
  image.rows = out_rows;
  image.columns = out_columns;
  image.pixels.assign(out.data, out.data + out.total() * 3);
  return image;
}

absl::Status WritePng(const RgbImage& image, const std::string& path) {
  cv::Mat rgb(image.rows, image.columns, CV_8UC3, const_cast<uint8_t*>(image.pixels.data())), bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> png;
  if (!cv::imencode(".png", bgr, png)) return absl::InternalError(absl::StrCat("cannot encode '", path, "'"));
  return WriteFileAtomically(path, {std::string_view(reinterpret_cast<const char*>(png.data()), png.size())}, 0644,
                             /*durable=*/false);
}

absl::Status WriteSecondaryCapture(const RgbImage& image, const SecondaryCapture& c, const std::string& out_path) {
  // Only the header: elements over 4 KiB (the pixels) stay on disk.
  DcmFileFormat source;
  OFCondition read = source.loadFile(c.source_path.c_str(), EXS_Unknown, EGL_noChange, 4096);
  if (read.bad()) {
    return absl::InvalidArgumentError(absl::StrCat("'", c.source_path, "': ", read.text()));
  }
  DcmDataset* in = source.getDataset();
  auto get = [in](const DcmTagKey& tag) {
    OFString value;
    if (in->findAndGetOFStringArray(tag, value).bad()) return std::string();
    return std::string(value.c_str());
  };
  const std::string source_uid = get(DCM_SOPInstanceUID);
  const std::string source_class = get(DCM_SOPClassUID);
  if (source_uid.empty() || source_class.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", c.source_path, "' has no SOP Instance/Class UID to refer to"));
  }
  std::string study_uid = get(DCM_StudyInstanceUID);
  // A source without a study (not valid DICOM, but seen) gets one of its own.
  if (study_uid.empty()) study_uid = crypto::UidFromKey(absl::StrCat("fedrad/study-of/", source_uid));

  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  for (const DcmTagKey& tag : {DCM_SpecificCharacterSet, DCM_PatientName, DCM_PatientID, DCM_IssuerOfPatientID,
                               DCM_PatientBirthDate, DCM_PatientSex, DCM_StudyDate, DCM_StudyTime, DCM_StudyID,
                               DCM_AccessionNumber, DCM_ReferringPhysicianName, DCM_StudyDescription}) {
    const std::string value = get(tag);
    if (!value.empty()) ds->putAndInsertString(tag, value.c_str());
  }
  const absl::Time now = absl::Now();
  const std::string date = absl::FormatTime("%Y%m%d", now, absl::LocalTimeZone());
  const std::string time = absl::FormatTime("%H%M%S", now, absl::LocalTimeZone());
  auto put = [ds](const DcmTagKey& tag, const std::string& value) { ds->putAndInsertString(tag, value.c_str()); };
  put(DCM_StudyInstanceUID, study_uid);
  put(DCM_SeriesInstanceUID,
      crypto::UidFromKey(absl::StrCat("fedrad/gradcam-series/", c.model_sha256, "/", study_uid)));
  put(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
  put(DCM_SOPInstanceUID,
      crypto::UidFromKey(absl::StrCat("fedrad/gradcam/", c.model_sha256, "/", source_uid, "/", c.frame)));
  put(DCM_Modality, "OT");
  put(DCM_ConversionType, "WSD");
  put(DCM_Manufacturer, "fedrad");
  put(DCM_SeriesNumber, "9000");
  put(DCM_SeriesDescription, absl::StrCat("fedrad heatmaps, model ", c.model_sha256.substr(0, 12)));
  put(DCM_InstanceNumber, std::to_string(c.instance_number));
  put(DCM_ImageType, "DERIVED\\SECONDARY");
  put(DCM_DerivationDescription, c.description.substr(0, 1024));
  put(DCM_ContentDate, date);
  put(DCM_ContentTime, time);
  put(DCM_DateOfSecondaryCapture, date);
  put(DCM_TimeOfSecondaryCapture, time);
  put(DCM_BurnedInAnnotation, "NO");  // the caption names a class, no person
  put(DCM_PhotometricInterpretation, "RGB");
  ds->putAndInsertUint16(DCM_SamplesPerPixel, 3);
  ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
  ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(image.rows));
  ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(image.columns));
  ds->putAndInsertUint16(DCM_BitsAllocated, 8);
  ds->putAndInsertUint16(DCM_BitsStored, 8);
  ds->putAndInsertUint16(DCM_HighBit, 7);
  ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
  ds->putAndInsertUint8Array(DCM_PixelData, image.pixels.data(), image.pixels.size());
  const bool multi_frame = !get(DCM_NumberOfFrames).empty();
  for (const DcmTagKey& sequence : {DCM_SourceImageSequence, DCM_ReferencedImageSequence}) {
    DcmItem* item = nullptr;
    if (ds->findOrCreateSequenceItem(sequence, item, -2).bad() || item == nullptr) {
      return absl::InternalError("cannot build the source reference");
    }
    item->putAndInsertString(DCM_ReferencedSOPClassUID, source_class.c_str());
    item->putAndInsertString(DCM_ReferencedSOPInstanceUID, source_uid.c_str());
    if (multi_frame) item->putAndInsertString(DCM_ReferencedFrameNumber, std::to_string(c.frame + 1).c_str());
  }
  return SaveDicomFile(file, out_path);
}

}  // namespace fedrad::node

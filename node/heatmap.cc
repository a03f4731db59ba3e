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

namespace {

// The frame scaled so that its longest side is within [min_side, max_side].
struct Canvas {
  double shrink = 1;
  int rows = 0, columns = 0;
  cv::Mat gray;  // CV_32F in [0, 1]
};
Canvas ScaledFrame(const std::vector<float>& windowed, int rows, int columns, int min_side, int max_side) {
  Canvas c;
  const int longest = std::max(rows, columns);
  c.shrink = longest < min_side ? static_cast<double>(min_side) / longest
                                : std::min(1.0, static_cast<double>(max_side) / longest);
  c.rows = std::max(1, static_cast<int>(std::lround(rows * c.shrink)));
  c.columns = std::max(1, static_cast<int>(std::lround(columns * c.shrink)));
  cv::resize(cv::Mat(rows, columns, CV_32F, const_cast<float*>(windowed.data())), c.gray, cv::Size(c.columns, c.rows),
             0, 0, c.shrink > 1 ? cv::INTER_LINEAR : cv::INTER_AREA);
  return c;
}

void Caption(cv::Mat& out, const std::string& caption) {
  if (caption.empty()) return;
  const double font = std::max(0.35, out.cols / 900.0);
  const int thickness = std::max(1, static_cast<int>(font * 2));
  int baseline = 0;
  const cv::Size text = cv::getTextSize(caption, cv::FONT_HERSHEY_SIMPLEX, font, thickness, &baseline);
  const cv::Point at(4, 4 + text.height);
  cv::putText(out, caption, at, cv::FONT_HERSHEY_SIMPLEX, font, cv::Scalar(0, 0, 0), thickness + 2, cv::LINE_AA);
  cv::putText(out, caption, at, cv::FONT_HERSHEY_SIMPLEX, font, cv::Scalar(255, 255, 255), thickness, cv::LINE_AA);
}

RgbImage ToRgb(const cv::Mat& bgr_or_rgb) {
  RgbImage image;
  image.rows = bgr_or_rgb.rows;
  image.columns = bgr_or_rgb.cols;
  image.pixels.assign(bgr_or_rgb.data, bgr_or_rgb.data + bgr_or_rgb.total() * 3);
  return image;
}

}  // namespace

RgbImage DrawHeatmap(const std::vector<float>& windowed, int rows, int columns, const std::vector<float>& heatmap,
                     const PreprocessSettings& settings, const std::string& caption, int min_side, int max_side) {
  const Canvas canvas = ScaledFrame(windowed, rows, columns, min_side, max_side);
  const double shrink = canvas.shrink;
  const int out_rows = canvas.rows, out_columns = canvas.columns;
  const cv::Mat& gray = canvas.gray;

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
  // The colour bar: the map's scale, strongest at the top, on the right edge.
  const int bar_width = std::max(6, out_columns / 48), bar_height = std::max(8, out_rows / 2);
  const int bar_x = out_columns - bar_width - 4, bar_y = (out_rows - bar_height) / 2;
  if (out_columns >= 128) {  // a figure too small for a legible bar gets none
    cv::Mat ramp(bar_height, 1, CV_8U), ramp_colour;
    for (int y = 0; y < bar_height; ++y)
      ramp.at<uint8_t>(y) = cv::saturate_cast<uint8_t>(255.0 * (bar_height - 1 - y) / (bar_height - 1));
    cv::applyColorMap(ramp, ramp_colour, cv::COLORMAP_JET);
    cv::cvtColor(ramp_colour, ramp_colour, cv::COLOR_BGR2RGB);
    cv::Mat bar;
    cv::resize(ramp_colour, bar, cv::Size(bar_width, bar_height), 0, 0, cv::INTER_NEAREST);
    bar.copyTo(out(cv::Rect(bar_x, bar_y, bar_width, bar_height)));
    cv::rectangle(out, cv::Rect(bar_x, bar_y, bar_width, bar_height), cv::Scalar(255, 255, 255), 1);
    const double font = std::max(0.3, out_columns / 1400.0);
    for (const auto& [text, y] : {std::pair<const char*, int>{"high", bar_y - 4}, {"low", bar_y + bar_height + 14}}) {
      int baseline = 0;
      const cv::Size size = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, font, 1, &baseline);
      cv::putText(out, text, cv::Point(std::max(0, bar_x + bar_width - size.width), y), cv::FONT_HERSHEY_SIMPLEX, font,
                  cv::Scalar(255, 255, 255), 1, cv::LINE_AA);
    }
  }
  Caption(out, caption);
  return ToRgb(out);
}

std::vector<uint8_t> MaskToFrame(const std::vector<uint8_t>& input_mask, int rows, int columns,
                                 const PreprocessSettings& settings) {
  // As DrawHeatmap's map, with no scaling of the frame: frame pixel centre
  // x + 0.5 lands at x * scale + offset (+ the half pixel) in the input.
  const InputPlacement p = PlaceInput(rows, columns, settings);
  const double k = p.scale;
  const cv::Matx23d to_input(k, 0, 0.5 * k - 0.5 + p.offset_x, 0, k, 0.5 * k - 0.5 + p.offset_y);
  const int size = settings.output_size;
  cv::Mat frame;
  cv::warpAffine(cv::Mat(size, size, CV_8U, const_cast<uint8_t*>(input_mask.data())), frame, to_input,
                 cv::Size(columns, rows), cv::INTER_NEAREST | cv::WARP_INVERSE_MAP, cv::BORDER_CONSTANT, 0);
  return std::vector<uint8_t>(frame.data, frame.data + frame.total());
}

RgbImage DrawMaskContours(const std::vector<float>& windowed, int rows, int columns, const std::vector<uint8_t>& mask,
                          const std::string& caption, int min_side, int max_side) {
  const Canvas canvas = ScaledFrame(windowed, rows, columns, min_side, max_side);
  cv::Mat gray8, out;
  canvas.gray.convertTo(gray8, CV_8U, 255.0);
  cv::cvtColor(gray8, out, cv::COLOR_GRAY2RGB);
  cv::Mat scaled;
  cv::resize(cv::Mat(rows, columns, CV_8U, const_cast<uint8_t*>(mask.data())), scaled,
             cv::Size(canvas.columns, canvas.rows), 0, 0, cv::INTER_NEAREST);
  // Class 1 red, 2 green, 3 yellow, 4 cyan, then around again (RGB).
  static const cv::Scalar kColours[] = {{255, 40, 40}, {40, 220, 40}, {255, 220, 0}, {0, 220, 255}};
  double top = 0;
  cv::minMaxLoc(scaled, nullptr, &top);
  const int thickness = std::max(1, canvas.columns / 256);
  for (int c = 1; c <= static_cast<int>(top); ++c) {
    std::vector<std::vector<cv::Point>> outline;
    cv::findContours(scaled == c, outline, cv::RETR_LIST, cv::CHAIN_APPROX_SIMPLE);
    cv::drawContours(out, outline, -1, kColours[(c - 1) % 4], thickness, cv::LINE_AA);
  }
  Caption(out, caption);
  return ToRgb(out);
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
  // Copied when the source has them; the Type 2 ones (present, possibly
  // empty) always, as PACS and RIS match on AccessionNumber and the rest.
  for (const DcmTagKey& tag : {DCM_SpecificCharacterSet, DCM_IssuerOfPatientID, DCM_StudyDescription}) {
    const std::string value = get(tag);
    if (!value.empty()) ds->putAndInsertString(tag, value.c_str());
  }
  for (const DcmTagKey& tag : {DCM_PatientName, DCM_PatientID, DCM_PatientBirthDate, DCM_PatientSex, DCM_StudyDate,
                               DCM_StudyTime, DCM_StudyID, DCM_AccessionNumber, DCM_ReferringPhysicianName}) {
    ds->putAndInsertString(tag, get(tag).c_str());
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
  put(DCM_PatientOrientation, "");    // Type 2: a heatmap has no patient axes
  put(DCM_Laterality, get(DCM_Laterality));
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
  return SaveDicomFile(file, out_path, /*compress=*/true);
}

}  // namespace fedrad::node

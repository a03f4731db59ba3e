#include "node/dicom_rtstruct.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmrt/drtstrct.h>

#include <cmath>
#include <memory>
#include <opencv2/imgproc.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "node/dicom_reader.h"

namespace fedrad::node {
namespace {

absl::Status Bad(const std::string& path, const std::string& why) {
  return DicomFileError(DicomProblem::kMalformed, path, why);
}

bool Numbers(const std::string& text, size_t count, double* out) {
  const std::vector<std::string> parts = absl::StrSplit(text, '\\');
  if (parts.size() != count) return false;
  for (size_t i = 0; i < count; ++i) {
    if (!absl::SimpleAtod(parts[i], &out[i]) || !std::isfinite(out[i])) return false;
  }
  return true;
}

double Dot(const std::array<double, 3>& a, const std::array<double, 3>& b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

}  // namespace

absl::StatusOr<RtStructObject> ReadRtStruct(const std::string& path, uint64_t max_points) {
  InitDcmtk();
  if (absl::Status size = CheckDicomFileSize(path, DicomReadOptions{}); !size.ok()) return size;
  DcmFileFormat file;
  if (OFCondition c = file.loadFile(path.c_str()); c.bad()) {
    return Bad(path, absl::StrCat("not readable DICOM: ", c.text()));
  }
  OFString sop_class;
  file.getDataset()->findAndGetOFStringArray(DCM_SOPClassUID, sop_class);
  if (sop_class != kRtStructureSetStorage) return Bad(path, "not an RT Structure Set");
  DRTStructureSetIOD rt;
  if (OFCondition c = rt.read(*file.getDataset()); c.bad()) {
    return Bad(path, absl::StrCat("not a readable RT Structure Set: ", c.text()));
  }
  RtStructObject out;
  DRTStructureSetROISequence& rois = rt.getStructureSetROISequence();
  for (size_t i = 0; i < rois.getNumberOfItems(); ++i) {
    DRTStructureSetROISequence::Item& item = rois.getItem(i);
    Sint32 number = 0;
    OFString name;
    if (item.getROINumber(number).bad()) return Bad(path, absl::StrCat("ROI ", i + 1, " has no ROI Number"));
    item.getROIName(name);
    out.rois[number] = name.c_str();
  }
  DRTReferencedFrameOfReferenceSequence& frames = rt.getReferencedFrameOfReferenceSequence();
  for (size_t f = 0; f < frames.getNumberOfItems(); ++f) {
    DRTRTReferencedStudySequence& studies = frames.getItem(f).getRTReferencedStudySequence();
    for (size_t st = 0; st < studies.getNumberOfItems(); ++st) {
      DRTRTReferencedSeriesSequence& series = studies.getItem(st).getRTReferencedSeriesSequence();
      for (size_t se = 0; se < series.getNumberOfItems(); ++se) {
        DRTContourImageSequence& images = series.getItem(se).getContourImageSequence();
        for (size_t im = 0; im < images.getNumberOfItems(); ++im) {
          OFString uid;
          images.getItem(im).getReferencedSOPInstanceUID(uid);
          if (!uid.empty()) out.referenced_instances.insert(uid.c_str());
        }
      }
    }
  }
  uint64_t points_read = 0;
  DRTROIContourSequence& contours = rt.getROIContourSequence();
  for (size_t i = 0; i < contours.getNumberOfItems(); ++i) {
    DRTROIContourSequence::Item& roi = contours.getItem(i);
    Sint32 number = 0;
    if (roi.getReferencedROINumber(number).bad() || !out.rois.count(number)) {
      return Bad(path,
                 absl::StrCat("ROI contour ", i + 1, " refers to ROI ", number, ", which the set does not define"));
    }
    DRTContourSequence& sequence = roi.getContourSequence();
    for (size_t k = 0; k < sequence.getNumberOfItems(); ++k) {
      DRTContourSequence::Item& contour = sequence.getItem(k);
      OFString type;
      contour.getContourGeometricType(type);
      OFString image;
      if (contour.getContourImageSequence().getNumberOfItems() > 0) {
        contour.getContourImageSequence().getItem(0).getReferencedSOPInstanceUID(image);
      }
      if (type != "CLOSED_PLANAR" || image.empty()) {
        ++out.skipped_contours;
        continue;
      }
      Sint32 count = 0;
      contour.getNumberOfContourPoints(count);
      OFVector<Float64> data;
      contour.getContourData(data);
      if (count < 3 || data.size() != static_cast<size_t>(count) * 3) {
        return Bad(path, absl::StrCat("contour ", k + 1, " of ROI ", number, " has ", data.size(), " coordinates for ",
                                      count, " points (at least 3 points, 3 coordinates each)"));
      }
      points_read += static_cast<uint64_t>(count);
      if (points_read > max_points) return Bad(path, absl::StrCat("more than ", max_points, " contour points"));
      out.referenced_instances.insert(image.c_str());
      RtContour c{number, image.c_str(), {}};
      for (size_t p = 0; p + 2 < data.size(); p += 3) {
        if (!std::isfinite(data[p]) || !std::isfinite(data[p + 1]) || !std::isfinite(data[p + 2])) {
          return Bad(path, absl::StrCat("contour ", k + 1, " of ROI ", number, " has a coordinate that is not finite"));
        }
        c.points.push_back({data[p], data[p + 1], data[p + 2]});
      }
      out.contours.push_back(std::move(c));
    }
  }
  return out;
}

absl::StatusOr<ImageGeometry> ParseGeometry(const std::string& position, const std::string& orientation,
                                            const std::string& spacing) {
  ImageGeometry g;
  double o[6], s[2];
  if (!Numbers(position, 3, g.position.data()) || !Numbers(orientation, 6, o) || !Numbers(spacing, 2, s) ||
      !(s[0] > 0) || !(s[1] > 0)) {
    return absl::InvalidArgumentError(
        "the image has no usable ImagePositionPatient, ImageOrientationPatient and PixelSpacing");
  }
  g.row_direction = {o[0], o[1], o[2]};
  g.column_direction = {o[3], o[4], o[5]};
  const double rn = std::sqrt(Dot(g.row_direction, g.row_direction));
  const double cn = std::sqrt(Dot(g.column_direction, g.column_direction));
  if (std::fabs(rn - 1) > 1e-3 || std::fabs(cn - 1) > 1e-3 ||
      std::fabs(Dot(g.row_direction, g.column_direction)) > 1e-3) {
    return absl::InvalidArgumentError("the image's ImageOrientationPatient is not two orthogonal unit vectors");
  }
  g.row_spacing = s[0];
  g.column_spacing = s[1];
  return g;
}

absl::StatusOr<std::vector<uint8_t>> RasterizeContours(const std::vector<const RtContour*>& contours,
                                                       const std::map<int, int>& class_of_roi, const ImageGeometry& g,
                                                       int rows, int columns) {
  const std::array<double, 3> normal = {
      g.row_direction[1] * g.column_direction[2] - g.row_direction[2] * g.column_direction[1],
      g.row_direction[2] * g.column_direction[0] - g.row_direction[0] * g.column_direction[2],
      g.row_direction[0] * g.column_direction[1] - g.row_direction[1] * g.column_direction[0]};
  const double tolerance = 0.5 * std::min(g.row_spacing, g.column_spacing);
  constexpr int kShift = 8;  // sub-pixel bits for fillPoly
  // Per ROI, the parity of the contours covering each pixel.
  std::map<int, cv::Mat> parity;
  for (const RtContour* c : contours) {
    if (!class_of_roi.count(c->roi)) continue;
    std::vector<cv::Point> polygon;
    for (const std::array<double, 3>& p : c->points) {
      const std::array<double, 3> d = {p[0] - g.position[0], p[1] - g.position[1], p[2] - g.position[2]};
      if (std::fabs(Dot(d, normal)) > tolerance) {
        return absl::InvalidArgumentError(absl::StrCat("a contour of ROI ", c->roi, " lies ", std::fabs(Dot(d, normal)),
                                                       " mm off the plane of the image it references"));
      }
      const double column = Dot(d, g.row_direction) / g.column_spacing;
      const double row = Dot(d, g.column_direction) / g.row_spacing;
      if (std::fabs(column) > 1e6 || std::fabs(row) > 1e6) {
        return absl::InvalidArgumentError(absl::StrCat("a contour of ROI ", c->roi, " lies far outside its image"));
      }
      polygon.emplace_back(static_cast<int>(std::lround(column * (1 << kShift))),
                           static_cast<int>(std::lround(row * (1 << kShift))));
    }
    cv::Mat fill = cv::Mat::zeros(rows, columns, CV_8U);
    cv::fillPoly(fill, std::vector<std::vector<cv::Point>>{polygon}, cv::Scalar(1), cv::LINE_8, kShift);
    cv::Mat& p = parity[c->roi];
    if (p.empty()) p = cv::Mat::zeros(rows, columns, CV_8U);
    cv::bitwise_xor(p, fill, p);
  }
  std::vector<uint8_t> mask(static_cast<size_t>(rows) * columns, 0);
  for (const auto& [roi, p] : parity) {
    const uint8_t cls = static_cast<uint8_t>(class_of_roi.at(roi));
    for (int r = 0; r < rows; ++r) {
      const uint8_t* in = p.ptr<uint8_t>(r);
      for (int col = 0; col < columns; ++col) {
        uint8_t& m = mask[static_cast<size_t>(r) * columns + col];
        if (in[col] && cls > m) m = cls;
      }
    }
  }
  return mask;
}

absl::Status WriteRtStruct(const RtStructWrite& w, const std::string& path) {
  InitDcmtk();
  if (w.source_paths.empty() || w.roi_names.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': a structure set needs source images and ROIs"));
  }
  // The sources' headers, by SOPInstanceUID, with their geometry.
  struct Source {
    std::unique_ptr<DcmFileFormat> file;
    ImageGeometry geometry;
    std::string sop_class;
  };
  std::map<std::string, Source> sources;
  DcmDataset* first = nullptr;
  for (const std::string& p : w.source_paths) {
    auto f = std::make_unique<DcmFileFormat>();
    if (OFCondition c = f->loadFile(p.c_str(), EXS_Unknown, EGL_noChange, 4096); c.bad()) {
      return absl::InvalidArgumentError(absl::StrCat("'", p, "': ", c.text()));
    }
    DcmDataset* ds = f->getDataset();
    auto get = [ds](const DcmTagKey& tag) {
      OFString v;
      ds->findAndGetOFStringArray(tag, v);
      return std::string(v.c_str());
    };
    absl::StatusOr<ImageGeometry> g =
        ParseGeometry(get(DCM_ImagePositionPatient), get(DCM_ImageOrientationPatient), get(DCM_PixelSpacing));
    if (!g.ok()) return absl::InvalidArgumentError(absl::StrCat("'", p, "': ", g.status().message()));
    if (first == nullptr) first = ds;
    sources[get(DCM_SOPInstanceUID)] = Source{std::move(f), *g, get(DCM_SOPClassUID)};
  }
  auto from_first = [first](const DcmTagKey& tag) {
    OFString v;
    first->findAndGetOFStringArray(tag, v);
    return std::string(v.c_str());
  };
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  OFCondition c = EC_Normal;
  auto put = [&c](DcmItem* item, const DcmTagKey& tag, const std::string& value) {
    if (c.good()) c = item->putAndInsertString(tag, value.c_str());
  };
  auto item_of = [&c](DcmItem* parent, const DcmTagKey& sequence) -> DcmItem* {
    DcmItem* item = nullptr;
    if (c.good()) c = parent->findOrCreateSequenceItem(sequence, item, -2);
    return c.good() ? item : nullptr;
  };
  put(ds, DCM_SOPClassUID, kRtStructureSetStorage);
  put(ds, DCM_SOPInstanceUID, w.sop_instance_uid);
  for (const DcmTagKey& tag : {DCM_SpecificCharacterSet, DCM_PatientName, DCM_PatientID, DCM_PatientBirthDate,
                               DCM_PatientSex, DCM_StudyInstanceUID, DCM_StudyDate, DCM_StudyTime,
                               DCM_ReferringPhysicianName, DCM_StudyID, DCM_AccessionNumber}) {
    const std::string value = from_first(tag);
    if (tag != DCM_SpecificCharacterSet || !value.empty()) put(ds, tag, value);
  }
  put(ds, DCM_Modality, "RTSTRUCT");
  put(ds, DCM_SeriesInstanceUID, w.series_instance_uid);
  put(ds, DCM_SeriesNumber, "901");
  put(ds, DCM_OperatorsName, "");
  put(ds, DCM_Manufacturer, "fedrad");
  put(ds, DCM_InstanceNumber, "1");
  put(ds, DCM_StructureSetLabel, w.label.substr(0, 16));
  put(ds, DCM_StructureSetDate, w.date_time.substr(0, 8));
  put(ds, DCM_StructureSetTime, w.date_time.substr(8));
  const std::string frame_of_reference = from_first(DCM_FrameOfReferenceUID);
  put(ds, DCM_FrameOfReferenceUID, frame_of_reference);
  put(ds, DCM_PositionReferenceIndicator, from_first(DCM_PositionReferenceIndicator));
  // Referenced Frame of Reference > Study > Series > every source image.
  DcmItem* frame = item_of(ds, DCM_ReferencedFrameOfReferenceSequence);
  if (frame) put(frame, DCM_FrameOfReferenceUID, frame_of_reference);
  DcmItem* study = frame ? item_of(frame, DCM_RTReferencedStudySequence) : nullptr;
  if (study) {
    put(study, DCM_ReferencedSOPClassUID, "1.2.840.10008.3.1.2.3.1");  // Detached Study Management (as PS3.3 asks)
    put(study, DCM_ReferencedSOPInstanceUID, from_first(DCM_StudyInstanceUID));
  }
  DcmItem* series = study ? item_of(study, DCM_RTReferencedSeriesSequence) : nullptr;
  if (series) put(series, DCM_SeriesInstanceUID, from_first(DCM_SeriesInstanceUID));
  for (const auto& [uid, source] : sources) {
    DcmItem* image = series ? item_of(series, DCM_ContourImageSequence) : nullptr;
    if (image) {
      put(image, DCM_ReferencedSOPClassUID, source.sop_class);
      put(image, DCM_ReferencedSOPInstanceUID, uid);
    }
  }
  for (size_t r = 0; r < w.roi_names.size(); ++r) {
    const std::string number = std::to_string(r + 1);
    DcmItem* roi = item_of(ds, DCM_StructureSetROISequence);
    if (roi) {
      put(roi, DCM_ROINumber, number);
      put(roi, DCM_ReferencedFrameOfReferenceUID, frame_of_reference);
      put(roi, DCM_ROIName, w.roi_names[r].substr(0, 64));
      put(roi, DCM_ROIGenerationAlgorithm, "MANUAL");
    }
    DcmItem* roi_contour = item_of(ds, DCM_ROIContourSequence);
    if (roi_contour) {
      put(roi_contour, DCM_ReferencedROINumber, number);
      put(roi_contour, DCM_ROIDisplayColor, "255\\0\\0");
    }
    for (const RtStructWrite::Contour& contour : w.contours) {
      if (contour.roi != static_cast<int>(r + 1) || !roi_contour) continue;
      auto source = sources.find(contour.image_sop_instance_uid);
      if (source == sources.end() || contour.points.size() < 3) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", path, "': a contour refers to an image not among the sources, or has under 3 points"));
      }
      const ImageGeometry& g = source->second.geometry;
      std::vector<std::string> xyz;
      for (const auto& [column, row] : contour.points) {
        for (int a = 0; a < 3; ++a) {
          xyz.push_back(absl::StrFormat("%.4f", g.position[a] + g.row_direction[a] * column * g.column_spacing +
                                                    g.column_direction[a] * row * g.row_spacing));
        }
      }
      DcmItem* item = item_of(roi_contour, DCM_ContourSequence);
      if (!item) break;
      DcmItem* image = item_of(item, DCM_ContourImageSequence);
      if (image) {
        put(image, DCM_ReferencedSOPClassUID, source->second.sop_class);
        put(image, DCM_ReferencedSOPInstanceUID, contour.image_sop_instance_uid);
      }
      put(item, DCM_ContourGeometricType, "CLOSED_PLANAR");
      put(item, DCM_NumberOfContourPoints, std::to_string(contour.points.size()));
      put(item, DCM_ContourData, absl::StrJoin(xyz, "\\"));
    }
    DcmItem* observation = item_of(ds, DCM_RTROIObservationsSequence);
    if (observation) {
      put(observation, DCM_ObservationNumber, number);
      put(observation, DCM_ReferencedROINumber, number);
      put(observation, DCM_RTROIInterpretedType, "GTV");
      put(observation, DCM_ROIInterpreter, "");
    }
  }
  if (c.bad()) return absl::InternalError(absl::StrCat("building the structure set '", path, "': ", c.text()));
  return SaveDicomFile(file, path);
}

}  // namespace fedrad::node

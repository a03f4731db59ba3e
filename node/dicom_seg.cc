#include "node/dicom_seg.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fgfracon.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgplanor.h>
#include <dcmtk/dcmfg/fgplanpo.h>
#include <dcmtk/dcmfg/fgseg.h>
#include <dcmtk/dcmiod/iodreferences.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>
#include <dcmtk/dcmseg/segutils.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "node/dicom_reader.h"

namespace fedrad::node {
namespace {

std::string Get(DcmItem& item, const DcmTagKey& tag) {
  OFString value;
  if (item.findAndGetOFStringArray(tag, value).bad()) return "";
  return value.c_str();
}

absl::Status Bad(const std::string& path, const std::string& why) {
  return DicomFileError(DicomProblem::kMalformed, path, why);
}

}  // namespace

absl::StatusOr<SegObject> ReadSegmentation(const std::string& path, uint64_t max_pixels) {
  InitDcmtk();
  if (absl::Status size = CheckDicomFileSize(path, DicomReadOptions{}); !size.ok()) return size;
  DcmFileFormat file;
  if (OFCondition c = file.loadFile(path.c_str()); c.bad())
    return Bad(path, absl::StrCat("not readable DICOM: ", c.text()));
  DcmDataset& ds = *file.getDataset();
  if (Get(ds, DCM_SOPClassUID) != kSegmentationStorage) return Bad(path, "not a DICOM Segmentation object");
  Uint16 rows = 0, columns = 0;
  ds.findAndGetUint16(DCM_Rows, rows);
  ds.findAndGetUint16(DCM_Columns, columns);
  Sint32 frames = 0;
  ds.findAndGetSint32(DCM_NumberOfFrames, frames);
  if (rows == 0 || columns == 0 || frames < 1 ||
      static_cast<uint64_t>(rows) * columns * static_cast<uint64_t>(frames) > max_pixels) {
    return Bad(path, absl::StrCat("a segmentation of ", rows, " x ", columns, " x ", frames,
                                  " pixels is empty or larger than this node reads (", max_pixels, ")"));
  }
  DcmSegmentation* loaded = nullptr;
  OFCondition c = DcmSegmentation::loadDataset(ds, loaded);
  std::unique_ptr<DcmSegmentation> seg(loaded);
  if (c.bad() || !seg) return Bad(path, absl::StrCat("not a readable segmentation: ", c.text()));

  SegObject out;
  out.sop_instance_uid = Get(ds, DCM_SOPInstanceUID);
  out.study_instance_uid = Get(ds, DCM_StudyInstanceUID);
  out.rows = rows;
  out.columns = columns;
  out.fractional = seg->getSegmentationType() == DcmSegTypes::ST_FRACTIONAL;
  Uint16 max_fraction = 255;
  if (out.fractional) ds.findAndGetUint16(DCM_MaximumFractionalValue, max_fraction);
  if (max_fraction == 0) return Bad(path, "MaximumFractionalValue is 0");
  const size_t segments = seg->getNumberOfSegments();
  for (size_t n = 1; n <= segments; ++n) {
    DcmSegment* s = seg->getSegment(n);
    if (s == nullptr) continue;
    OFString label;
    s->getSegmentLabel(label);
    out.segments[static_cast<int>(n)] = label.c_str();
  }
  // Referenced Series Sequence: every source image the object covers.
  DcmSequenceOfItems* series = nullptr;
  if (ds.findAndGetSequence(DCM_ReferencedSeriesSequence, series).good() && series != nullptr) {
    for (unsigned long i = 0; i < series->card(); ++i) {
      DcmSequenceOfItems* instances = nullptr;
      if (series->getItem(i)->findAndGetSequence(DCM_ReferencedInstanceSequence, instances).bad() || !instances) {
        continue;
      }
      for (unsigned long k = 0; k < instances->card(); ++k) {
        const std::string uid = Get(*instances->getItem(k), DCM_ReferencedSOPInstanceUID);
        if (!uid.empty()) out.referenced_instances.insert(uid);
      }
    }
  }
  const size_t pixels = static_cast<size_t>(rows) * columns;
  FGInterface& groups = seg->getFunctionalGroups();
  const size_t count = seg->getNumberOfFrames();
  for (size_t f = 0; f < count; ++f) {
    const std::string where = absl::StrCat("frame ", f + 1);
    OFBool per_frame = OFFalse;
    auto* segmentation = dynamic_cast<FGSegmentation*>(groups.get(f, DcmFGTypes::EFG_SEGMENTATION, per_frame));
    Uint16 number = 0;
    if (segmentation == nullptr || segmentation->getReferencedSegmentNumber(number).bad()) {
      return Bad(path, absl::StrCat(where, " does not say which segment it shows"));
    }
    if (!out.segments.count(number)) {
      return Bad(path, absl::StrCat(where, " shows segment ", number, ", which the object does not define"));
    }
    auto* derivation = dynamic_cast<FGDerivationImage*>(groups.get(f, DcmFGTypes::EFG_DERIVATIONIMAGE, per_frame));
    std::vector<std::pair<std::string, int>> sources;
    if (derivation != nullptr) {
      for (DerivationImageItem* d : derivation->getDerivationImageItems()) {
        for (SourceImageItem* s : d->getSourceImageItems()) {
          ImageSOPInstanceReferenceMacro& ref = s->getImageSOPInstanceReference();
          OFString uid;
          ref.getReferencedSOPInstanceUID(uid);
          OFVector<Uint16> frame_numbers;
          ref.getReferencedFrameNumber(frame_numbers);  // none: a single-frame source
          if (uid.empty()) continue;
          if (frame_numbers.empty()) sources.emplace_back(uid.c_str(), 0);
          for (Uint16 n : frame_numbers) sources.emplace_back(uid.c_str(), n > 0 ? n - 1 : 0);
        }
      }
    }
    if (sources.empty()) return Bad(path, absl::StrCat(where, " references no source image"));
    const DcmIODTypes::Frame* frame = seg->getFrame(f);
    if (frame == nullptr || frame->pixData == nullptr) return Bad(path, absl::StrCat(where, " has no pixel data"));
    std::vector<uint8_t> mask(pixels, 0);
    if (out.fractional) {
      if (frame->length < pixels) return Bad(path, absl::StrCat(where, " holds fewer pixels than rows x columns"));
      for (size_t i = 0; i < pixels; ++i) mask[i] = 2 * static_cast<unsigned>(frame->pixData[i]) >= max_fraction;
    } else {
      if (frame->length * 8 < pixels) return Bad(path, absl::StrCat(where, " holds fewer pixels than rows x columns"));
      for (size_t i = 0; i < pixels; ++i) mask[i] = (frame->pixData[i / 8] >> (i % 8)) & 1;
    }
    for (const auto& [uid, source_frame] : sources) {
      out.referenced_instances.insert(uid);
      out.frames.push_back(SegFrame{uid, source_frame, number, mask});
    }
  }
  return out;
}

absl::Status WriteSegmentation(const SegWrite& w, const std::string& path) {
  InitDcmtk();
  auto fail = [&](const std::string& what, const OFCondition& c) {
    return absl::InternalError(absl::StrCat("writing the segmentation '", path, "': ", what, ": ", c.text()));
  };
  if (w.source_paths.empty() || w.segment_labels.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': a segmentation needs source images and segments"));
  }
  // The sources' headers (no pixel data), by SOPInstanceUID.
  std::vector<std::unique_ptr<DcmFileFormat>> sources;
  std::map<std::string, DcmDataset*> by_uid;
  for (const std::string& p : w.source_paths) {
    auto f = std::make_unique<DcmFileFormat>();
    if (OFCondition c = f->loadFile(p.c_str(), EXS_Unknown, EGL_noChange, 4096); c.bad()) {
      return absl::InvalidArgumentError(absl::StrCat("'", p, "': ", c.text()));
    }
    by_uid[Get(*f->getDataset(), DCM_SOPInstanceUID)] = f->getDataset();
    sources.push_back(std::move(f));
  }
  DcmDataset& first = *sources.front()->getDataset();
  Uint16 rows = 0, columns = 0;
  first.findAndGetUint16(DCM_Rows, rows);
  first.findAndGetUint16(DCM_Columns, columns);
  if (rows == 0 || columns == 0)
    return absl::InvalidArgumentError(absl::StrCat("'", w.source_paths[0], "' has no size"));

  IODGeneralEquipmentModule::EquipmentInfo equipment("fedrad", "fedrad-node", "1", w.algorithm_version.c_str());
  ContentIdentificationMacro content("1", "SEGMENTATION", w.series_description.c_str(), "");
  DcmSegmentation* created = nullptr;
  OFCondition c = DcmSegmentation::createBinarySegmentation(created, rows, columns, equipment, content);
  std::unique_ptr<DcmSegmentation> seg(created);
  if (c.bad() || !seg) return fail("create", c);
  if (c = seg->importFromSourceImage(first); c.bad()) return fail("patient and study of the source", c);
  seg->getSeries().setSeriesInstanceUID(w.series_instance_uid.c_str());
  seg->getSeries().setSeriesNumber(std::to_string(w.series_number).c_str());
  seg->getSeries().setSeriesDescription(w.series_description.substr(0, 64).c_str());
  seg->getSOPCommon().setSOPInstanceUID(w.sop_instance_uid.c_str());
  if (w.content_date_time.size() == 14) {
    seg->getGeneralImage().setContentDate(w.content_date_time.substr(0, 8).c_str());
    seg->getGeneralImage().setContentTime(w.content_date_time.substr(8).c_str());
    seg->getSOPCommon().setInstanceCreationDate(w.content_date_time.substr(0, 8).c_str());
    seg->getSOPCommon().setInstanceCreationTime(w.content_date_time.substr(8).c_str());
  }

  // Segments: a lesion-type property (SCT 49755003 "Morphologically abnormal
  // structure" / 108369006 "Neoplasm"), labelled by the plan's class name.
  for (size_t i = 0; i < w.segment_labels.size(); ++i) {
    DcmSegment* segment = nullptr;
    c = DcmSegment::create(segment, w.segment_labels[i].substr(0, 64).c_str(),
                           CodeSequenceMacro("49755003", "SCT", "Morphologically Abnormal Structure"),
                           CodeSequenceMacro("108369006", "SCT", "Neoplasm"),
                           w.automatic ? DcmSegTypes::SAT_AUTOMATIC : DcmSegTypes::SAT_MANUAL,
                           w.automatic ? w.algorithm_name.c_str() : "");
    if (c.bad() || segment == nullptr) return fail("segment", c);
    if (w.automatic) {
      AlgorithmIdentificationMacro& algo = segment->getSegmentationAlgorithmIdentification();
      algo.getAlgorithmFamilyCode().set("123109", "DCM", "Manual Processing");
      algo.getAlgorithmFamilyCode().set("113076", "DCM", "Segmentation");
      algo.setAlgorithmName(w.algorithm_name.substr(0, 64).c_str());
      algo.setAlgorithmVersion(w.algorithm_version.substr(0, 64).c_str());
    }
    Uint16 number = 0;
    if (c = seg->addSegment(segment, number); c.bad()) return fail("segment", c);
  }

  // Geometry shared by the frames: the first source's.
  FGPixelMeasures measures;
  const std::string spacing = Get(first, DCM_PixelSpacing);
  const std::string thickness = Get(first, DCM_SliceThickness);
  if (!spacing.empty()) measures.setPixelSpacing(spacing.c_str());
  if (!thickness.empty()) measures.setSliceThickness(thickness.c_str());
  if (c = seg->addForAllFrames(measures); c.bad()) return fail("pixel measures", c);
  const std::vector<std::string> orientation = absl::StrSplit(Get(first, DCM_ImageOrientationPatient), '\\');
  if (orientation.size() == 6) {
    FGPlaneOrientationPatient plane;
    plane.setImageOrientationPatient(orientation[0].c_str(), orientation[1].c_str(), orientation[2].c_str(),
                                     orientation[3].c_str(), orientation[4].c_str(), orientation[5].c_str());
    if (c = seg->addForAllFrames(plane); c.bad()) return fail("plane orientation", c);
  }
  const std::string dimension_uid = Get(first, DCM_SOPInstanceUID).empty()
                                        ? std::string("2.25.1")
                                        : absl::StrCat(w.sop_instance_uid.substr(0, 60), ".1");
  IODMultiframeDimensionModule& dims = seg->getDimensions();
  dims.addDimensionIndex(DCM_ReferencedSegmentNumber, dimension_uid.c_str(), DCM_SegmentIdentificationSequence,
                         "ReferencedSegmentNumber");
  dims.addDimensionIndex(DCM_ImagePositionPatient, dimension_uid.c_str(), DCM_PlanePositionSequence,
                         "ImagePositionPatient");

  // Positions along the slice normal index the frames' second dimension.
  std::map<std::string, Uint32> position_index;
  for (const auto& [uid, dataset] : by_uid) position_index[uid] = 0;
  {
    std::vector<std::pair<double, std::string>> order;
    for (const auto& [uid, dataset] : by_uid) {
      const std::vector<std::string> ipp = absl::StrSplit(Get(*dataset, DCM_ImagePositionPatient), '\\');
      order.emplace_back(ipp.size() == 3 ? std::atof(ipp[2].c_str()) : 0.0, uid);
    }
    std::sort(order.begin(), order.end());
    for (size_t i = 0; i < order.size(); ++i) position_index[order[i].second] = static_cast<Uint32>(i + 1);
  }
  // Every segment has a frame (DCMTK and the standard want one): a segment
  // found nowhere gets an empty frame on the first source.
  std::vector<SegFrame> frames = w.frames;
  for (int n = 1; n <= static_cast<int>(w.segment_labels.size()); ++n) {
    if (std::none_of(frames.begin(), frames.end(), [n](const SegFrame& f) { return f.segment == n; })) {
      frames.push_back(SegFrame{Get(first, DCM_SOPInstanceUID), 0, n, std::vector<uint8_t>(size_t{rows} * columns, 0)});
    }
  }
  for (const SegFrame& frame : frames) {
    auto source = by_uid.find(frame.source_sop_instance_uid);
    if (source == by_uid.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", path, "': a frame refers to an image that is not among the sources"));
    }
    if (frame.segment < 1 || frame.segment > static_cast<int>(w.segment_labels.size()) ||
        frame.mask.size() != static_cast<size_t>(rows) * columns) {
      return absl::InvalidArgumentError(absl::StrCat("'", path, "': a frame's segment or size is wrong"));
    }
    FGPlanePosPatient position;
    const std::vector<std::string> ipp = absl::StrSplit(Get(*source->second, DCM_ImagePositionPatient), '\\');
    if (ipp.size() == 3) position.setImagePositionPatient(ipp[0].c_str(), ipp[1].c_str(), ipp[2].c_str());
    FGFrameContent frame_content;
    frame_content.setDimensionIndexValues(static_cast<Uint32>(frame.segment), 0);
    frame_content.setDimensionIndexValues(position_index[frame.source_sop_instance_uid], 1);
    FGSegmentation segment_group;
    segment_group.setReferencedSegmentNumber(static_cast<Uint16>(frame.segment));
    auto derivation = std::make_unique<FGDerivationImage>();
    CodeSequenceMacro derivation_code("113076", "DCM", "Segmentation");
    DerivationImageItem* item = nullptr;
    if (c = derivation->addDerivationImageItem(derivation_code, "", item); c.bad() || item == nullptr) {
      return fail("derivation", c);
    }
    OFVector<DcmDataset*> one{source->second};
    OFVector<SourceImageItem*> added;
    if (c = item->addSourceImageItems(
            one, CodeSequenceMacro("121322", "DCM", "Source image for image processing operation"), added);
        c.bad()) {
      return fail("source image reference", c);
    }
    OFVector<FGBase*> per_frame{&position, &frame_content, &segment_group, derivation.get()};
    std::vector<Uint8> pixels(frame.mask.begin(), frame.mask.end());
    for (Uint8& p : pixels) p = p ? 1 : 0;
    if (c = seg->addFrame(pixels.data(), static_cast<Uint16>(frame.segment), per_frame); c.bad()) {
      return fail("frame", c);
    }
  }
  // Every source image is referenced, with or without a frame.
  IODReferences references;
  for (auto& f : sources) {
    auto* ref = new IODImageReference(IODReference::LEVEL_STUDY);
    if (!ref->readFromItem(*f->getDataset()) || !references.add(ref)) delete ref;
  }
  seg->getCommonInstanceReference().addReferences(references, Get(first, DCM_StudyInstanceUID).c_str());

  DcmFileFormat out;
  if (c = seg->writeDataset(*out.getDataset()); c.bad()) return fail("encode", c);
  return SaveDicomFile(out, path);
}

}  // namespace fedrad::node

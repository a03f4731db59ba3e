#include "node/synthetic_ct.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "node/dicom_reader.h"

namespace fedrad::node {

absl::Status WriteCtSlice(const CtSlice& s, const std::string& path) {
  const size_t n = static_cast<size_t>(s.size) * s.size;
  if (s.size < 1 || s.size > 4096 || s.hu.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': a CT slice needs size x size values"));
  }
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  std::vector<Uint16> stored(n);
  for (size_t i = 0; i < n; ++i) {
    const long v = std::lround(std::clamp(s.hu[i], -1024.0f, 3071.0f)) + 1024;  // intercept -1024
    const Sint16 value = static_cast<Sint16>(v);
    std::memcpy(&stored[i], &value, sizeof value);
  }
  OFCondition c = ds->putAndInsertString(DCM_SOPClassUID, UID_CTImageStorage);
  auto put = [&](const DcmTagKey& tag, const std::string& v) {
    if (c.good()) c = ds->putAndInsertString(tag, v.c_str());
  };
  put(DCM_SpecificCharacterSet, "ISO_IR 100");
  put(DCM_SOPInstanceUID, s.sop_uid);
  // Patient and study (Type 2 attributes are present, empty where unknown).
  put(DCM_PatientName, "Synthetic^" + s.patient_id);
  put(DCM_PatientID, s.patient_id);
  put(DCM_PatientBirthDate, "");
  put(DCM_PatientSex, "O");
  put(DCM_StudyInstanceUID, s.study_uid);
  put(DCM_StudyDate, "20260101");
  put(DCM_StudyTime, "120000");
  put(DCM_ReferringPhysicianName, "");
  put(DCM_StudyID, "1");
  put(DCM_AccessionNumber, s.accession_number);
  // Series, frame of reference, equipment.
  put(DCM_Modality, "CT");
  put(DCM_SeriesInstanceUID, s.series_uid);
  put(DCM_SeriesNumber, "1");
  put(DCM_PatientPosition, "HFS");
  put(DCM_BodyPartExamined, "CHEST");
  put(DCM_FrameOfReferenceUID, s.frame_of_reference_uid);
  put(DCM_PositionReferenceIndicator, "");
  put(DCM_Manufacturer, "fedrad synth");
  // Image.
  put(DCM_InstanceNumber, std::to_string(s.instance));
  put(DCM_ContentDate, "20260101");
  put(DCM_ContentTime, "120000");
  put(DCM_ImageType, "ORIGINAL\\PRIMARY\\AXIAL");
  put(DCM_AcquisitionNumber, "1");
  put(DCM_KVP, "120");
  const std::string spacing = absl::StrFormat("%g\\%g", s.pixel_spacing_mm, s.pixel_spacing_mm);
  put(DCM_PixelSpacing, spacing);
  put(DCM_SliceThickness, "5");
  put(DCM_ImagePositionPatient, absl::StrFormat("0\\0\\%.1f", s.instance * 5.0));
  put(DCM_ImageOrientationPatient, "1\\0\\0\\0\\1\\0");
  put(DCM_SliceLocation, absl::StrFormat("%.1f", s.instance * 5.0));
  put(DCM_RescaleIntercept, "-1024");
  put(DCM_RescaleSlope, "1");
  put(DCM_RescaleType, "HU");
  put(DCM_WindowCenter, "40");
  put(DCM_WindowWidth, "400");
  put(DCM_PhotometricInterpretation, "MONOCHROME2");
  if (c.good()) c = ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
  if (c.good()) c = ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(s.size));
  if (c.good()) c = ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(s.size));
  if (c.good()) c = ds->putAndInsertUint16(DCM_BitsAllocated, 16);
  if (c.good()) c = ds->putAndInsertUint16(DCM_BitsStored, 16);
  if (c.good()) c = ds->putAndInsertUint16(DCM_HighBit, 15);
  if (c.good()) c = ds->putAndInsertUint16(DCM_PixelRepresentation, 1);
  if (c.good()) c = ds->putAndInsertUint16Array(DCM_PixelData, stored.data(), stored.size());
  if (c.bad()) return absl::InternalError(absl::StrCat("writing '", path, "': ", c.text()));
  return SaveDicomFile(file, path);
}

}  // namespace fedrad::node

#include "node/test_dicom.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcuid.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>

#include "absl/strings/str_split.h"

namespace fedrad::node::testing {

int StoredValue(const TestImage& im, int i, int f) {
  const int x = i % im.cols, y = (i / im.cols) % im.rows;
  const int max = (1 << im.bits_stored) - 1;
  // A smooth gradient plus a block pattern: something JPEG must work for.
  int v = ((x * 37 + y * 53 + f * 101 + im.seed * 11) % (max + 1) + ((x / 8 + y / 8) % 2) * (max / 4)) % (max + 1);
  if (im.is_signed) v -= (max + 1) / 2;
  return v;
}

bool WriteTestImage(const TestImage& im, const std::string& path, bool big_endian) {
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  ds->putAndInsertString(DCM_SOPClassUID, im.samples == 3 ? UID_SecondaryCaptureImageStorage : UID_CTImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, im.sop_instance_uid.c_str());
  if (im.has_patient_id) ds->putAndInsertString(DCM_PatientID, im.patient_id.c_str());
  if (!im.issuer_of_patient_id.empty()) ds->putAndInsertString(DCM_IssuerOfPatientID, im.issuer_of_patient_id.c_str());
  if (!im.study_instance_uid.empty()) ds->putAndInsertString(DCM_StudyInstanceUID, im.study_instance_uid.c_str());
  ds->putAndInsertString(DCM_Modality, im.samples == 3 ? "OT" : "CT");
  ds->putAndInsertString(DCM_PhotometricInterpretation, im.photometric.c_str());
  ds->putAndInsertString(DCM_RescaleSlope, im.slope.c_str());
  ds->putAndInsertString(DCM_RescaleIntercept, im.intercept.c_str());
  ds->putAndInsertUint16(DCM_SamplesPerPixel, static_cast<Uint16>(im.samples));
  if (im.samples == 3) ds->putAndInsertUint16(DCM_PlanarConfiguration, static_cast<Uint16>(im.planar));
  ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(im.rows));
  ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(im.cols));
  if (im.frames > 1) ds->putAndInsertString(DCM_NumberOfFrames, std::to_string(im.frames).c_str());
  ds->putAndInsertUint16(DCM_BitsAllocated, static_cast<Uint16>(im.bits_allocated));
  ds->putAndInsertUint16(DCM_BitsStored, static_cast<Uint16>(im.bits_stored));
  ds->putAndInsertUint16(DCM_HighBit, static_cast<Uint16>(im.bits_stored - 1));
  ds->putAndInsertUint16(DCM_PixelRepresentation, im.is_signed ? 1 : 0);
  const size_t n = static_cast<size_t>(im.rows) * im.cols;
  if (im.bits_allocated == 8) {
    std::vector<Uint8> px(n * im.frames * im.samples);
    for (int f = 0; f < im.frames; ++f) {
      for (size_t i = 0; i < n; ++i) {
        for (int s = 0; s < im.samples; ++s) {
          const Uint8 v = static_cast<Uint8>((StoredValue(im, static_cast<int>(i), f) + s * 70) & 0xff);
          const size_t at = im.planar ? s * n + i : i * im.samples + s;
          px[f * n * im.samples + at] = v;
        }
      }
    }
    ds->putAndInsertUint8Array(DCM_PixelData, px.data(), px.size());
  } else {
    std::vector<Uint16> px(n * im.frames);
    for (int f = 0; f < im.frames; ++f) {
      for (size_t i = 0; i < n; ++i) px[f * n + i] = static_cast<Uint16>(StoredValue(im, static_cast<int>(i), f));
    }
    ds->putAndInsertUint16Array(DCM_PixelData, px.data(), px.size());
  }
  return file.saveFile(path.c_str(), big_endian ? EXS_BigEndianExplicit : EXS_LittleEndianExplicit).good();
}

bool WriteJpeg2000Stub(const std::string& path, const std::string& patient_id) {
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  ds->putAndInsertString(DCM_SOPClassUID, UID_CTImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, "2.25.43");
  ds->putAndInsertString(DCM_PatientID, patient_id.c_str());
  ds->putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
  ds->putAndInsertUint16(DCM_Rows, 8);
  ds->putAndInsertUint16(DCM_Columns, 8);
  ds->putAndInsertUint16(DCM_BitsAllocated, 16);
  ds->putAndInsertUint16(DCM_BitsStored, 16);
  ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
  auto* pixel = new DcmPixelData(DCM_PixelData);
  auto* seq = new DcmPixelSequence(DCM_PixelSequenceTag);
  seq->insert(new DcmPixelItem(DCM_PixelItemTag));  // empty offset table
  auto* item = new DcmPixelItem(DCM_PixelItemTag);
  const Uint8 codestream[] = {0xff, 0x4f, 0xff, 0x51, 0, 0, 0, 0};  // J2K SOC + SIZ marker start
  item->putUint8Array(codestream, sizeof codestream);
  seq->insert(item);
  pixel->putOriginalRepresentation(EXS_JPEG2000LosslessOnly, nullptr, seq);
  ds->insert(pixel);
  return file.saveFile(path.c_str(), EXS_JPEG2000LosslessOnly).good();
}

std::vector<std::vector<std::string>> ReadCsvRows(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::vector<std::string>> rows;
  std::string line;
  while (std::getline(in, line)) rows.push_back(absl::StrSplit(line, ','));
  return rows;
}

CtSlice BlankCtSlice(const std::string& sop_uid, int instance, int size) {
  CtSlice s;
  s.size = size;
  s.hu.assign(static_cast<size_t>(size) * size, -1000.0f);
  s.patient_id = "P1";
  s.study_uid = "2.25.100";
  s.series_uid = "2.25.101";
  s.frame_of_reference_uid = "2.25.102";
  s.sop_uid = sop_uid;
  s.instance = instance;
  return s;
}

Dciodvfy RunDciodvfy(const std::string& path) {
  Dciodvfy out;
  const std::string log = path + ".dciodvfy.txt";
  const std::string command = "dciodvfy '" + path + "' > '" + log + "' 2>&1";
  // dciodvfy's exit status does not tell errors from warnings: its lines do.
  if (std::system(command.c_str()) == -1) return out;
  std::ifstream in(log);
  for (std::string line; std::getline(in, line);) {
    out.output += line + "\n";
    if (line.rfind("Error", 0) == 0) {
      out.errors.push_back(line);
    } else if (out.iod.empty() && !line.empty() && line.find(' ') == std::string::npos) {
      out.iod = line;  // the IOD's name stands alone on its line
    }
  }
  std::remove(log.c_str());
  return out;
}

}  // namespace fedrad::node::testing

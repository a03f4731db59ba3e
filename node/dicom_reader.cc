#include "node/dicom_reader.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmimgle/dcmimage.h>
#include <dcmtk/dcmimgle/dipixel.h>
#include <dcmtk/oflog/oflog.h>

#include <mutex>

#include "absl/strings/str_cat.h"

namespace fedrad::node {
namespace {

// Applies the modality rescale in float: DCMTK's own modality transform
// stores its result in an integer type, which would truncate non-integer
// slopes.
template <typename T>
void CopyFrames(const void* data, int rows, int cols, unsigned long frames, double slope,
                double intercept, std::vector<ModalityFrame>* out) {
  const T* p = static_cast<const T*>(data);
  const size_t per_frame = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  for (unsigned long f = 0; f < frames; ++f) {
    ModalityFrame frame;
    frame.rows = rows;
    frame.columns = cols;
    frame.values.resize(per_frame);
    const T* src = p + f * per_frame;
    for (size_t i = 0; i < per_frame; ++i) {
      frame.values[i] = static_cast<float>(static_cast<double>(src[i]) * slope + intercept);
    }
    out->push_back(std::move(frame));
  }
}

std::string GetString(DcmDataset* ds, const DcmTagKey& tag) {
  OFString v;
  if (ds->findAndGetOFString(tag, v).good()) return std::string(v.c_str());
  return "";
}

}  // namespace

absl::StatusOr<DicomImageFile> ReadDicomImage(const std::string& path) {
  // DCMTK logs per-file notes to stderr; our own errors carry what matters.
  static std::once_flag quiet;
  std::call_once(quiet, [] { OFLog::configure(OFLogger::ERROR_LOG_LEVEL); });
  DcmFileFormat file;
  OFCondition cond = file.loadFile(path.c_str());
  if (cond.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "': not a readable DICOM file: ", cond.text()));
  }
  DcmDataset* ds = file.getDataset();
  DicomImageFile out;
  out.patient_id = GetString(ds, DCM_PatientID);
  out.sop_instance_uid = GetString(ds, DCM_SOPInstanceUID);
  out.modality = GetString(ds, DCM_Modality);
  const E_TransferSyntax xfer = ds->getOriginalXfer();
  out.transfer_syntax_uid = DcmXfer(xfer).getXferID();
  Float64 v;
  if (ds->findAndGetFloat64(DCM_WindowCenter, v).good()) out.window_center = v;
  if (ds->findAndGetFloat64(DCM_WindowWidth, v).good() && v > 0) out.window_width = v;

  if (!ds->tagExistsWithValue(DCM_PixelData)) {
    return absl::UnimplementedError(absl::StrCat("'", path, "': no image (no pixel data)"));
  }
  Float64 slope = 1.0, intercept = 0.0;
  if (ds->findAndGetFloat64(DCM_RescaleSlope, slope).bad() || slope == 0) slope = 1.0;
  if (ds->findAndGetFloat64(DCM_RescaleIntercept, intercept).bad()) intercept = 0.0;
  DicomImage image(ds, xfer, CIF_MayDetachPixelData | CIF_IgnoreModalityTransformation, 0, 0);
  if (image.getStatus() != EIS_Normal) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "': cannot decode pixel data: ", DicomImage::getString(image.getStatus())));
  }
  if (!image.isMonochrome()) {
    return absl::UnimplementedError(
        absl::StrCat("'", path, "': colour images are not supported yet"));
  }
  const DiPixel* pixels = image.getInterData();
  if (pixels == nullptr || pixels->getData() == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': pixel data could not be read"));
  }
  const int rows = static_cast<int>(image.getHeight());
  const int cols = static_cast<int>(image.getWidth());
  const unsigned long frames = image.getFrameCount();
  if (rows <= 0 || cols <= 0 || frames == 0 ||
      pixels->getCount() < static_cast<unsigned long>(rows) * cols * frames) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "': Rows x Columns x frames disagrees with the pixel data"));
  }
  const void* data = pixels->getData();
  switch (pixels->getRepresentation()) {
    case EPR_Uint8: CopyFrames<Uint8>(data, rows, cols, frames, slope, intercept, &out.frames); break;
    case EPR_Sint8: CopyFrames<Sint8>(data, rows, cols, frames, slope, intercept, &out.frames); break;
    case EPR_Uint16: CopyFrames<Uint16>(data, rows, cols, frames, slope, intercept, &out.frames); break;
    case EPR_Sint16: CopyFrames<Sint16>(data, rows, cols, frames, slope, intercept, &out.frames); break;
    case EPR_Uint32: CopyFrames<Uint32>(data, rows, cols, frames, slope, intercept, &out.frames); break;
    case EPR_Sint32: CopyFrames<Sint32>(data, rows, cols, frames, slope, intercept, &out.frames); break;
    default:
      return absl::UnimplementedError(
          absl::StrCat("'", path, "': unsupported internal pixel representation"));
  }
  return out;
}

}  // namespace fedrad::node

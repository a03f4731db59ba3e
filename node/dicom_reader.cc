#include "node/dicom_reader.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmimage/diregist.h>  // registers colour image support
#include <dcmtk/dcmimgle/dcmimage.h>
#include <dcmtk/dcmimgle/dipixel.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include <filesystem>
#include <memory>
#include <mutex>
#include <type_traits>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace fedrad::node {
namespace {

constexpr char kNoImage[] = "no image (no pixel data)";
constexpr char kSegmentationStorageUid[] = "1.2.840.10008.5.1.4.1.1.66.4";

// Where a ReadDicomImage error keeps its problem and reason, as data.
constexpr char kDicomErrorPayload[] = "fedrad/dicom-error";

absl::StatusCode CodeOf(DicomProblem problem) {
  switch (problem) {
    case DicomProblem::kMissing:
      return absl::StatusCode::kNotFound;
    case DicomProblem::kMalformed:
      return absl::StatusCode::kInvalidArgument;
    case DicomProblem::kNoImage:
    case DicomProblem::kUnsupported:
      return absl::StatusCode::kUnimplemented;
  }
  return absl::StatusCode::kInternal;
}

// Transfer syntaxes DCMTK's open edition cannot decode, with the reason.
const char* UnsupportedSyntax(E_TransferSyntax xfer) {
  switch (xfer) {
    case EXS_JPEG2000LosslessOnly:
    case EXS_JPEG2000:
    case EXS_JPEG2000MulticomponentLosslessOnly:
    case EXS_JPEG2000Multicomponent:
      return "JPEG 2000 is not supported (DCMTK's open edition has no JPEG 2000 decoder)";
    case EXS_JPIPReferenced:
    case EXS_JPIPReferencedDeflate:
      return "JPIP-referenced pixel data is not stored in the file";
    case EXS_MPEG2MainProfileAtMainLevel:
    case EXS_MPEG2MainProfileAtHighLevel:
    case EXS_MPEG4HighProfileLevel4_1:
    case EXS_MPEG4BDcompatibleHighProfileLevel4_1:
    case EXS_MPEG4HighProfileLevel4_2_For2DVideo:
    case EXS_MPEG4HighProfileLevel4_2_For3DVideo:
    case EXS_MPEG4StereoHighProfileLevel4_2:
    case EXS_HEVCMainProfileLevel5_1:
    case EXS_HEVCMain10ProfileLevel5_1:
      return "video transfer syntaxes (MPEG/HEVC) are not supported";
    default:
      return nullptr;
  }
}

// Applies the modality rescale in float: DCMTK's own modality transform
// stores its result in an integer type, which would truncate non-integer
// slopes.
template <typename T>
void CopyFrames(const void* data, int rows, int cols, unsigned long frames, double slope, double intercept,
                std::vector<ModalityFrame>* out) {
  const T* p = static_cast<const T*>(data);
  const size_t per_frame = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  for (unsigned long f = 0; f < frames; ++f) {
    ModalityFrame frame;
    frame.index = static_cast<int>(f);
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

// Every value of a multi-valued element, backslash-separated.
std::string GetStringArray(DcmDataset* ds, const DcmTagKey& tag) {
  OFString v;
  if (ds->findAndGetOFStringArray(tag, v).good()) return std::string(v.c_str());
  return "";
}

// For native (uncompressed) pixel data, the length DCMTK would silently pad
// or truncate must match Rows x Columns x Samples x Frames exactly.
absl::Status CheckNativeLength(DcmDataset* ds, const std::string& path) {
  Uint16 rows = 0, cols = 0, bits_allocated = 0, samples = 1;
  ds->findAndGetUint16(DCM_Rows, rows);
  ds->findAndGetUint16(DCM_Columns, cols);
  ds->findAndGetUint16(DCM_BitsAllocated, bits_allocated);
  ds->findAndGetUint16(DCM_SamplesPerPixel, samples);
  Sint32 frames = 1;
  if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
  if (rows == 0 || cols == 0 || bits_allocated == 0) {
    return DicomFileError(DicomProblem::kMalformed, path,
                          "Rows, Columns or BitsAllocated is missing, zero or of the wrong type");
  }
  DcmElement* pixel = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, pixel).bad() || pixel == nullptr) return absl::OkStatus();
  const uint64_t have = pixel->getLength();
  const uint64_t bits = uint64_t{rows} * cols * samples * static_cast<uint64_t>(frames) * bits_allocated;
  const uint64_t want = (bits + 7) / 8;
  // Odd lengths are padded to even in DICOM.
  if (have != want && have != want + (want % 2)) {
    return DicomFileError(
        DicomProblem::kMalformed, path,
        absl::StrCat("pixel data has ", have, " bytes but Rows x Columns x Samples x Frames (", rows, "x", cols, "x",
                     samples, "x", frames, ") at ", bits_allocated, " bits needs ", want));
  }
  return absl::OkStatus();
}

// Native (uncompressed) monochrome pixel data, read straight from the
// element: stored values are unpacked by BitsStored/HighBit, sign-extended
// for PixelRepresentation 1, and rescaled in one pass. This is most of what a
// PACS exports, and skipping DicomImage's intermediate copies makes it several
// times faster. Returns false (leaving `out` alone) for layouts it does not
// handle, which then go through DicomImage.
absl::StatusOr<bool> ReadNativeMonochrome(DcmDataset* ds, const std::string& path, double slope, double intercept,
                                          DicomImageFile* out) {
  Uint16 bits_allocated = 0, bits_stored = 0, high_bit = 0, samples = 1;
  ds->findAndGetUint16(DCM_BitsAllocated, bits_allocated);
  ds->findAndGetUint16(DCM_BitsStored, bits_stored);
  ds->findAndGetUint16(DCM_HighBit, high_bit);
  ds->findAndGetUint16(DCM_SamplesPerPixel, samples);
  if (samples != 1 || (bits_allocated != 8 && bits_allocated != 16) || bits_stored == 0 ||
      bits_stored > bits_allocated || high_bit >= bits_allocated || high_bit + 1 < bits_stored ||
      ds->tagExists(DCM_ModalityLUTSequence)) {
    return false;
  }
  Sint32 frames = 1;
  if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
  const size_t per_frame = static_cast<size_t>(out->rows) * static_cast<size_t>(out->columns);
  const size_t count = per_frame * static_cast<size_t>(frames);
  const unsigned shift = high_bit + 1u - bits_stored;
  const uint32_t mask = bits_stored >= 32 ? 0xffffffffu : ((1u << bits_stored) - 1u);
  const uint32_t sign = 1u << (bits_stored - 1);
  const float fslope = static_cast<float>(slope), fintercept = static_cast<float>(intercept);
  auto convert = [&](auto* data) {
    for (Sint32 f = 0; f < frames; ++f) {
      ModalityFrame frame;
      frame.index = static_cast<int>(f);
      frame.rows = out->rows;
      frame.columns = out->columns;
      frame.values.resize(per_frame);
      const auto* src = data + f * per_frame;
      float* dst = frame.values.data();
      if (shift == 0 && bits_stored == bits_allocated) {  // the common case: no unpacking
        for (size_t i = 0; i < per_frame; ++i) {
          const int32_t v =
              out->is_signed
                  ? static_cast<int32_t>(
                        static_cast<std::make_signed_t<std::remove_const_t<std::remove_pointer_t<decltype(src)>>>>(
                            src[i]))
                  : static_cast<int32_t>(src[i]);
          dst[i] = static_cast<float>(v) * fslope + fintercept;
        }
      } else {
        for (size_t i = 0; i < per_frame; ++i) {
          uint32_t raw = (static_cast<uint32_t>(src[i]) >> shift) & mask;
          const int32_t v =
              out->is_signed && (raw & sign) ? static_cast<int32_t>(raw | ~mask) : static_cast<int32_t>(raw);
          dst[i] = static_cast<float>(v) * fslope + fintercept;
        }
      }
      out->frames.push_back(std::move(frame));
    }
  };
  DcmElement* element = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, element).bad() || element == nullptr) return false;
  if (bits_allocated == 16) {
    Uint16* data = nullptr;
    if (element->getUint16Array(data).bad() || data == nullptr || element->getLength() < count * 2) return false;
    convert(static_cast<const Uint16*>(data));
  } else {
    Uint8* data = nullptr;
    if (element->getUint8Array(data).bad() || data == nullptr || element->getLength() < count) return false;
    convert(static_cast<const Uint8*>(data));
  }
  (void)path;
  return true;
}

bool IsJpegFamily(E_TransferSyntax xfer) {
  return (xfer >= EXS_JPEGProcess1 && xfer <= EXS_JPEGProcess14SV1) || xfer == EXS_JPEGLSLossless ||
         xfer == EXS_JPEGLSLossy;
}

// Reads the frame size from a JPEG or JPEG-LS codestream's start-of-frame
// marker. Returns false if the stream has no parsable SOF before its scan.
bool JpegFrameSize(const Uint8* p, size_t n, int* rows, int* cols) {
  if (n < 4 || p[0] != 0xFF || p[1] != 0xD8) return false;  // SOI
  size_t i = 2;
  while (i + 4 <= n) {
    if (p[i] != 0xFF) return false;
    const Uint8 marker = p[i + 1];
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    const size_t len = (static_cast<size_t>(p[i + 2]) << 8) | p[i + 3];
    const bool sof = (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) ||
                     marker == 0xF7;  // JPEG-LS SOF55
    if (sof) {
      if (i + 9 > n || len < 8) return false;
      *rows = (p[i + 5] << 8) | p[i + 6];
      *cols = (p[i + 7] << 8) | p[i + 8];
      return true;
    }
    if (marker == 0xDA || len < 2) return false;  // scan before any SOF
    i += 2 + len;
  }
  return false;
}

// A compressed stream's own header decides what DCMTK's decoders allocate,
// so each frame's SOF must agree with Rows and Columns before decoding.
absl::Status CheckEncapsulatedFrames(DcmDataset* ds, E_TransferSyntax xfer, const std::string& path, int rows,
                                     int cols) {
  if (!IsJpegFamily(xfer)) return absl::OkStatus();
  DcmElement* element = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, element).bad() || element == nullptr) return absl::OkStatus();
  auto* pixel = static_cast<DcmPixelData*>(element);
  DcmPixelSequence* seq = nullptr;
  if (pixel->getEncapsulatedRepresentation(xfer, nullptr, seq).bad() || seq == nullptr) {
    return DicomFileError(DicomProblem::kMalformed, path, "encapsulated pixel data without a pixel sequence");
  }
  bool seen_frame = false;
  for (unsigned long k = 1; k < seq->card(); ++k) {  // item 0 is the offset table
    DcmPixelItem* item = nullptr;
    Uint8* data = nullptr;
    if (seq->getItem(item, k).bad() || item == nullptr || item->getUint8Array(data).bad() || data == nullptr) continue;
    const size_t n = item->getLength();
    if (n < 2 || data[0] != 0xFF || data[1] != 0xD8) continue;  // a continuation fragment
    int r = 0, c = 0;
    if (!JpegFrameSize(data, n, &r, &c)) {
      return DicomFileError(DicomProblem::kMalformed, path, "compressed frame without a readable JPEG frame header");
    }
    if (r != rows || c != cols) {
      return DicomFileError(
          DicomProblem::kMalformed, path,
          absl::StrCat("compressed frame is ", r, "x", c, " but Rows x Columns is ", rows, "x", cols));
    }
    seen_frame = true;
  }
  if (!seen_frame) return DicomFileError(DicomProblem::kMalformed, path, "no compressed frame in the pixel data");
  return absl::OkStatus();
}

}  // namespace

std::string SopClassOfFile(const std::string& path) {
  InitDcmtk();
  if (!CheckDicomFileSize(path, DicomReadOptions{}).ok()) return "";
  DcmFileFormat file;
  if (file.loadFileUntilTag(path.c_str(), EXS_Unknown, EGL_noChange, 256, ERM_autoDetect, DCM_SOPInstanceUID).bad()) {
    return "";
  }
  return GetString(file.getDataset(), DCM_SOPClassUID);
}

absl::Status SaveDicomFile(DcmFileFormat& file, const std::string& path, bool compress) {
  InitDcmtk();
  E_TransferSyntax xfer = EXS_LittleEndianExplicit;
  if (compress) {
    if (OFCondition c = file.getDataset()->chooseRepresentation(EXS_RLELossless, nullptr); c.bad()) {
      return absl::InternalError(absl::StrCat("cannot compress '", path, "': ", c.text()));
    }
    xfer = EXS_RLELossless;
  }
  const std::string tmp = absl::StrCat(path, ".tmp");
  if (OFCondition c = file.saveFile(tmp.c_str(), xfer); c.bad()) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot write '", path, "': ", c.text()));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot write '", path, "': ", ec.message()));
  return absl::OkStatus();
}

void InitDcmtk() {
  static std::once_flag once;
  std::call_once(once, [] {
    OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
    DcmRLEEncoderRegistration::registerCodecs();  // heatmaps are written RLE Lossless
  });
}

// The message names the file; the payload holds the problem (one digit)
// and the reason, for those who count or sort files by it.
absl::Status DicomFileError(DicomProblem problem, const std::string& path, absl::string_view reason) {
  absl::Status s(CodeOf(problem), absl::StrCat("'", path, "': ", reason));
  s.SetPayload(kDicomErrorPayload, absl::Cord(absl::StrCat(static_cast<int>(problem), reason)));
  return s;
}

std::optional<DicomError> DicomErrorOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kDicomErrorPayload);  // absl::optional here
  if (!payload || payload->empty()) return std::nullopt;
  std::string flat(*payload);
  const int problem = flat[0] - '0';
  if (problem < 0 || problem > static_cast<int>(DicomProblem::kUnsupported)) return std::nullopt;
  return DicomError{static_cast<DicomProblem>(problem), flat.substr(1)};
}

std::string ReasonOf(const absl::Status& status) {
  if (std::optional<DicomError> e = DicomErrorOf(status)) return e->reason;
  return std::string(status.message());
}

bool IsNoImage(const absl::Status& status) {
  std::optional<DicomError> e = DicomErrorOf(status);
  return e && e->problem == DicomProblem::kNoImage;
}

uint64_t MaxDicomFileBytes(const DicomReadOptions& options) {
  return options.max_pixels * 4 * 2 + (uint64_t{64} << 20);
}

absl::Status CheckDicomFileSize(const std::string& path, const DicomReadOptions& options) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return DicomFileError(DicomProblem::kMissing, path, "no such file");
  }
  const uintmax_t bytes = std::filesystem::file_size(path, ec);
  if (ec) return DicomFileError(DicomProblem::kMissing, path, absl::StrCat("cannot be read (", ec.message(), ")"));
  if (bytes > MaxDicomFileBytes(options)) {
    return DicomFileError(
        DicomProblem::kMalformed, path,
        absl::StrCat("file of ", bytes, " bytes is larger than any image the node reads (at most ", options.max_pixels,
                     " pixels) could be: ", MaxDicomFileBytes(options), " bytes at most"));
  }
  return absl::OkStatus();
}

absl::StatusOr<DicomImageFile> ReadDicomImage(const std::string& path, const DicomReadOptions& options) {
  InitDcmtk();
  if (absl::Status size = CheckDicomFileSize(path, options); !size.ok()) return size;
  DcmFileFormat file;
  OFCondition cond = file.loadFile(path.c_str());
  if (cond.bad()) {
    return DicomFileError(DicomProblem::kMalformed, path,
                          absl::StrCat("not a readable DICOM file (", cond.text(), ")"));
  }
  DcmDataset* ds = file.getDataset();
  DicomImageFile out;
  out.patient_id = GetString(ds, DCM_PatientID);
  out.issuer_of_patient_id = GetString(ds, DCM_IssuerOfPatientID);
  out.study_instance_uid = GetString(ds, DCM_StudyInstanceUID);
  out.series_instance_uid = GetString(ds, DCM_SeriesInstanceUID);
  out.sop_instance_uid = GetString(ds, DCM_SOPInstanceUID);
  out.sop_class_uid = GetString(ds, DCM_SOPClassUID);
  out.modality = GetString(ds, DCM_Modality);
  out.photometric = GetString(ds, DCM_PhotometricInterpretation);
  out.image_position = GetStringArray(ds, DCM_ImagePositionPatient);
  out.image_orientation = GetStringArray(ds, DCM_ImageOrientationPatient);
  out.pixel_spacing = GetStringArray(ds, DCM_PixelSpacing);
  const E_TransferSyntax xfer = ds->getOriginalXfer();
  DcmXfer xfer_info(xfer);
  out.transfer_syntax_uid = xfer_info.getXferID();
  out.transfer_syntax_name = xfer_info.getXferName();
  Uint16 u16 = 0;
  if (ds->findAndGetUint16(DCM_Rows, u16).good()) out.rows = u16;
  if (ds->findAndGetUint16(DCM_Columns, u16).good()) out.columns = u16;
  if (ds->findAndGetUint16(DCM_BitsStored, u16).good()) out.bits_stored = u16;
  if (ds->findAndGetUint16(DCM_PixelRepresentation, u16).good()) out.is_signed = u16 == 1;
  Float64 v;
  if (ds->findAndGetFloat64(DCM_WindowCenter, v).good()) out.window_center = v;
  if (ds->findAndGetFloat64(DCM_WindowWidth, v).good() && v > 0) out.window_width = v;

  if (!ds->tagExistsWithValue(DCM_PixelData)) {
    return DicomFileError(DicomProblem::kNoImage, path, kNoImage);
  }
  // A segmentation's pixel data is labels of other images, not an image.
  if (out.sop_class_uid == kSegmentationStorageUid) {
    return DicomFileError(DicomProblem::kNoImage, path, kSegmentationObject);
  }
  if (const char* why = UnsupportedSyntax(xfer)) {
    return DicomFileError(DicomProblem::kUnsupported, path, why);
  }
  {
    Uint16 samples = 1;
    ds->findAndGetUint16(DCM_SamplesPerPixel, samples);
    Sint32 frames = 1;
    if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
    const uint64_t pixels =
        uint64_t(out.rows) * uint64_t(out.columns) * uint64_t(frames) * std::max<uint64_t>(1, samples);
    if (pixels > options.max_pixels) {
      return DicomFileError(DicomProblem::kMalformed, path,
                            absl::StrCat("image too large: Rows x Columns x Frames x Samples = ", pixels,
                                         " pixels, more than the limit of ", options.max_pixels));
    }
  }
  {
    absl::Status s = xfer_info.isEncapsulated() ? CheckEncapsulatedFrames(ds, xfer, path, out.rows, out.columns)
                                                : CheckNativeLength(ds, path);
    if (!s.ok()) return s;
  }
  const bool color = out.photometric.rfind("MONOCHROME", 0) != 0 && out.photometric != "PALETTE COLOR";
  if (color && !options.color_to_gray) {
    return DicomFileError(DicomProblem::kUnsupported, path,
                          absl::StrCat("colour image (", out.photometric, ") and color_to_gray is off"));
  }
  out.invert = out.photometric == "MONOCHROME1";

  Float64 slope = 1.0, intercept = 0.0;
  if (ds->findAndGetFloat64(DCM_RescaleSlope, slope).bad() || slope == 0) slope = 1.0;
  if (ds->findAndGetFloat64(DCM_RescaleIntercept, intercept).bad()) intercept = 0.0;
  if (!xfer_info.isEncapsulated() && !color) {
    absl::StatusOr<bool> done = ReadNativeMonochrome(ds, path, slope, intercept, &out);
    if (!done.ok()) return done.status();
    if (*done) return out;
  }
  auto image = std::make_unique<DicomImage>(ds, xfer, CIF_MayDetachPixelData | CIF_IgnoreModalityTransformation, 0, 0);
  if (image->getStatus() != EIS_Normal) {
    return DicomFileError(DicomProblem::kMalformed, path,
                          absl::StrCat("cannot decode pixel data: ", DicomImage::getString(image->getStatus())));
  }
  if (!image->isMonochrome()) {
    // Luminance (ITU-R BT.601 weights) of RGB; DCMTK has already converted
    // YBR and planar layouts to RGB.
    std::unique_ptr<DicomImage> gray(image->createMonochromeImage());
    if (gray == nullptr || gray->getStatus() != EIS_Normal) {
      return DicomFileError(DicomProblem::kMalformed, path, "cannot convert the colour image to grayscale");
    }
    image = std::move(gray);
    slope = 1.0;
    intercept = 0.0;
  }
  const DiPixel* pixels = image->getInterData();
  if (pixels == nullptr || pixels->getData() == nullptr) {
    return DicomFileError(DicomProblem::kMalformed, path, "pixel data could not be read");
  }
  const int rows = static_cast<int>(image->getHeight());
  const int cols = static_cast<int>(image->getWidth());
  const unsigned long frames = image->getFrameCount();
  if (rows <= 0 || cols <= 0 || frames == 0 || pixels->getCount() < static_cast<unsigned long>(rows) * cols * frames) {
    return DicomFileError(DicomProblem::kMalformed, path,
                          "Rows x Columns x frames disagrees with the decoded pixel data");
  }
  const void* data = pixels->getData();
  switch (pixels->getRepresentation()) {
    case EPR_Uint8:
      CopyFrames<Uint8>(data, rows, cols, frames, slope, intercept, &out.frames);
      break;
    case EPR_Sint8:
      CopyFrames<Sint8>(data, rows, cols, frames, slope, intercept, &out.frames);
      break;
    case EPR_Uint16:
      CopyFrames<Uint16>(data, rows, cols, frames, slope, intercept, &out.frames);
      break;
    case EPR_Sint16:
      CopyFrames<Sint16>(data, rows, cols, frames, slope, intercept, &out.frames);
      break;
    case EPR_Uint32:
      CopyFrames<Uint32>(data, rows, cols, frames, slope, intercept, &out.frames);
      break;
    case EPR_Sint32:
      CopyFrames<Sint32>(data, rows, cols, frames, slope, intercept, &out.frames);
      break;
    default:
      return DicomFileError(DicomProblem::kUnsupported, path, "unsupported internal pixel representation");
  }
  return out;
}

}  // namespace fedrad::node

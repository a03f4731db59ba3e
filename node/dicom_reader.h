#ifndef FEDRAD_NODE_DICOM_READER_H_
#define FEDRAD_NODE_DICOM_READER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

class DcmFileFormat;

namespace fedrad::node {

// One frame's modality values (after RescaleSlope/Intercept, e.g. Hounsfield
// units for CT), row-major rows x columns.
struct ModalityFrame {
  int index = 0;  // frame number within the file, from 0
  int rows = 0;
  int columns = 0;
  std::vector<float> values;
};

// A decoded DICOM image file. Identifiers stay inside the node: they are used
// for grouping and splitting, never logged or sent.
struct DicomImageFile {
  std::string patient_id;
  std::string issuer_of_patient_id;  // (0010,0021): who assigned patient_id, if given
  std::string study_instance_uid;
  std::string series_instance_uid;
  std::string sop_instance_uid;
  std::string sop_class_uid;
  std::string modality;
  std::string transfer_syntax_uid;
  std::string transfer_syntax_name;
  std::string photometric;  // as stored, e.g. MONOCHROME1, RGB, YBR_FULL_422
  int rows = 0;
  int columns = 0;
  int bits_stored = 0;
  bool is_signed = false;
  // MONOCHROME1 stores "bright means less dense"; preprocessing inverts it
  // after windowing so bright always means dense.
  bool invert = false;
  // ImagePositionPatient, ImageOrientationPatient, PixelSpacing as stored
  // (backslash-separated decimals); empty when absent.
  std::string image_position;
  std::string image_orientation;
  std::string pixel_spacing;
  std::optional<double> window_center;  // the file's own VOI, if any
  std::optional<double> window_width;
  std::vector<ModalityFrame> frames;
};

struct DicomReadOptions {
  // Colour images (RGB, YBR_*) become one luminance channel; otherwise they
  // are refused.
  bool color_to_gray = true;
  // Files whose header promises more pixels (rows x columns x frames x
  // samples) are refused before decoding: a hostile or corrupt header must not
  // make the node allocate gigabytes. 64 Mi covers a 4k x 5k mammogram or a
  // 512 x 512 x 256 multi-frame CT.
  uint64_t max_pixels = uint64_t{64} << 20;
};

// The largest file that could hold an image within `options.max_pixels`:
// every pixel at 32 bits, twice over (encapsulated data may be larger than
// raw), plus 64 MiB of other elements. A larger file is refused from its
// size alone, before a byte of it is read or hashed.
uint64_t MaxDicomFileBytes(const DicomReadOptions& options);
// OK for a regular file within MaxDicomFileBytes; otherwise a DicomFileError
// (kMissing, or kMalformed naming the size and the limit).
absl::Status CheckDicomFileSize(const std::string& path, const DicomReadOptions& options);

// Reads and decodes `path` with DCMTK: native little/big endian (implicit or
// explicit VR), deflated, RLE, JPEG baseline/extended/lossless and JPEG-LS.
// What was wrong with a file, carried by ReadDicomImage's errors as data
// (DicomErrorOf), with the status code beside it:
enum class DicomProblem {
  kMissing,      // NotFound: no such file
  kMalformed,    // InvalidArgument: not DICOM, truncated, malformed, pixel data of the wrong size
  kNoImage,      // Unimplemented: valid, without pixel data (a structured report, an RT plan, a DICOMDIR)
  kUnsupported,  // Unimplemented: valid but unusable: JPEG 2000, video, colour when color_to_gray is off
};
struct DicomError {
  DicomProblem problem;
  std::string reason;  // without the file name, for counting
};

// Every error names the file in its message and carries its DicomError.
absl::StatusOr<DicomImageFile> ReadDicomImage(const std::string& path, const DicomReadOptions& options = {});

// An error about the file at `path` as ReadDicomImage makes them (for the
// loader's own reads of the same files).
absl::Status DicomFileError(DicomProblem problem, const std::string& path, absl::string_view reason);

// The problem and reason of a ReadDicomImage error; nullopt for any other status.
std::optional<DicomError> DicomErrorOf(const absl::Status& status);

// The reason ReadDicomImage gives a DICOM Segmentation object: its pixel
// data are labels of other images (node/dicom_seg.h reads them).
inline constexpr char kSegmentationObject[] = "a segmentation object (labels of other images; not an image itself)";

// The SOPClassUID of the DICOM file at `path`, from its first elements alone
// (parsing stops before SOPInstanceUID, so a file truncated later still
// answers); "" when it is not DICOM or names none.
std::string SopClassOfFile(const std::string& path);

// Writes `file` to `path` in explicit little endian through a temporary file
// renamed into place, so `path` is never half written; errors name it.
// `compress`: RLE Lossless (DCMTK's encoder; every viewer decodes it)
// instead of uncompressed explicit little endian.
absl::Status SaveDicomFile(DcmFileFormat& file, const std::string& path, bool compress = false);

// Registers DCMTK's decoders and silences its logger (problems come back as
// statuses instead). Idempotent and thread-safe; ReadDicomImage calls it.
void InitDcmtk();

// DicomErrorOf(status)->reason; the message of any other status.
std::string ReasonOf(const absl::Status& status);

// True for kNoImage: a DICOM object without pixel data.
bool IsNoImage(const absl::Status& status);

}  // namespace fedrad::node

#endif  // FEDRAD_NODE_DICOM_READER_H_

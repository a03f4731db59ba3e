#ifndef FEDRAD_COMMON_LOGGING_H_
#define FEDRAD_COMMON_LOGGING_H_

#include <string>

namespace fedrad {

// What every fedrad program does first: sets up spdlog's default logger on
// stderr ("2026-11-21 10:00:00.123 [program] info: ...") and turns off
// absl's mutex deadlock detection. Debian builds absl without NDEBUG, which
// leaves the detection on: every lock of every absl::Mutex (gRPC's too) then
// updates a global lock graph. Tests keep it on.
void InitProgram(const std::string& program, bool verbose);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_LOGGING_H_

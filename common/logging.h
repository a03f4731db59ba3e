#ifndef FEDRAD_COMMON_LOGGING_H_
#define FEDRAD_COMMON_LOGGING_H_

#include <string>

namespace fedrad {

// Sets up spdlog's default logger on stderr: "2026-11-21 10:00:00.123 [program] info: ...".
void InitLogging(const std::string& program, bool verbose);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_LOGGING_H_

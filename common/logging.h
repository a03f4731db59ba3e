#ifndef FEDRAD_COMMON_LOGGING_H_
#define FEDRAD_COMMON_LOGGING_H_

#include <string>
#include <string_view>

namespace fedrad {

// What every fedrad program does first: sets up spdlog's default logger on
// stderr ("2026-11-21 10:00:00.123 [program] info: ...") and turns off
// absl's mutex deadlock detection. Debian builds absl without NDEBUG, which
// leaves the detection on: every lock of every absl::Mutex (gRPC's too) then
// updates a global lock graph. Tests keep it on.
//
// Everything the program then writes to the terminal (the log, std::cout,
// std::cerr) passes through TerminalSafe: messages carry outside text (a
// model's metadata, a file's name, a ledger's strings), and an escape
// sequence in it must reach the operator's terminal as text, not as a
// command to it.
void InitProgram(const std::string& program, bool verbose);

// `text` with every control character but newline and tab written as text:
// C0 and DEL as \xNN, C1 (U+0080..U+009F in UTF-8, where U+009B opens a
// sequence as ESC [ does) as \u00NN. Other bytes, UTF-8 included, pass.
std::string TerminalSafe(std::string_view text);

// TerminalSafe over a stream of pieces: a C1 control split between two
// pieces is still escaped.
class TerminalSafeWriter {
 public:
  // The escaped bytes of the next piece (a pending 0xC2 is held back).
  std::string Next(std::string_view piece);
  // What is held back, at the end.
  std::string Finish();

 private:
  bool pending_c2_ = false;
};

}  // namespace fedrad

#endif  // FEDRAD_COMMON_LOGGING_H_

#include "common/logging.h"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <streambuf>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"

namespace fedrad {
namespace {

bool IsC0OrDel(unsigned char c) { return (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f; }

// The log on stderr, each formatted line made terminal-safe.
class TerminalSafeSink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    const std::string safe = TerminalSafe(std::string_view(formatted.data(), formatted.size()));
    std::fwrite(safe.data(), 1, safe.size(), stderr);
  }
  void flush_() override { std::fflush(stderr); }
};

// std::cout's and std::cerr's bytes, made terminal-safe on their way.
class TerminalSafeBuf final : public std::streambuf {
 public:
  explicit TerminalSafeBuf(std::streambuf* out) : out_(out) {}

 protected:
  int overflow(int c) override {
    if (c == traits_type::eof()) return traits_type::not_eof(c);
    const char ch = static_cast<char>(c);
    return xsputn(&ch, 1) == 1 ? c : traits_type::eof();
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    const std::string safe = writer_.Next(std::string_view(s, static_cast<size_t>(n)));
    return out_->sputn(safe.data(), static_cast<std::streamsize>(safe.size())) ==
                   static_cast<std::streamsize>(safe.size())
               ? n
               : 0;
  }
  int sync() override {
    // A held-back 0xC2 waits for its next byte; everything else is out.
    return out_->pubsync();
  }

 private:
  std::streambuf* out_;
  TerminalSafeWriter writer_;
};

}  // namespace

std::string TerminalSafeWriter::Next(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  for (char ch : piece) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (pending_c2_) {
      pending_c2_ = false;
      if (c >= 0x80 && c <= 0x9f) {
        absl::StrAppendFormat(&out, "\\u%04x", c);
        continue;
      }
      out.push_back('\xc2');
    }
    if (c == 0xc2) {
      pending_c2_ = true;
    } else if (IsC0OrDel(c)) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    } else {
      out.push_back(ch);
    }
  }
  return out;
}

std::string TerminalSafeWriter::Finish() {
  if (!pending_c2_) return "";
  pending_c2_ = false;
  return "\xc2";
}

std::string TerminalSafe(std::string_view text) {
  TerminalSafeWriter w;
  std::string out = w.Next(text);
  return out + w.Finish();
}

void InitProgram(const std::string& program, bool verbose) {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Never destroyed: the streams may be written to until the process ends.
  static TerminalSafeBuf* const out = new TerminalSafeBuf(std::cout.rdbuf());
  static TerminalSafeBuf* const err = new TerminalSafeBuf(std::cerr.rdbuf());
  std::cout.rdbuf(out);
  std::cerr.rdbuf(err);
  auto logger = std::make_shared<spdlog::logger>(program, std::make_shared<TerminalSafeSink>());
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e [%n] %l: %v");
  logger->set_level(verbose ? spdlog::level::debug : spdlog::level::info);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace fedrad

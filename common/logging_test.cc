#include "common/logging.h"

#include <gtest/gtest.h>

namespace fedrad {
namespace {

// An escape sequence in outside text (a model's metadata, a file name)
// reaches the terminal as text (issue 18, defect 8).
TEST(TerminalSafeTest, ControlCharactersBecomeTextAndTheRestPasses) {
  EXPECT_EQ(TerminalSafe("window=\x1b[2J\x1b]0;pwned\x07|resize"), "window=\\x1b[2J\\x1b]0;pwned\\x07|resize");
  EXPECT_EQ(TerminalSafe("a\x7f"
                         "b\rc"),
            "a\\x7fb\\x0dc");
  EXPECT_EQ(TerminalSafe("line one\n\tline two\n"), "line one\n\tline two\n");
  // C1 CSI (U+009B) as UTF-8, and NEL (U+0085); é, no-break space and
  // U+00A9 pass.
  EXPECT_EQ(TerminalSafe("x\xc2\x9b"
                         "31my\xc2\x85z"),
            "x\\u009b31my\\u0085z");
  EXPECT_EQ(TerminalSafe("caf\xc3\xa9 \xc2\xa0 \xc2\xa9"), "caf\xc3\xa9 \xc2\xa0 \xc2\xa9");
  EXPECT_EQ(TerminalSafe("end\xc2"), "end\xc2");
}

TEST(TerminalSafeTest, PiecesEscapeAsTheWholeDoes) {
  const std::string text = "p\xc2\x9bq\x1b[1mr\xc2\xa9s";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    TerminalSafeWriter w;
    std::string out = w.Next(std::string_view(text).substr(0, cut));
    out += w.Next(std::string_view(text).substr(cut));
    out += w.Finish();
    EXPECT_EQ(out, TerminalSafe(text)) << cut;
  }
}

}  // namespace
}  // namespace fedrad

#ifndef FEDRAD_COMMON_JSON_DEPTH_H_
#define FEDRAD_COMMON_JSON_DEPTH_H_

#include <string_view>

namespace fedrad {

// The nesting depth of a JSON text (objects and arrays), counted by a scan
// that never recurses, or -1 once it passes `limit`. Outside JSON (model
// headers, ledger bodies) is measured with this before it is parsed: the
// parser keeps its own stack, but walking, printing or comparing a value
// nested 100,000 levels deep recurses once per level and overflows the
// native stack, so such text must never become a value.
int JsonDepth(std::string_view text, int limit);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_JSON_DEPTH_H_

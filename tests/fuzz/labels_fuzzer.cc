// libFuzzer target for a site's labels.csv, as node.toml's [data] names it:
// any bytes are a table or a named error, with 2 classes by index and with
// 3 named classes.
#include <cstdint>

#include "node/dataset.h"
#include "tests/fuzz/fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fedrad::fuzz::WriteInput(data, size, "-labels.csv");
  absl::StatusOr<fedrad::node::LabelTable> by_index = fedrad::node::LoadLabels(path, 2);
  absl::StatusOr<fedrad::node::LabelTable> by_name = fedrad::node::LoadLabels(path, 3, {"normal", "benign", "tumour"});
  (void)by_index;
  (void)by_name;
  return 0;
}

// libFuzzer target for a site's labels.csv, as node.toml's [data] names it:
// any bytes are a table or a named error, with 2 classes by index and with
// 3 named classes; a refusal names its problem.
#include <cstdint>

#include "node/dataset.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fedrad::fuzz::WriteInput(data, size, "-labels.csv");
  fedrad::fuzz::ExpectOkOrNamed(fedrad::node::LoadLabels(path, 2));
  fedrad::fuzz::ExpectOkOrNamed(fedrad::node::LoadLabels(path, 3, {"normal", "benign", "tumour"}));
  return 0;
}

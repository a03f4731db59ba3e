# Source lists that two builds compile: the product's (each folder's
# CMakeLists.txt) and the fuzz build's (tests/fuzz/CMakeLists.txt, the same
# files with sanitizers). Paths are from the source root; listed once here so
# the two cannot drift apart.
set(FEDRAD_CRYPTO_SOURCES crypto/pki.cc crypto/random.cc crypto/secure_noise.cc crypto/sha256.cc)
# What a site reads and records without LibTorch (fedrad_site).
set(FEDRAD_SITE_SOURCES
  node/dataset.cc node/dicom_reader.cc node/dicom_rtstruct.cc node/dicom_seg.cc node/image_loader.cc node/label_cache.cc node/synthetic_ct.cc node/inspect.cc node/local_access.cc node/node_config.cc
  node/node_store.cc node/preprocess.cc node/privacy_budget.cc node/privacy_report.cc node/saved_model.cc
  node/site_policy.cc)
# The running sum, the strategies and their registry (fedrad_strategies).
set(FEDRAD_STRATEGY_SOURCES
  coordinator/fedavg.cc coordinator/strategy.cc coordinator/strategy_registry.cc
  coordinator/strategies/coordinate_wise.cc coordinator/strategies/fedavg.cc coordinator/strategies/fedopt.cc
  coordinator/strategies/krum.cc)
foreach(list FEDRAD_CRYPTO_SOURCES FEDRAD_SITE_SOURCES FEDRAD_STRATEGY_SOURCES)
  list(TRANSFORM ${list} PREPEND ${CMAKE_SOURCE_DIR}/)
endforeach()

#!/usr/bin/python3
"""The loader benchmark's pipeline in pydicom + NumPy, for comparison.

Same files, same steps as BM_LoaderDecodePreprocess: read the DICOM file,
apply RescaleSlope/Intercept, window 40/400 to [0, 1], area-resize 512x512 to
128x128 (a 4x4 block mean, which is what INTER_AREA computes for an integer
factor). Prints images per second over several passes after one warm-up pass.
"""
import glob
import os
import sys
import time

import numpy as np
import pydicom


def prepare(path):
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    low, width = 40.0 - 400.0 / 2, 400.0
    windowed = np.clip((hu - low) / width, 0.0, 1.0)
    rows, cols = windowed.shape
    f = rows // 128
    return windowed.reshape(128, f, 128, f).mean(axis=(1, 3))


def main():
    root = sys.argv[1]
    passes = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    files = sorted(glob.glob(os.path.join(root, "**", "*.dcm"), recursive=True))
    for path in files:  # warm-up: page cache and imports, as for the C++ run
        prepare(path)
    start = time.perf_counter()
    for _ in range(passes):
        for path in files:
            out = prepare(path)
            assert out.shape == (128, 128)
    elapsed = time.perf_counter() - start
    print(f"pydicom_numpy_images_per_second={passes * len(files) / elapsed:.1f} files={len(files)} "
          f"pydicom={pydicom.__version__} numpy={np.__version__}")


if __name__ == "__main__":
    main()

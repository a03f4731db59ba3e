#!/usr/bin/python3
"""Checks that a fedrad model file loads in PyTorch (python/fedrad_torch.py)
and gives what fedrad-node predict gave.

usage: python_export_check.py MODEL PREDICTIONS_CSV DATA_DIR

Prepares each DICOM file the CSV names as the model's "preprocessing"
metadata says (explicit window, "pad" resize by an integer factor, normalize
none or zscore; other pipelines are refused), runs the PyTorch module and
compares its softmax with the CSV's probabilities. Exit 0 when every row
agrees to 1e-4.
"""
import csv
import os
import re
import sys

import numpy as np
import pydicom
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import fedrad_torch  # noqa: E402


def prepare(path, steps, size):
    ds = pydicom.dcmread(path)
    values = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1)) + float(
        getattr(ds, "RescaleIntercept", 0))
    m = re.fullmatch(r"explicit\(([-\d.e+]+),([-\d.e+]+)\)", steps["window"])
    if not m:
        sys.exit(f"window {steps['window']} is not checked here")
    center, width = float(m.group(1)), float(m.group(2))
    x = np.clip((values - (center - width / 2)) / width, 0.0, 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        x = 1.0 - x
    rows, cols = x.shape
    if steps["resize"] != f"pad({size})" or rows != cols or rows % size:
        sys.exit(f"resize {steps['resize']} of {rows}x{cols} is not checked here")
    f = rows // size
    x = x.reshape(size, f, size, f).mean(axis=(1, 3))  # what INTER_AREA computes for an integer factor
    norm = steps.get("normalize")
    if norm == "zscore":
        x = (x - x.mean()) / max(float(x.std()), 1e-6)
    elif norm is not None:
        sys.exit(f"normalize {norm} is not checked here")
    if set(steps) - {"window", "resize", "normalize", "gray"}:
        sys.exit(f"pipeline steps {sorted(steps)} are not all checked here")
    return x.astype(np.float32)


def main():
    model_path, csv_path, data_dir = sys.argv[1:4]
    model, meta = fedrad_torch.load(model_path)
    size = int(meta["input_size"])
    steps = {}
    for step in meta["preprocessing"].split("|"):
        name, _, value = step.partition("=")
        steps[name] = value
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["error"]]
    classes = [k for k in rows[0] if k.startswith("p_")]
    batch = torch.from_numpy(np.stack([prepare(os.path.join(data_dir, r["path"]), steps, size) for r in rows]))
    with torch.no_grad():
        probabilities = torch.softmax(model(batch.unsqueeze(1)), 1).numpy()
    expected = np.array([[float(r[c]) for c in classes] for r in rows])
    worst = float(np.abs(probabilities - expected).max())
    print(f"{len(rows)} images, {meta['architecture']} round {meta.get('round', '-')}: "
          f"largest difference from fedrad-node predict {worst:.2e}")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Converts a PyTorch state_dict file into a fedrad model file (safetensors).

usage: convert_state_dict.py STATE_DICT OUT.safetensors --architecture A
           [--in-channels N] [--input-size S] [--num-classes K] [--base-width W]
           [--norm group|frozen_batch]

The state_dict (torch.save of a module's state_dict(), e.g. a torchvision
ResNet's) is checked against python/fedrad_torch.py's network of the same
shape: every parameter by name and shape. Buffers of BatchNorm layers
(running_mean, running_var, num_batches_tracked) are statistics, not
parameters of fedrad's GroupNorm networks, and are dropped with a note;
with --norm frozen_batch (a ResNet whose BatchNorm layers stay as their
pretrained per-channel affine maps, DP-safe) running_mean and running_var
are kept, and only num_batches_tracked is dropped. Any other name the
network lacks, or a parameter missing or of another shape, is an error
naming it. A classifier head of another class count is written as
it is: fedrad's [model] init re-initialises it for the plan's classes.

The output holds float32 tensors in the network's own order and the metadata
fedrad reads (architecture, task, in_channels, input_size, num_classes,
base_width), so `[model] init = "OUT.safetensors"` can start a federation
from it.
"""
import argparse
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedrad_torch  # noqa: E402

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def write_safetensors(path, tensors, metadata):
    """tensors: [(name, float32 tensor)] in order; metadata: {str: str}."""
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name, t in tensors:
        data = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("state_dict")
    ap.add_argument("out")
    ap.add_argument("--architecture", required=True, choices=sorted(fedrad_torch.ARCHITECTURES))
    ap.add_argument("--in-channels", type=int, default=1)
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--num-classes", type=int, default=2)
    ap.add_argument("--base-width", type=int, default=None)
    ap.add_argument("--norm", choices=["group", "frozen_batch"], default="group",
                    help="ResNets: GroupNorm, or the state_dict's BatchNorm layers kept frozen")
    args = ap.parse_args()
    if args.norm != "group" and args.architecture not in fedrad_torch.ResNet.BLOCKS:
        sys.exit(f"--norm {args.norm} applies only to resnet18 and resnet34")

    state = torch.load(args.state_dict, map_location="cpu")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        sys.exit(f"{args.state_dict}: not a state_dict (a dict of name -> tensor)")
    meta = {"architecture": args.architecture, "in_channels": str(args.in_channels),
            "input_size": str(args.input_size), "num_classes": str(args.num_classes),
            "task": "segmentation" if args.architecture == "unet2d" else "classification"}
    if args.base_width is not None:
        meta["base_width"] = str(args.base_width)
    if args.norm != "group":
        meta["norm"] = args.norm
    model = fedrad_torch.build(meta)
    head = {"resnet18": "fc.", "resnet34": "fc.", "unet2d": "head."}.get(args.architecture, "fc2.")
    # fedrad's tensors in its order: parameters, and a frozen BatchNorm's
    # statistics right after its weight and bias (as the C++ network registers them).
    wanted = list(model.state_dict().items())
    kept = {n for n, _ in wanted}
    dropped = sorted(k for k in state if k.rsplit(".", 1)[-1] in BUFFERS and k not in kept)
    problems, out = [], []
    for name, p in wanted:
        if name not in state:
            problems.append(f"missing: {name}")
            continue
        t = state[name]
        if tuple(t.shape) != tuple(p.shape) and not name.startswith(head):
            problems.append(f"of another shape: {name} ({tuple(t.shape)} in the file, {tuple(p.shape)} in the network)")
            continue
        out.append((name, t))
    problems += [f"not in the network: {k}" for k in sorted(state) if k not in kept and k not in dropped]
    if problems:
        sys.exit(f"{args.state_dict} does not fit {args.architecture}:\n  " + "\n  ".join(problems))
    if dropped:
        why = "not parameters of GroupNorm" if args.norm == "group" else "not used by a frozen BatchNorm"
        print(f"dropped {len(dropped)} BatchNorm statistics ({why}): {', '.join(dropped[:4])}"
              + (" ..." if len(dropped) > 4 else ""))
    write_safetensors(args.out, out, meta)
    print(f"wrote {args.out}: {len(out)} tensors, {sum(t.numel() for _, t in out)} values ({args.architecture})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""fedrad's networks in PyTorch, for loading a fedrad model file in Python.

A fedrad model is a .safetensors file: float32 tensors named as PyTorch names
a module's parameters ("conv1.weight", ...), and header metadata that says
what it is: architecture, task, in_channels, input_size, num_classes (and
for unet2d depth and base_width, for resnet18/34 base_width), class_names, round,
manifest_sha256 and preprocessing (how DICOM became the model's input, in the
order window -> resize -> denoise -> CLAHE -> normalize). The classes below
are the same networks as common/model_zoo_torch.cc, layer for layer:

    from safetensors import safe_open
    from safetensors.torch import load_file
    import fedrad_torch

    path = "global.safetensors"
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    model = fedrad_torch.build(meta)
    model.load_state_dict(load_file(path))
    model.eval()

`load(path)` does the same, and reads the file itself where the safetensors
package is not installed.
"""
import json
import struct

import torch
import torch.nn.functional as F
from torch import nn


class CtNet(nn.Module):
    """"ctnet": three conv blocks with GroupNorm and tanh, adaptive max pool, two linear layers."""

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 5, padding=2)
        self.norm1 = nn.GroupNorm(4, 16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, 32)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.norm3 = nn.GroupNorm(8, 32)
        self.fc1 = nn.Linear(32, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        x = F.max_pool2d(torch.tanh(self.norm1(self.conv1(x))), 2)
        x = F.max_pool2d(torch.tanh(self.norm2(self.conv2(x))), 2)
        x = torch.tanh(self.norm3(self.conv3(x)))
        x = F.adaptive_max_pool2d(x, 1)
        x = torch.tanh(self.fc1(x.flatten(1)))
        return self.fc2(x)


class TbCnn28(nn.Module):
    """"tbcnn28": the end-to-end CNN of Tramer & Boneh (ICLR 2021) for 28x28 images."""

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 8, stride=2, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 4, stride=2)
        self.fc1 = nn.Linear(32 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        x = F.max_pool2d(torch.tanh(self.conv1(x)), 2, stride=1)
        x = F.max_pool2d(torch.tanh(self.conv2(x)), 2, stride=1)
        x = torch.tanh(self.fc1(x.flatten(1)))
        return self.fc2(x)


def _groups(channels):
    return 8 if channels % 8 == 0 else 4


class _DoubleConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm1 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)

    def block(self, x):
        x = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(x)))


class _Up(_DoubleConv):
    def __init__(self, cout):
        super().__init__(2 * cout, cout)
        self.upconv = nn.Conv2d(2 * cout, cout, 3, padding=1)
        self.upnorm = nn.GroupNorm(_groups(cout), cout)


class UNet2d(nn.Module):
    """"unet2d": U-Net with GroupNorm and ReLU; nearest upsampling then a 3x3 convolution on the way up.

    Images [N, C, S, S] in, per-pixel class logits [N, classes, S, S] out.
    """

    def __init__(self, in_channels, num_classes, depth=3, base_width=16):
        super().__init__()
        w = base_width
        self.depth = depth
        self.down0 = _DoubleConv(in_channels, w)
        for d in range(1, depth + 1):
            setattr(self, f"down{d}", _DoubleConv(w << (d - 1), w << d))
        for d in range(depth - 1, -1, -1):
            setattr(self, f"up{d}", _Up(w << d))
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x):
        skips = []
        for d in range(self.depth + 1):
            if d > 0:
                x = F.max_pool2d(x, 2)
            x = getattr(self, f"down{d}").block(x)
            skips.append(x)
        for d in range(self.depth - 1, -1, -1):
            up = getattr(self, f"up{d}")
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = F.relu(up.upnorm(up.upconv(x)))
            x = up.block(torch.cat([skips[d], x], 1))
        return self.head(x)


def _resnet_groups(channels):
    return min(32, channels // 2)


class FrozenBatchNorm2d(nn.Module):
    """A pretrained BatchNorm as the fixed affine map it computes in eval mode (norm = "frozen_batch").

    weight and bias are parameters; running_mean and running_var are buffers
    (torchvision's names, so its state_dicts load as they are) that never
    change: batch statistics are never used, in training or not.
    """

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, 1e-5)


def _resnet_norm(channels, norm):
    if norm == "frozen_batch":
        return FrozenBatchNorm2d(channels)
    if norm != "group":
        raise ValueError(f"norm {norm!r} is not 'group' or 'frozen_batch'")
    return nn.GroupNorm(_resnet_groups(channels), channels)


class _Downsample(nn.Sequential):
    def __init__(self, cin, cout, stride, norm):
        super().__init__(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _resnet_norm(cout, norm))


class _BasicBlock(nn.Module):
    def __init__(self, cin, cout, norm):
        super().__init__()
        stride = 1 if cin == cout else 2
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _resnet_norm(cout, norm)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = _resnet_norm(cout, norm)
        self.downsample = _Downsample(cin, cout, stride, norm) if cin != cout else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """"resnet18" / "resnet34": He et al.'s basic-block ResNets, torchvision's parameter names.

    norm: "group" (GroupNorm) or "frozen_batch" (FrozenBatchNorm2d).
    """

    BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}

    def __init__(self, architecture, in_channels, num_classes, base_width=64, norm="group"):
        super().__init__()
        w = base_width
        self.conv1 = nn.Conv2d(in_channels, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = _resnet_norm(w, norm)
        cin = w
        for stage, n in enumerate(self.BLOCKS[architecture]):
            cout = w << stage
            blocks = []
            for _ in range(n):
                blocks.append(_BasicBlock(cin, cout, norm))
                cin = cout
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


ARCHITECTURES = {"ctnet": CtNet, "tbcnn28": TbCnn28, "unet2d": UNet2d, "resnet18": ResNet, "resnet34": ResNet}


def build(metadata):
    """The network a model file's metadata names, with fresh weights."""
    arch = metadata["architecture"]
    if arch not in ARCHITECTURES:
        raise ValueError(f"architecture {arch!r} has no PyTorch twin here (known: {', '.join(ARCHITECTURES)})")
    in_channels, classes = int(metadata.get("in_channels", 1)), int(metadata["num_classes"])
    if arch == "unet2d":
        return UNet2d(in_channels, classes, int(metadata.get("depth", 3)), int(metadata.get("base_width", 16)))
    if arch in ResNet.BLOCKS:
        return ResNet(arch, in_channels, classes, int(metadata.get("base_width", 64)), metadata.get("norm", "group"))
    return ARCHITECTURES[arch](in_channels, classes)


def read_safetensors(path):
    """(tensors, metadata) of a float32 safetensors file, without the safetensors package.

    Applies the checks the safetensors package applies when it opens a file
    (header a JSON object of string metadata; tensors, in offset order,
    contiguous from 0, each exactly its shape's size; nothing after the last),
    so a file that passes here opens there too.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too small for a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > 100_000_000 or 8 + n > len(data) or data[8:9] != b"{":
        raise ValueError(f"{path}: bad header length or start")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"{path}: metadata values must be strings")
    body = memoryview(data)[8 + n :]
    tensors = {}
    end_of_last = 0
    for name, t in sorted(header.items(), key=lambda item: item[1]["data_offsets"]):
        if t["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {t['dtype']}, fedrad writes F32")
        start, end = t["data_offsets"]
        elements = 1
        for d in t["shape"]:
            elements *= d
        if start != end_of_last or end - start != 4 * elements:
            raise ValueError(f"{path}: tensor {name} has invalid offsets")
        end_of_last = end
        tensors[name] = torch.frombuffer(bytearray(body[start:end]), dtype=torch.float32).reshape(t["shape"])
    if end_of_last != len(body):
        raise ValueError(f"{path}: the data does not end where the last tensor ends")
    return tensors, metadata


def load(path):
    """(model in eval mode, metadata) of a fedrad model file."""
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(path, framework="pt") as f:
            metadata = f.metadata()
        tensors = load_file(path)
    except ImportError:
        tensors, metadata = read_safetensors(path)
    model = build(metadata)
    model.load_state_dict(tensors)  # strict: every name and shape must match
    return model.eval(), metadata

"""Test fixtures for FID: a tiny random feature network, toy PNG sets and pytorch-fid's command line.
They live here, not in the library: `hvitgan.fid` ships only what a user runs."""
import os, subprocess, sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from hvitgan.core import make_generator, to_uint8


class TinyFeatureNet(nn.Module):
    "A seeded random conv net with the feature-network interface (`dims`, `source`), no weights needed."
    def __init__(self, dims: int = 64, seed: int = 0):
        super().__init__()
        g = make_generator(seed)
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, stride=2), nn.Conv2d(16, dims, 3, stride=2)
        with torch.no_grad():
            for p in self.parameters(): p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.dims, self.source = dims, f"tiny-random-{dims}-seed{seed}"
    def forward(self, img: torch.Tensor) -> torch.Tensor:  # uint8 [N, 3, H, W] -> [N, dims]
        x = img.float() / 127.5 - 1
        return self.conv2(F.gelu(self.conv1(x))).relu().mean((2, 3))


def tiny_feature_net(dims: int = 64, seed: int = 0) -> TinyFeatureNet:
    "A `TinyFeatureNet` in eval mode."
    return TinyFeatureNet(dims, seed).eval()


def toy_png_sets(n: int, seed: int = 0):
    "Two seeded sets of smooth 96 px uint8 images [n, 3, 96, 96] that differ in brightness."
    g = make_generator(seed)
    def smooth(shift): return F.interpolate(torch.rand(n, 3, 12, 12, generator=g), size=96, mode='bilinear') * 0.7 + shift
    return [to_uint8(smooth(s).clamp(0, 1) * 2 - 1) for s in (0., 0.25)]


def write_png_folder(images, folder) -> Path:
    "uint8 images [N, 3, H, W] as `00000.png`, ... in a new folder."
    folder = Path(folder); folder.mkdir(parents=True)
    for i, x in enumerate(images): Image.fromarray(x.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    return folder


def pytorch_fid_cli(dir1, dir2, dims: int, torch_home, timeout: float = 600.) -> float:
    "FID from `python -m pytorch_fid dir1 dir2 --dims dims` on the CPU, with the torch hub cache under `torch_home`."
    cmd = [sys.executable, '-m', 'pytorch_fid', str(dir1), str(dir2), '--dims', str(dims), '--device', 'cpu', '--num-workers', '0']
    r = subprocess.run(cmd, env={**os.environ, 'TORCH_HOME': str(torch_home)}, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0 and 'FID:' in r.stdout, f"pytorch_fid failed (exit {r.returncode}): {r.stderr[-2000:]}"
    return float(r.stdout.split('FID:')[-1])

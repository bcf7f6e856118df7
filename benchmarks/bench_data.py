"""Patches per second through a DataLoader: hvitgan.data.PCamH5 against torchvision.datasets.PCAM on the same file.

Builds a PCam-format HDF5 of a class-balanced subset of the real sample (../shared/data/pcam-sample) under the
gitignored data/ folder (reused on later runs), then reads it with the same shuffled sampler, batch size and number
of workers through both datasets and prints the rates and their ratio. torchvision's PCAM opens both HDF5 files for
every patch and goes through PIL; PCamH5 keeps one handle per worker and reads a whole batch per call
(`__getitems__`). Both yield uint8 [B, 3, 96, 96] batches (torchvision through `PILToTensor`).

usage: python benchmarks/bench_data.py [--n 4000] [--batch-size 64] [--workers 2] [--seconds 4] [--repeats 3]
"""
import argparse, os, statistics, sys, time
from pathlib import Path

os.environ.setdefault('OMP_NUM_THREADS', '1')
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import PCAM
from torchvision.transforms import PILToTensor

from hvitgan.core import DataError, cli_main, project_root, sample_root
from hvitgan.data import PCamFolder, PCamH5, balanced_subset, convert_to_h5, find_pcam_h5


class PerItem(Dataset):
    "`PCamH5` read one patch per call (no `__getitems__`): isolates the effect of batched reads."
    def __init__(self, ds): self.ds = ds
    def __len__(self): return len(self.ds)
    def __getitem__(self, i): return self.ds[i]


def build(root: Path, n: int, src=None, chunk_rows=1) -> Path:
    "The HDF5 file of `n` sample train patches under `root/pcam` (from `src`, else the sample), built once."
    found = find_pcam_h5(root, 'train')
    if found is not None and len(PCamH5(root, 'train')) == n: return root
    if src is None:
        sample = sample_root()
        if sample is None: raise DataError("PCam sample not found at ../shared/data/pcam-sample (set HVITGAN_DATA): nothing to benchmark")
        folder = PCamFolder(sample, 'train')
        src = Subset(folder, balanced_subset(folder.labels, n, seed=0))
    t = time.perf_counter()
    convert_to_h5(src, root / 'pcam', 'train', batch_size=256, overwrite=True, chunk_rows=chunk_rows, progress=False)
    print(f"built {root / 'pcam'} ({n} patches, chunk_rows={chunk_rows}) in {time.perf_counter() - t:.1f} s")
    return root


def rate(ds, batch_size: int, workers: int, seconds: float) -> float:
    "Patches per second over shuffled epochs lasting at least `seconds`, after a first batch that absorbs worker start-up."
    dl = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                    generator=torch.Generator().manual_seed(0))
    next(iter(dl))
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        for x, y in dl:
            assert x.dtype == torch.uint8 and x.shape[1:] == (3, 96, 96)
            n += len(x)
            if time.perf_counter() - t >= seconds: break
    return n / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=4000, help='sample patches in the benchmark file')
    ap.add_argument('--batch-size', type=int, default=64)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--seconds', type=float, default=4, help='duration of one timed run')
    ap.add_argument('--repeats', type=int, default=3, help='timed runs per reader (median reported)')
    ap.add_argument('--root', type=Path, default=project_root() / 'data' / 'bench', help='where the HDF5 file goes')
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    chunked = build(a.root / 'chunked', a.n)
    contiguous = build(a.root / 'contiguous', a.n, src=PCamH5(chunked, 'train'), chunk_rows=None)
    print(f"{a.n} patches, batch {a.batch_size}, workers {a.workers}, {a.seconds:g} s of shuffled epochs per run, "
          f"median of {a.repeats} runs, {os.cpu_count()} CPUs, torch {torch.__version__}")
    for layout, root in (('chunked (hvitgan default, 1 patch per chunk)', chunked), ('contiguous', contiguous)):
        print(f"== {root / 'pcam'}: {layout}")
        readers = {
            'torchvision.datasets.PCAM': PCAM(root, 'train', transform=PILToTensor(), download=False),
            'hvitgan PCamH5 (per item)': PerItem(PCamH5(root, 'train')),
            'hvitgan PCamH5 (batched)': PCamH5(root, 'train'),
        }
        rates = {}
        for name, ds in readers.items():
            runs = [rate(ds, a.batch_size, a.workers, a.seconds) for _ in range(a.repeats)]
            rates[name] = statistics.median(runs)
            print(f"{name:28s} {rates[name]:10.0f} patches/s   (runs: {', '.join(f'{r:.0f}' for r in runs)})")
        base = rates['torchvision.datasets.PCAM']
        for name in list(readers)[1:]: print(f"ratio {name} / torchvision: {rates[name] / base:.1f}x")


if __name__ == '__main__': cli_main(main, sys.argv[1:])

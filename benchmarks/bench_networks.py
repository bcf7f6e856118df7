"""Throughput of the HViTGAN networks (hvitgan.generator / hvitgan.discriminator).

Prints, for each named size: forward and forward+backward images/s of G and D, the fused (SDPA) against math attention
ratio in G, and (with --train-step) the seconds of one WGAN-GP D step (G forward without grad, D forward+backward on real and
fake, gradient penalty with a double backward) and one G step, with the implied minutes per 1000 real images.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_networks.py --sizes small --batch 12 --iters 3 --train-step
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_networks.py --sizes paper --batch 2 --iters 1
    .venv/bin/python benchmarks/bench_networks.py --device cuda --dtype bfloat16 --sizes small paper --batch 12 --iters 20
"""
from __future__ import annotations
import argparse, contextlib, platform, statistics, time

import torch

from hvitgan.discriminator import build_discriminator
from hvitgan.generator import build_generator, param_count


def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def _autocast(device, dtype):
    if dtype == torch.float32: return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def time_fn(fn, device, iters: int, warmup: int = 1) -> tuple[float, float]:
    "Median (wall seconds, CPU seconds of all threads) of `fn()` over `iters` runs after `warmup` runs."
    for _ in range(warmup): fn()
    _sync(device)
    times, cpu = [], []
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu)


def bench_size(size: str, device, dtype, batch: int, iters: int, train_step: bool, n_critic: int):
    gen = torch.Generator(device=device).manual_seed(0)
    torch.manual_seed(0)
    G = build_generator(size).to(device)
    D = build_discriminator(size).to(device)
    res = G.img_resolution
    z = torch.randn(batch, G.z_dim, device=device, generator=gen)
    c = torch.randint(0, G.c_dim, (batch,), device=device, generator=gen)
    real = torch.rand(batch, 3, res, res, device=device, generator=gen) * 2 - 1
    amp = lambda: _autocast(device, dtype)
    print(f"\n== size {size}: {res} px, G {param_count(G) / 1e6:.2f} M params, D {param_count(D) / 1e6:.2f} M params, "
          f"batch {batch}")

    def g_fwd():
        with torch.no_grad(), amp(): G(z, c)

    def g_fwd_bwd():
        with amp(): y = G(z, c)
        y.float().square().mean().backward()

    def d_fwd():
        with torch.no_grad(), amp(): D(real)

    def d_fwd_bwd():
        with amp(): scores, logits = D(real)
        (scores.float().mean() + logits.float().mean()).backward()

    rows = {}
    for name, fn in (('G forward', g_fwd), ('G forward+backward', g_fwd_bwd),
                     ('D forward', d_fwd), ('D forward+backward', d_fwd_bwd)):
        sec, cpu = time_fn(fn, device, iters)
        rows[name] = sec
        print(f"{name:28s} {batch / sec:9.2f} img/s   ({sec * 1e3:8.1f} ms / batch wall, {cpu:7.2f} CPU s)")

    # fused (torch SDPA) against math attention in G, same weights
    variants = {}
    for impl in ('sdpa', 'math'):
        G_impl = build_generator(size, attention=impl).to(device)
        G_impl.load_state_dict(G.state_dict())

        def fwd(G_impl=G_impl):
            with torch.no_grad(), amp(): G_impl(z, c)

        def fwd_bwd(G_impl=G_impl):
            with amp(): y = G_impl(z, c)
            y.float().square().mean().backward()

        variants[impl] = (time_fn(fwd, device, iters), time_fn(fwd_bwd, device, iters))
        del G_impl
    for j, name in enumerate(('G forward', 'G forward+backward')):
        (t_sdpa, c_sdpa), (t_math, c_math) = variants['sdpa'][j], variants['math'][j]
        print(f"{name + ', sdpa':28s} {batch / t_sdpa:9.2f} img/s | math {batch / t_math:9.2f} img/s | "
              f"speed-up of sdpa over math {t_math / t_sdpa:.2f}x wall, {c_math / c_sdpa:.2f}x CPU time")

    if not train_step: return
    opt_G = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.0, 0.99))
    opt_D = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.0, 0.99))

    def d_step():
        with torch.no_grad(), amp(): fake = G(z, c).clamp(-1, 1)
        with amp():
            rs, rl = D(real)
            fs, fl = D(fake)
        alpha = torch.rand(batch, 1, 1, 1, device=device, generator=gen)
        x_hat = (alpha * real + (1 - alpha) * fake.float()).requires_grad_(True)
        with amp(): hs, _ = D(x_hat)
        (grad,) = torch.autograd.grad(hs.float().sum(), x_hat, create_graph=True)
        gp = (grad.flatten(1).norm(dim=1) - 1).square().mean()
        cls = torch.nn.functional.cross_entropy(rl.float(), c) + torch.nn.functional.cross_entropy(fl.float(), c)
        loss = fs.float().mean() - rs.float().mean() + 10 * gp + cls
        opt_D.zero_grad(set_to_none=True)
        loss.backward()
        opt_D.step()

    def g_step():
        with amp():
            fake = G(z, c)
            fs, fl = D(fake)
        loss = -fs.float().mean() + torch.nn.functional.cross_entropy(fl.float(), c)
        opt_G.zero_grad(set_to_none=True)
        loss.backward()
        opt_G.step()

    d_sec, d_cpu = time_fn(d_step, device, iters)
    g_sec, g_cpu = time_fn(g_step, device, iters)
    steps_per_kimg = 1000 / batch
    for nc in sorted({n_critic, 1}):
        min_per_kimg = steps_per_kimg * (d_sec + g_sec / nc) / 60
        cpu_min = steps_per_kimg * (d_cpu + g_cpu / nc) / 60
        print(f"train step: D step (with GP) {d_sec:.3f} s, G step {g_sec:.3f} s wall -> n_critic {nc}: "
              f"{min_per_kimg:.1f} min per 1000 real images (CPU time: D {d_cpu:.2f} s, G {g_cpu:.2f} s, "
              f"{cpu_min:.1f} CPU-min per 1000 images)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sizes', nargs='+', default=['small', 'paper'], help="named sizes (hvitgan GENERATOR_SIZES / DISCRIMINATOR_SIZES)")
    p.add_argument('--batch', type=int, default=12, help="images per batch")
    p.add_argument('--iters', type=int, default=3, help="timed iterations (median reported) after one warm-up")
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16', 'float16'],
                   help="autocast dtype (float32: no autocast)")
    p.add_argument('--threads', type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument('--train-step', action='store_true', help="also time one D step with GP and one G step")
    p.add_argument('--n-critic', type=int, default=5, help="D steps per G step for the minutes-per-kimg figure")
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.threads: torch.set_num_threads(args.threads)
    card = torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, device {device} ({card}), dtype {args.dtype}, "
          f"threads {torch.get_num_threads()}, iters {args.iters}")
    for size in args.sizes: bench_size(size, device, dtype, args.batch, args.iters, args.train_step, args.n_critic)


if __name__ == '__main__':
    main()

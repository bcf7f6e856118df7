"""Training speed: seconds per D step, per G step, and training images/s for the `small` and `paper` presets.

Times the library's own `d_step` / `g_step` (DiffAugment, GP with double backward, class terms, sigmas, clipping,
Adam) on random real batches, so data loading is excluded. Average per D step includes the G step amortised over
n_critic D steps; images/s counts real images shown to D.

    OMP_NUM_THREADS=2 python benchmarks/bench_train.py --presets small paper --steps 3
    python benchmarks/bench_train.py --presets paper --device cuda --bf16 --tf32 --compile --steps 50   # GPU
"""
import argparse, functools, os, platform, time

import torch

from hvitgan.config import make_config
from hvitgan.core import Stats, make_generator
from hvitgan.diffaug import diff_augment
from hvitgan.generator import param_count
from hvitgan.losses import HViTGANLoss, get_scenario, make_loss_weights
from hvitgan.train import _sample_latents, build_networks, build_optimizers, d_step, g_step


def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def bench(preset, device, steps, warmup, bf16, tf32, compile_G, batch=None):
    "Mean seconds per D step and per G step of `preset` on `device`."
    kw = dict(device=device.type, bf16=bf16, tf32=tf32, compile_G=compile_G, **({'batch_size': batch} if batch else {}))
    cfg = make_config(preset, 'e', **kw)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    G, D = build_networks(cfg, device)
    wG, wD = (w.to(device) for w in make_loss_weights(get_scenario(cfg.scenario)))
    opt_G, opt_D = build_optimizers(cfg, G, D, wG, wD)
    G_fwd = torch.compile(G) if compile_G else G
    gen = make_generator(0, device)
    aug = functools.partial(diff_augment, policy=cfg.augment, generator=gen)
    loss = HViTGANLoss(D, get_scenario(cfg.scenario), wG, wD, aug, gp_weight=cfg.gp_weight, drift_weight=cfg.drift_weight, generator=gen)
    z_dim, B, R = G.init_kwargs['z_dim'], cfg.batch_size, cfg.img_resolution
    real = torch.rand(B, 3, R, R, generator=make_generator(1)).to(device) * 2 - 1  # [B, 3, R, R]
    real_c = torch.arange(B, device=device) % 2
    zgen, st = make_generator(2), Stats()
    t_d, t_g = [], []
    for i in range(warmup + steps):
        z, c = _sample_latents(cfg, z_dim, 2, zgen, device)
        _sync(device); t0 = time.perf_counter()
        d_step(cfg, G_fwd, D, loss, opt_D, wD, real, real_c, z, c, st, 'bench')
        _sync(device); t1 = time.perf_counter()
        g_step(cfg, G_fwd, G, D, loss, opt_G, wG, z, c, st, 'bench')
        _sync(device); t2 = time.perf_counter()
        if i >= warmup: t_d.append(t1 - t0); t_g.append(t2 - t1)
    d, g = sum(t_d) / len(t_d), sum(t_g) / len(t_g)
    per_d = d + g / cfg.n_critic
    return dict(preset=preset, device=str(device), batch=B, n_critic=cfg.n_critic, G_params=param_count(G), D_params=param_count(D),
                d=d, g=g, per_d=per_d, img_s=B / per_d)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--presets', nargs='+', default=['small', 'paper'])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--steps', type=int, default=3, help='timed iterations (one D step + one G step each)')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--batch', type=int, default=None, help="override the preset's batch size")
    p.add_argument('--bf16', action='store_true'); p.add_argument('--tf32', action='store_true'); p.add_argument('--compile', action='store_true')
    a = p.parse_args()
    device = torch.device(a.device)
    card = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads'
    print(f"torch {torch.__version__}; device {device} ({card}); dtype {'bf16 autocast' if a.bf16 else 'fp32'}; "
          f"tf32 {a.tf32}; compile G {a.compile}; steps {a.steps} after {a.warmup} warm-up")
    print(f"{'preset':8} {'batch':>5} {'n_crit':>6} {'G M':>6} {'D M':>6} {'s/D step':>9} {'s/G step':>9} {'s/D step avg':>12} {'img/s':>8}")
    for preset in a.presets:
        r = bench(preset, device, a.steps, a.warmup, a.bf16, a.tf32, a.compile, a.batch)
        print(f"{r['preset']:8} {r['batch']:5d} {r['n_critic']:6d} {r['G_params'] / 1e6:6.2f} {r['D_params'] / 1e6:6.2f} "
              f"{r['d']:9.4f} {r['g']:9.4f} {r['per_d']:12.4f} {r['img_s']:8.2f}")
        print(f"  G step / D step = {r['g'] / r['d']:.2f}; 500 epochs of 32,768 images at this speed: "
              f"{500 * 32768 / r['img_s'] / 3600:.1f} h")


if __name__ == '__main__':
    main()

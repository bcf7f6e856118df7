"""Training speed: ms per D step (G step amortised), images/s, host syncs and kernel launches per D step, achieved
TFLOP/s and its share of the card's bf16 peak, for eager, fused-D and CUDA-graph iterations.

Times `hvitgan.train.TrainStep.run` (one G forward for the n_critic fakes, n_critic D steps with DiffAugment, GP
double backward, class terms, sigmas, clipping and fused Adam, one G step, the EMA) on random real batches, so data
loading is excluded. One iteration shows n_critic batches to D; ms per D step = iteration time / n_critic.
Host syncs are counted with `HostSyncCounter` (reads of device values, device-to-host copies; Adam's host step
reads apart), kernel launches and FLOPs with the profiler and `torch.utils.flop_counter` over one iteration.

    OMP_NUM_THREADS=2 python benchmarks/bench_train.py --presets tiny --device cpu --steps 10
    python benchmarks/bench_train.py --presets paper small --device cuda --bf16 --tf32 --modes eager fused graphed
    OMP_NUM_THREADS=2 python benchmarks/bench_train.py --presets cpu --device cpu --no-profile --g-kwargs '{"windows": [null, 8, 8]}'
    OMP_NUM_THREADS=2 python benchmarks/bench_train.py --presets cpu --device cpu --no-profile --set gp_batch=8
"""
import argparse, copy, functools, json, platform, time, warnings

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from hvitgan.cli import _parse_set
from hvitgan.config import make_config
from hvitgan.core import make_generator
from hvitgan.diffaug import diff_augment
from hvitgan.generator import param_count
from hvitgan.losses import HViTGANLoss, get_scenario, make_loss_weights
from hvitgan.train import HostSyncCounter, TrainStep, build_networks, build_optimizers

MODES = {'eager': dict(), 'fused': dict(fused_d=True), 'graphed': dict(fused_d=True, cuda_graphs=True),
         'graphed-unfused': dict(cuda_graphs=True)}
BF16_PEAK_TFLOPS = {'H200': 989.4, 'H100': 989.4, 'A100': 312.0, 'L40S': 362.1, 'L4': 121.0}  # dense, vendor sheets


def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def _peak(device):
    if device.type != 'cuda': return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def make_step(preset, device, mode, bf16, tf32, batch=None, G_kwargs=None, overrides=None):
    "A TrainStep of `preset` in `mode` on `device` (`G_kwargs`: generator keywords replacing the preset's; `overrides`: other config fields), and endless random real batches."
    kw = {**dict(device=device.type, bf16=bf16, tf32=tf32, **MODES[mode]), **({'batch_size': batch} if batch else {}),
          **({'G_kwargs': G_kwargs} if G_kwargs else {}), **(overrides or {})}  # --set wins over the flags
    cfg = make_config(preset, 'e', **kw)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    G, D = build_networks(cfg, device)
    wG, wD = (w.to(device) for w in make_loss_weights(get_scenario(cfg.scenario)))
    opt_G, opt_D = build_optimizers(cfg, G, D, wG, wD)
    gen = make_generator(2, device)
    aug = functools.partial(diff_augment, policy=cfg.augment, generator=gen)
    loss = HViTGANLoss(D, get_scenario(cfg.scenario), wG, wD, aug, gp_weight=cfg.gp_weight, drift_weight=cfg.drift_weight, gp_batch=cfg.gp_batch, adv_loss=cfg.adv_loss, penalty=cfg.penalty,
                       generator=gen, fused=cfg.fused_d, d_cls_gen=cfg.d_cls_gen)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    step = TrainStep(cfg, G, G, D, G_ema, loss, opt_G, opt_D, wG, wD, make_generator(1), device, generators=[gen])
    B, R = cfg.batch_size, cfg.img_resolution
    real = (torch.rand(B, 3, R, R, generator=make_generator(1)).to(device) * 2 - 1, torch.arange(B, device=device) % 2)
    reals = iter(lambda: real, None)  # the same batch forever
    return cfg, step, reals, (G, D)


def bench(preset, device, mode, steps, warmup, bf16, tf32, batch=None, profile_kernels=True, G_kwargs=None, overrides=None):
    "ms per D step (amortised), img/s, host syncs, kernel launches and FLOPs per D step for one mode."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        cfg, step, reals, (G, D) = make_step(preset, device, mode, bf16, tf32, batch, G_kwargs, overrides)
        n = cfg.n_critic
        nimg = lambda k: k * n * cfg.batch_size
        for k in range(warmup): step.run(reals, nimg(k))   # graph warm-up and capture happen here
    _sync(device); t0 = time.perf_counter()
    for k in range(steps): step.run(reals, nimg(warmup + k))
    _sync(device); dt = (time.perf_counter() - t0) / steps
    with HostSyncCounter() as counter: step.run(reals, nimg(warmup + steps)); _sync(device)
    with FlopCounterMode(display=False) as flops: step.run(reals, nimg(warmup + steps + 1))
    launches = None
    if profile_kernels:
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
        with profile(activities=acts) as prof: step.run(reals, nimg(warmup + steps + 2)); _sync(device)
        ev = prof.events()
        launches = (sum(1 for e in ev if e.device_type == torch.autograd.DeviceType.CUDA) if device.type == 'cuda'
                    else sum(1 for e in ev if e.name.startswith('aten::')))  # CPU: ATen ops per iteration
    step.guard.check()
    per_d, fl = dt / n, flops.get_total_flops() / n
    peak = _peak(device)
    tflops = fl / per_d / 1e12
    return dict(preset=preset, mode=mode, batch=cfg.batch_size, n_critic=n, G_params=param_count(G), D_params=param_count(D),
                ms=1e3 * per_d, img_s=cfg.batch_size / per_d, syncs=counter.syncs / n, optim_reads=counter.optim_reads / n,
                h2d=counter.pageable_h2d / n, launches=None if launches is None else launches / n, gflop=fl / 1e9,
                tflops=tflops, peak=None if peak is None else tflops / peak, graphed=step.graph is not None,
                notes=[str(w.message) for w in caught if 'cuda_graphs' in str(w.message)])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--presets', nargs='+', default=['small', 'paper'])
    p.add_argument('--modes', nargs='+', default=['eager'], choices=list(MODES))
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--steps', type=int, default=5, help='timed iterations (n_critic D steps + one G step each)')
    p.add_argument('--warmup', type=int, default=4, help='untimed iterations first (graph warm-up and capture)')
    p.add_argument('--batch', type=int, default=None, help="override the preset's batch size")
    p.add_argument('--g-kwargs', type=json.loads, default=None, metavar='JSON',
                   help='generator keywords replacing the preset\'s, e.g. \'{"windows": [null, 8, 8]}\'')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', dest='overrides',
                   help="any other TrainConfig field, as for `hvitgan train`, e.g. --set gp_batch=8 (repeatable)")
    p.add_argument('--bf16', action='store_true'); p.add_argument('--tf32', action='store_true')
    p.add_argument('--no-profile', action='store_true', help='skip the kernel count (the profiler is slow on CPUs)')
    a = p.parse_args()
    device = torch.device(a.device)
    card = (torch.cuda.get_device_name(device) if device.type == 'cuda'
            else f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads')
    print(f"torch {torch.__version__}; device {device} ({card}); dtype {'bf16 autocast' if a.bf16 else 'fp32'}; "
          f"tf32 {a.tf32}; {a.steps} timed iterations after {a.warmup}")
    launch = 'kernels' if device.type == 'cuda' else 'aten ops'
    print(f"{'preset':7} {'mode':15} {'batch':>5} {'n_crit':>6} {'ms/D step':>10} {'img/s':>8} {'syncs/D':>8} "
          f"{launch + '/D':>13} {'GFLOP/D':>8} {'TFLOP/s':>8} {'of peak':>8}")
    for preset in a.presets:
        for mode in a.modes:
            t = time.time()
            r = bench(preset, device, mode, a.steps, a.warmup, a.bf16, a.tf32, a.batch, not a.no_profile, a.g_kwargs,
                      _parse_set(a.overrides))
            launches = '-' if r['launches'] is None else f"{r['launches']:.0f}"
            peak = '-' if r['peak'] is None else f"{100 * r['peak']:.2f}%"
            print(f"{r['preset']:7} {r['mode']:15} {r['batch']:5d} {r['n_critic']:6d} {r['ms']:10.2f} {r['img_s']:8.1f} "
                  f"{r['syncs']:8.2f} {launches:>13} {r['gflop']:8.2f} {r['tflops']:8.3f} {peak:>8}"
                  f"   ({time.time() - t:.0f} s{'; graphed' if r['graphed'] else ''}"
                  f"{'; optim host reads/D ' + format(r['optim_reads'], '.1f') if r['optim_reads'] else ''}"
                  f"{'; pageable H2D/D ' + format(r['h2d'], '.1f') if r['h2d'] else ''})")
            for note in r['notes']: print(f"    {note}")
    print("500 epochs of 32,768 images take 500 * 32768 / (img/s) / 3600 hours at these speeds")


if __name__ == '__main__':
    main()

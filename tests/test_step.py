"The training iteration of issue 11 against the old step (float64, CPU), its host syncs, lazy GP, and CUDA graphs."
import copy, functools, json, warnings

import pytest
import torch

from hvitgan.config import make_config
from hvitgan.core import Stats, make_generator
from hvitgan.data import make_fake_pcam
from hvitgan.diffaug import LABEL_SAFE_POLICY, diff_augment
from hvitgan.losses import HViTGANLoss, get_scenario, make_loss_weights
from hvitgan.train import (HostSyncCounter, TrainStep, _load_optimizer, _sample_latents, build_networks,
                           build_optimizers, d_step, ema_beta, g_step, training_loop, find_states)

N_ITER = 3


def _setup(cfg, dtype=torch.float64, device='cpu', old_adam=False):
    "Networks, weights, optimisers and the loss of `cfg`, seeded as training_loop seeds them, in `dtype`."
    torch.manual_seed(cfg.seed)
    G, D = build_networks(cfg, device)
    wG, wD = make_loss_weights(get_scenario(cfg.scenario))
    G, D, wG, wD = (m.to(device, dtype) for m in (G, D, wG, wD))
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    if old_adam:  # the optimiser of the old step: the default (for-loop) Adam
        kw = dict(betas=(cfg.beta1, cfg.beta2), foreach=False)
        opt_G = torch.optim.Adam([*G.parameters(), *wG.parameters()], lr=cfg.lr_G, **kw)
        opt_D = torch.optim.Adam([*D.parameters(), *wD.parameters()], lr=cfg.lr_D, **kw)
    else: opt_G, opt_D = build_optimizers(cfg, G, D, wG, wD)
    gen_aug = make_generator(cfg.seed + 2, device)
    aug = functools.partial(diff_augment, policy=cfg.augment, generator=gen_aug)
    cls_aug = functools.partial(diff_augment, policy=LABEL_SAFE_POLICY, generator=gen_aug) if cfg.cls_label_safe else None
    loss = HViTGANLoss(D, cfg.scenario, wG, wD, aug, gp_weight=cfg.gp_weight, drift_weight=cfg.drift_weight,
                       cls_augment=cls_aug, generator=gen_aug, fused=cfg.fused_d)
    G_fwd = lambda z, c: G(z.to(dtype), c)  # latents are drawn in float32, as in training
    return dict(G=G, G_fwd=G_fwd, D=D, G_ema=G_ema, wG=wG, wD=wD, opt_G=opt_G, opt_D=opt_D, loss=loss, gen_aug=gen_aug,
                gen_z=make_generator(cfg.seed + 1))


def _reals(cfg, n, dtype=torch.float64, device='cpu'):
    g = make_generator(99)
    R = cfg.img_resolution
    return [(torch.rand(cfg.batch_size, 3, R, R, generator=g, dtype=dtype).to(device) * 2 - 1,
             torch.randint(0, 2, (cfg.batch_size,), generator=g).to(device)) for _ in range(n)]


def _old_iterations(cfg, s, reals):
    "The loop body before issue 11: a G forward in every D step, latents drawn per step, per-parameter EMA."
    stats, it = Stats(), iter(reals)
    for k in range(N_ITER):
        cur_nimg = k * cfg.n_critic * cfg.batch_size
        for i in range(cfg.n_critic):
            real_img, real_c = next(it)
            z, c = _sample_latents(cfg, s['G'].init_kwargs['z_dim'], 2, s['gen_z'], 'cpu')
            old = Stats()
            d_step(cfg, s['G_fwd'], s['D'], s['loss'], s['opt_D'], s['wD'], real_img, real_c, z, c, old)
            for name, v in old.as_dict().items(): stats.report(name, v)
        z, c = _sample_latents(cfg, s['G'].init_kwargs['z_dim'], 2, s['gen_z'], 'cpu')
        old = Stats()
        g_step(cfg, s['G_fwd'], s['G'], s['D'], s['loss'], s['opt_G'], s['wG'], z, c, old)
        for name, v in old.as_dict().items(): stats.report(name, v)
        beta = ema_beta(cfg, cur_nimg)
        with torch.no_grad():
            for p_ema, p in zip(s['G_ema'].parameters(), s['G'].parameters()): p_ema.lerp_(p.detach(), 1 - beta)
    return stats.as_dict()


def _new_iterations(cfg, s, reals):
    step = TrainStep(cfg, s['G'], s['G_fwd'], s['D'], s['G_ema'], s['loss'], s['opt_G'], s['opt_D'], s['wG'], s['wD'],
                     s['gen_z'], next(s['G'].parameters()).device, generators=[s['gen_aug']])
    it = iter(reals)
    for k in range(N_ITER): step.run(it, k * cfg.n_critic * cfg.batch_size)
    step.guard.check()
    return step.stats.as_dict(), step


def _assert_close_states(a, b, rtol=1e-9, atol=1e-10):
    for k in ['G', 'D', 'G_ema', 'wG', 'wD']:
        for (n, x), y in zip(a[k].state_dict().items(), b[k].state_dict().values()):
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=lambda m: f"{k}.{n}: {m}")


def _assert_close_stats(a, b, rtol=1e-7):
    assert a.keys() == b.keys()
    for k in a: assert a[k] == pytest.approx(b[k], rel=rtol, abs=1e-9), k


@pytest.mark.parametrize('overrides', [dict(), dict(scenario='b', cls_label_safe=True), dict(grad_clip=0.)])
def test_iteration_equals_old_step_float64(overrides):
    "TrainStep (one G forward for n_critic D steps, device-side stats, foreach EMA) == the old loop body, float64, to rounding."
    cfg = make_config('tiny', n_critic=3, **overrides)
    reals = _reals(cfg, N_ITER * cfg.n_critic)
    old, new = _setup(cfg, old_adam=True), _setup(cfg)
    stats_old = _old_iterations(cfg, old, reals)
    stats_new, _ = _new_iterations(cfg, new, reals)
    _assert_close_states(old, new)
    _assert_close_stats(stats_old, stats_new)
    assert torch.equal(old['gen_z'].get_state(), new['gen_z'].get_state())  # the same latent draws
    assert torch.equal(old['gen_aug'].get_state(), new['gen_aug'].get_state())  # the same augmentation/GP draws


def test_fused_d_equals_unfused_float64():
    "fused_d: one D call on reals, fakes and interpolates gives the unfused iteration, to rounding."
    cfg = make_config('tiny', n_critic=2)
    reals = _reals(cfg, N_ITER * cfg.n_critic)
    a, b = _setup(cfg), _setup(make_config('tiny', n_critic=2, fused_d=True))
    sa, _ = _new_iterations(cfg, a, reals)
    sb, _ = _new_iterations(make_config('tiny', n_critic=2, fused_d=True), b, reals)
    _assert_close_states(a, b)
    _assert_close_stats(sa, sb)


def test_fused_adam_loads_an_old_state():
    "A state saved by the default Adam resumes into the fused one: flags kept, the step count moved, the same update (float64)."
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    cfg = make_config('tiny')
    old = torch.optim.Adam([p], lr=cfg.lr_D, betas=(cfg.beta1, cfg.beta2), foreach=False)
    for _ in range(3): p.grad = torch.randn(5, dtype=torch.float64); old.step()
    saved = copy.deepcopy(old.state_dict())  # as read back from a file: no tensor shared with `old`
    new = torch.optim.Adam([p], lr=cfg.lr_D, betas=(cfg.beta1, cfg.beta2), fused=True)  # build_optimizers' GPU choice
    _load_optimizer(new, saved)
    assert new.param_groups[0]['fused'] and not new.param_groups[0]['capturable']
    assert new.state[p]['step'].dtype == torch.float32 and float(new.state[p]['step']) == 3
    p.grad, start = torch.randn(5, dtype=torch.float64), p.detach().clone()
    new.step(); stepped_new = p.detach().clone()
    with torch.no_grad(): p.copy_(start)
    old.step()
    torch.testing.assert_close(stepped_new, p.detach(), rtol=1e-12, atol=1e-15)


def test_lazy_gp_every_k(monkeypatch):
    "gp_every=2: the GP on every other D step, weighted 2; the iteration stays equal to the calls it makes."
    cfg = make_config('tiny', n_critic=2, gp_every=2)
    scales, d_loss = [], HViTGANLoss.d_loss
    def spy(self, *a, gp_scale=1., **kw):
        scales.append(gp_scale); return d_loss(self, *a, gp_scale=gp_scale, **kw)
    monkeypatch.setattr(HViTGANLoss, 'd_loss', spy)
    s = _setup(cfg)
    stats, _ = _new_iterations(cfg, s, _reals(cfg, N_ITER * cfg.n_critic))
    assert scales == [2., 0.] * N_ITER
    assert {'Loss/D/gp', 'Loss/D/gp_norm'} <= set(stats)  # averaged over the GP steps only
    scales.clear()
    _new_iterations(make_config('tiny', n_critic=2), _setup(make_config('tiny', n_critic=2)), _reals(cfg, N_ITER * 2))
    assert scales == [1.] * (2 * N_ITER)  # the default: every step, unscaled


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return str(make_fake_pcam(tmp_path_factory.mktemp('pcam'), n_per_class=8))


def test_training_has_no_host_syncs_in_the_step(data, tmp_path, monkeypatch):
    "A tiny CPU run under HostSyncCounter: no sync inside the iterations, well under one per D step from the first one on."
    cfg = make_config('tiny', data=data, total_kimg=0.064, kimg_per_tick=0.032)
    inside, whole, run = HostSyncCounter(), HostSyncCounter(), TrainStep.run
    def counted(self, *a, **kw):
        if not whole.started: whole.started = True; whole.__enter__()  # count the ticks too, not the set-up
        with inside: return run(self, *a, **kw)
    monkeypatch.setattr(TrainStep, 'run', counted)
    whole.started = False
    try: training_loop(cfg, tmp_path / 'run', progress=False, max_minutes=60.)
    finally: whole.__exit__(None, None, None)
    d_steps = cfg.total_nimg // cfg.batch_size
    assert inside.syncs == 0, inside.where
    assert inside.pageable_h2d == 0
    # left out of the count: the CPU's default Adam reads its host-side step count (a CPU tensor, no device sync)
    assert inside.optim_reads > 0
    assert whole.syncs / d_steps < 0.25, (whole.syncs, d_steps, whole.where)  # the tick's reads only
    print(f"host syncs: {inside.syncs} in {d_steps} D steps; {whole.syncs} with the {2} ticks: {whole.where}")
    recs = [json.loads(l) for l in (tmp_path / 'run' / 'stats.jsonl').read_text().splitlines()]
    assert len(recs) == 2 and all(r['Loss/D/gp'] == r['Loss/D/gp'] for r in recs)


def test_cuda_graphs_fall_back_on_cpu(data, tmp_path):
    "cuda_graphs=True on the CPU trains eagerly, says why in one warning line, and gives the eager run bitwise."
    kw = dict(data=data, total_kimg=0.016, deterministic=True)
    with pytest.warns(UserWarning, match=r'^cuda_graphs: training eagerly: the device is cpu, not cuda$'):
        training_loop(make_config('tiny', cuda_graphs=True, **kw), tmp_path / 'graphs', progress=False)
    training_loop(make_config('tiny', **kw), tmp_path / 'eager', progress=False)
    a, b = [torch.load(find_states(tmp_path / r)[-1], weights_only=True) for r in ('graphs', 'eager')]
    for k in ['G', 'D', 'G_ema']:
        for n in a[k]: assert torch.equal(a[k][n], b[k][n]), f"{k}.{n}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (CUDA-graph capture)')
@pytest.mark.parametrize('gp_every', [1, 2])
def test_cuda_graph_equals_eager(gp_every):
    "The graphed iteration (after its eager warm-up) gives the eager iterations' networks, stats and RNG states."
    cfg = make_config('tiny', n_critic=2, gp_every=gp_every, device='cuda')
    cfg_g = make_config('tiny', n_critic=2, gp_every=gp_every, device='cuda', cuda_graphs=True)
    n_iter = 6
    reals = _reals(cfg, n_iter * cfg.n_critic, torch.float32, 'cuda')
    def go(c):
        s = _setup(c, torch.float32, 'cuda')
        step = TrainStep(c, s['G'], s['G_fwd'], s['D'], s['G_ema'], s['loss'], s['opt_G'], s['opt_D'], s['wG'], s['wD'],
                         s['gen_z'], 'cuda', generators=[s['gen_aug']])
        it = iter(reals)
        with warnings.catch_warnings(): warnings.simplefilter('error'); [step.run(it, k * 8) for k in range(n_iter)]
        step.guard.check()
        return s, step
    (a, sa), (b, sb) = go(cfg), go(cfg_g)
    assert sb.graph is not None and sb.eager_iters < n_iter
    _assert_close_states(a, b, rtol=1e-4, atol=1e-5)
    _assert_close_stats(sa.stats.as_dict(), sb.stats.as_dict(), rtol=1e-3)
    assert torch.equal(a['gen_aug'].get_state(), b['gen_aug'].get_state())
    with HostSyncCounter() as counter: sb.run(iter(reals[:2]), 0)
    assert counter.syncs == 0 and counter.pageable_h2d == 0, counter.where

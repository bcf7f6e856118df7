"Exact resume in a fresh process, refused resumes, non-finite losses, and the speed switches (tiny preset, CPU)."
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch

from hvitgan.config import make_config
from hvitgan.core import ConfigError
from hvitgan.data import make_fake_pcam
from hvitgan.losses import HViTGANLoss
from hvitgan.train import NonFiniteLossError, find_states, training_loop

SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from hvitgan.config import make_config
from hvitgan.train import training_loop
training_loop(make_config('tiny', **json.loads(sys.argv[1])), sys.argv[2], resume=sys.argv[3], progress=False)
"""

def train_in_fresh_process(overrides: dict, run_dir, resume='auto'):
    "Run `training_loop` in a new Python process (nothing shared with this one)."
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-c', SCRIPT, json.dumps(overrides), str(run_dir), resume],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]

def assert_same_state(a: dict, b: dict):
    "Bitwise equality of every tensor in two training states (networks, EMA, sigmas, optimisers, RNG)."
    for k in ['G', 'D', 'G_ema', 'weights_G', 'weights_D']:
        assert a[k].keys() == b[k].keys()
        for n in a[k]: assert torch.equal(a[k][n], b[k][n]), f"{k}.{n} differs"
    for k in ['opt_G', 'opt_D']:
        for i, s in a[k]['state'].items():
            for n, v in s.items(): assert torch.equal(v, b[k]['state'][i][n]), f"{k}.state[{i}].{n} differs"
    assert (a['cur_nimg'], a['data_pos']) == (b['cur_nimg'], b['data_pos'])
    assert torch.equal(a['rng']['gen_z'], b['rng']['gen_z'])

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return str(make_fake_pcam(tmp_path_factory.mktemp('pcam'), n_per_class=8))

@pytest.mark.parametrize('first, second', [({}, {}),
                                           ({'reuse_fakes': True}, {'reuse_fakes': True}),
                                           ({}, {'preload': True}),  # preloading resumes the loader's sequence
                                           ({'lr_sigma': 1e-2}, {'lr_sigma': 1e-2})],  # the sigmas' own Adam group
                         ids=['default', 'reuse_fakes', 'preload_on_resume', 'lr_sigma'])
def test_exact_resume_fresh_process(data, tmp_path, first, second):
    "N steps straight == N/2 steps, save, load in a fresh process, N/2 more: bitwise on CPU."
    full = dict(data=data, total_kimg=0.064, kimg_per_tick=0.016, deterministic=True)
    train_in_fresh_process({**full, **first}, tmp_path / 'straight', 'none')
    train_in_fresh_process({**full, **first, 'total_kimg': 0.032}, tmp_path / 'halves', 'none')
    train_in_fresh_process({**full, **second}, tmp_path / 'halves', 'auto')
    a, b = [torch.load(find_states(tmp_path / r)[-1], weights_only=True) for r in ('straight', 'halves')]
    assert a['cur_nimg'] == 64
    assert_same_state(a, b)
    # the resumed run's log has one line per tick, no duplicates
    ticks = [json.loads(l)['tick'] for l in (tmp_path / 'halves' / 'stats.jsonl').read_text().splitlines()]
    assert ticks == [1, 2, 3, 4]

def test_exact_resume_with_lr_rampdown(data, tmp_path):
    "The rampdown is a function of the images shown: halves (full rate, then the rampdown on resume) == straight, bitwise."
    full = dict(data=data, total_kimg=0.064, kimg_per_tick=0.016, deterministic=True, lr_rampdown=0.5)
    train_in_fresh_process(full, tmp_path / 'straight', 'none')
    train_in_fresh_process({**full, 'total_kimg': 0.032, 'lr_rampdown': 0.0}, tmp_path / 'halves', 'none')  # full rate, as straight's first half
    train_in_fresh_process(full, tmp_path / 'halves', 'auto')
    a, b = [torch.load(find_states(tmp_path / r)[-1], weights_only=True) for r in ('straight', 'halves')]
    assert_same_state(a, b)
    # the last iteration starts at 56 of 64 images: 1 - 56/64 = 1/8 of the run left over a rampdown of 1/2, so a quarter of 1e-4
    assert [g['lr'] for g in a['opt_G']['param_groups']] == pytest.approx([2.5e-5])

def test_resume_different_architecture_refused(data, tmp_path):
    training_loop(make_config('tiny', data=data, total_kimg=0.016), tmp_path, progress=False)
    with pytest.raises(ConfigError, match='architecture differs.*G_kwargs'):
        training_loop(make_config('tiny', data=data, total_kimg=0.032, G_kwargs={'dim': 64}), tmp_path, progress=False)
    with pytest.raises(ConfigError, match='lr_G'):
        training_loop(make_config('tiny', data=data, total_kimg=0.032, lr_G=3e-4), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="resume='auto'"):
        training_loop(make_config('tiny', data=data), tmp_path, resume='none', progress=False)

def test_non_finite_loss_stops_and_keeps_last_good_state(data, tmp_path, monkeypatch):
    "A NaN injected into the GP term at the 7th D step stops the run naming the term and step."
    calls, d_loss = [0], HViTGANLoss.d_loss
    def nan_at_7(self, *a, **kw):
        total, terms = d_loss(self, *a, **kw)
        calls[0] += 1
        if calls[0] == 7: terms = {**terms, 'Loss/D/gp': torch.tensor(float('nan'))}; total = total * float('nan')
        return total, terms
    monkeypatch.setattr(HViTGANLoss, 'd_loss', nan_at_7)
    with pytest.raises(NonFiniteLossError, match=r'Loss/D/gp = nan at D step 6 .*last good training state is .*training-state-000000.pt'):
        training_loop(make_config('tiny', data=data, kimg_per_tick=0.008), tmp_path, progress=False)
    state = torch.load(find_states(tmp_path)[-1], weights_only=True)
    assert state['cur_nimg'] == 24  # the state of the last completed tick, before the bad step
    assert all(torch.isfinite(v).all() for v in state['G'].values())
    assert all(torch.isfinite(v).all() for v in state['D'].values())

@pytest.mark.skipif(not os.environ.get('HVITGAN_SLOW'), reason="slow: inductor's C++ compile of G and its backward took "
                    "682 s on the shared 2-core machine (4 min CPU); run with HVITGAN_SLOW=1")
def test_compile_G_trains(data, tmp_path):
    "torch.compile of G (a GPU speed switch) trains on CPU; one tick only (compilation dominates)."
    training_loop(make_config('tiny', data=data, compile_G=True, total_kimg=0.008, kimg_per_tick=0.008), tmp_path, progress=False)
    state = torch.load(find_states(tmp_path)[-1], weights_only=True)
    assert state['config']['compile_G'] and all(torch.isfinite(v).all() for v in state['G'].values())
    assert not any(k.startswith('_orig_mod') for k in state['G'])  # the plain module's state is saved

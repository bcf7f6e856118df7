"Two gloo processes on CPU (torchrun, or started by `run_training`): identical weights on both ranks, equal to one process at the same global batch."
import json, os, subprocess, sys, tempfile
from pathlib import Path

import pytest
import torch

from hvitgan.config import make_config
from hvitgan.core import ConfigError
from hvitgan.data import make_fake_pcam
from hvitgan.train import find_states, run_training

SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from pathlib import Path
from hvitgan.config import make_config
from hvitgan.core import get_rank
from hvitgan.train import training_loop, find_states, finish_distributed
import os
cfg, run, out = make_config('tiny', **json.loads(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3])
# every rank reports what it holds (the library itself writes only on rank 0)
sd = lambda nets: {k: {n: v.detach().clone() for n, v in m.state_dict().items()} for k, m in nets.items()}
training_loop(cfg, run, progress=False, on_done=lambda nets: torch.save(sd(nets), out / f'rank{get_rank()}.pt'))
finish_distributed(); sys.stdout.flush(); os._exit(0)
"""

def _run(tmp_path, name, overrides, nproc):
    script, out = tmp_path / 'ddp_script.py', tmp_path / name
    script.write_text(SCRIPT); out.mkdir()
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc-per-node={nproc}'] if nproc > 1 else [sys.executable]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'TMPDIR': str(tmp_path)}  # torchrun's torchelastic_* folders stay in tmp_path
    r = subprocess.run([*launcher, str(script), json.dumps(overrides), str(out / 'run'), str(out)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return [torch.load(out / f'rank{i}.pt', weights_only=True) for i in range(nproc)]

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return str(make_fake_pcam(tmp_path_factory.mktemp('pcam'), n_per_class=8))

def test_two_ranks_identical_with_full_loss(data, tmp_path):
    "Default tiny loss (DiffAugment, GP, drift, sigmas) with a D_ema: both ranks hold bitwise identical weights, sigmas and averages."
    r0, r1 = _run(tmp_path, 'ddp', dict(data=data, total_kimg=0.024, kimg_per_tick=0.008, d_ema_kimg=0.01), nproc=2)
    assert 'D_ema' in r0, sorted(r0)
    for k in r0:
        for n in r0[k]: assert torch.equal(r0[k][n], r1[k][n]), f"{k}.{n} differs between ranks"
    assert any(n for n in r0['weights_D']), "scenario e has D-side sigmas"
    assert (tmp_path / 'ddp' / 'run' / 'stats.jsonl').exists()

def test_two_ranks_match_one_process(data, tmp_path):
    "Same global batch on 1 and 2 processes gives the same weights within float tolerance."
    # Per-sample randomness (DiffAugment, GP alpha) is drawn per rank and the drift term is a squared batch mean,
    # so they are switched off here; latents, labels and real batches are global draws sliced per rank.
    kw = dict(data=data, total_kimg=0.024, kimg_per_tick=0.008, augment='', gp_weight=0., drift_weight=0.)
    # Tolerance: the all-reduced gradient equals the 1-process gradient up to summation order, but Adam's first
    # steps normalise each element (update ~ lr * g / (|g| + eps)), so elements whose gradient is at rounding level
    # can move by up to ~lr differently at each of the run's Adam steps. Measured: max 6.5e-5 on an Intel AMX CPU,
    # 4.9e-4 on an AVX2-only AMD EPYC (6 D steps: under 6 lr).
    one, = _run(tmp_path, 'one', kw, nproc=1)
    two, _ = _run(tmp_path, 'two', kw, nproc=2)
    diff = {f'{k}.{n}': (two[k][n] - one[k][n]).abs() for k in one for n in one[k]}
    worst = max(diff, key=lambda n: diff[n].max())
    steps, lr = round(kw['total_kimg'] * 1000) // 4, 1e-4  # D steps at the tiny preset's batch of 4; its learning rate
    assert diff[worst].max() < steps * lr, f"{worst}: max difference {diff[worst].max():.3g} exceeds one lr per Adam step"
    mean = sum(d.sum() for d in diff.values()) / sum(d.numel() for d in diff.values())
    assert mean < lr / 4, f"mean absolute difference {mean:.3g}"  # measured 1.1e-7 (Intel AMX), 1.1e-5 (AVX2 AMD EPYC)
    for n in one['weights_D']: torch.testing.assert_close(two['weights_D'][n], one['weights_D'][n], rtol=0, atol=1e-6)

needs_two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="run_training starts at most one process per core")

@needs_two_cores
def test_run_training_starts_cpu_procs(data, tmp_path, monkeypatch):
    "`cpu_procs=2` on the CPU: `run_training` itself starts two processes, which save one RNG state each and one run."
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # torch.multiprocessing's error files
    cfg = make_config('tiny', data=data, total_kimg=0.016, kimg_per_tick=0.008, cpu_procs=2, device='cpu', gp_batch=2)
    run = run_training(cfg, tmp_path / 'run', progress=False)
    state = torch.load(find_states(run)[-1], weights_only=True)
    assert len(state['rng']['ranks']) == 2 and state['cur_nimg'] == 16
    assert [json.loads(l)['tick'] for l in (run / 'stats.jsonl').read_text().splitlines()] == [1, 2]

@needs_two_cores
def test_run_training_raises_the_process_error(data, tmp_path, monkeypatch):
    "An `HvitganError` in a started process reaches the caller as the same class with its message."
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    cfg = make_config('tiny', data=data, cpu_procs=2, device='cpu', gp_batch=3)  # 3 GP rows cannot be split over 2 processes
    with pytest.raises(ConfigError, match="'gp_batch': 3 is not divisible by 2 processes"):
        run_training(cfg, tmp_path / 'run', progress=False)

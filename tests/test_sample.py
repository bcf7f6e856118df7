"Tests of hvitgan.sample: truncation, generation, selective augmentation, snapshots and synthetic sets."
import json, math

import numpy as np
import pytest
import torch
from torch import nn

from hvitgan.core import CheckpointError, ConfigError, DataError, from_uint8, make_generator
from hvitgan.data import PCamFolder, open_pcam
from hvitgan.discriminator import build_discriminator
from hvitgan.generator import build_generator
from hvitgan.sample import (QuotaError, SampleConfig, file_sha256, generate, load_snapshot, sample_images, select_mask,
                            selective_generate, synthesize, truncated_normal, write_synthetic)

torch.set_num_threads(1)
Phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))


class ToyG(nn.Module):
    "Constant image of value z[:, 0] + 0.3 (2c - 1)."
    def __init__(self, z_dim=4, img_resolution=4):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution = z_dim, 2, img_resolution
        self.init_kwargs = dict(z_dim=z_dim, c_dim=2, img_resolution=img_resolution)
        self.w = nn.Parameter(torch.ones(()))
    def forward(self, z, c):
        v = self.w * z[:, 0] + 0.3 * (2 * c.float() - 1)
        return v[:, None, None, None].expand(-1, 3, self.img_resolution, self.img_resolution)


class ToyD(nn.Module):
    "Class head with p1 = (1 + mean(img)) / 2."
    def __init__(self): super().__init__(); self.w = nn.Parameter(torch.zeros(()))
    @torch.no_grad()
    def predict_proba(self, img):
        p1 = (1 + img.clamp(-1, 1).mean((1, 2, 3))) / 2
        return torch.stack([1 - p1, p1], 1)


@pytest.fixture
def tiny_snapshot(tmp_path):
    torch.manual_seed(0)
    G, D = build_generator('tiny'), build_discriminator('tiny')
    snap = dict(G_ema=G.state_dict(), D=D.state_dict(), G_kwargs=G.init_kwargs, D_kwargs=D.init_kwargs,
                config={'scenario': 'g'}, cur_nimg=12, version='test')
    path = tmp_path / 'network-snapshot-000000.pt'
    torch.save(snap, path)
    return path, snap, G, D


# truncation

@pytest.mark.parametrize('tau', [0.1, 0.7, 2.0])
def test_truncated_entries_within_tau(tau):
    z = truncated_normal((500, 32), tau, make_generator(0))
    assert z.abs().max() <= tau
    assert z.abs().max() > 0.9 * tau  # the interval is used up to its ends, not shrunk


def test_truncated_normal_matches_truncated_variance():
    tau = 0.7
    z = truncated_normal((5000, 64), tau, make_generator(1))
    phi = math.exp(-tau ** 2 / 2) / math.sqrt(2 * math.pi)
    assert abs(z.var().item() - (1 - 2 * tau * phi / (Phi(tau) - Phi(-tau)))) < 3e-3
    assert abs(z.mean().item()) < 3e-3


def test_truncated_normal_scaled_mode():
    z = truncated_normal((2000, 16), 0.5, make_generator(2), mode='scaled')
    assert z.abs().max() <= 1.0 and z.abs().max() > 0.9


def test_truncated_normal_seeded():
    assert torch.equal(truncated_normal((10, 8), 0.7, make_generator(5)), truncated_normal((10, 8), 0.7, make_generator(5)))
    assert not torch.equal(truncated_normal((10, 8), 0.7, make_generator(5)), truncated_normal((10, 8), 0.7, make_generator(6)))


def test_truncated_normal_bad_tau():
    with pytest.raises(ConfigError, match='tau'): truncated_normal((2, 2), -1.)


def test_truncated_normal_bad_mode():
    with pytest.raises(ConfigError, match='trunc_mode'): truncated_normal((2, 2), 0.7, mode='clip')


# generation

def test_generate_real_generator_seeded():
    torch.manual_seed(0)
    G = build_generator('tiny')
    a = generate(G, [0, 1, 0], seed=4, batch_size=2, tau=0.7)
    assert a.dtype == torch.uint8 and a.shape == (3, 3, 32, 32)
    assert torch.equal(a, generate(G, [0, 1, 0], seed=4, batch_size=2, tau=0.7))
    b = generate(G, [0, 1, 0], seed=4, batch_size=3, tau=0.7)  # batch size does not change the latents
    assert (a.int() - b.int()).abs().max() <= 1
    assert G.training  # mode restored


def test_generate_clamps():
    G = ToyG()
    with torch.no_grad(): G.w.fill_(100.)
    img = generate(G, [0, 1] * 20, seed=0, tau=0.7)
    assert set(img.unique().tolist()) <= {0, 255}


def test_generate_bad_label():
    with pytest.raises(ConfigError, match='labels'): generate(ToyG(), [0, 5], seed=0)


# selection

def test_select_mask_rule():
    p = torch.tensor([[0.3, 0.7], [0.45, 0.55], [0.9, 0.1], [0.61, 0.39]])
    assert select_mask(p, [1, 1, 1, 0], 0.6).tolist() == [True, False, False, True]
    assert select_mask(p, [0, 0, 0, 1], 0.6, rule='max').tolist() == [True, False, True, True]


def test_select_mask_bad_threshold():
    with pytest.raises(ConfigError, match='threshold'): select_mask(torch.ones(1, 2) / 2, [0], 1.0)
    with pytest.raises(ConfigError, match='SampleConfig.threshold'): SampleConfig(threshold=1.0)


def test_select_mask_bad_rule():
    with pytest.raises(ConfigError, match='rule'): select_mask(torch.ones(1, 2) / 2, [0], 0.6, rule='any')


def test_sa_acceptance_on_toy_classifier():
    img, lab, rep = selective_generate(ToyG(), ToyD(), SampleConfig(n_per_class=(1500, 1000)), batch_size=1024, progress=False)
    assert lab.bincount().tolist() == [1500, 1000] and rep['complete']
    expected = (Phi(0.7) - Phi(-0.1)) / (Phi(0.7) - Phi(-0.7))  # p_c > 0.6 <=> z0 beyond -/+0.1 (0.577)
    for k in '01': assert abs(rep['classes'][k]['acceptance_rate'] - expected) < 0.03  # sd ~0.01
    assert select_mask(ToyD().predict_proba(from_uint8(img)), lab, 0.6).all()


def test_sa_higher_threshold_accepts_fewer():
    _, _, r6 = selective_generate(ToyG(), ToyD(), SampleConfig(n_per_class=200, threshold=0.6), progress=False)
    _, _, r8 = selective_generate(ToyG(), ToyD(), SampleConfig(n_per_class=200, threshold=0.8), progress=False)
    assert r8['classes']['0']['acceptance_rate'] < r6['classes']['0']['acceptance_rate']


def test_sa_same_seed_same_images():
    a = selective_generate(ToyG(), ToyD(), SampleConfig(n_per_class=50, seed=3), progress=False)
    b = selective_generate(ToyG(), ToyD(), SampleConfig(n_per_class=50, seed=3), progress=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], selective_generate(ToyG(), ToyD(), SampleConfig(n_per_class=50, seed=4), progress=False)[0])


def test_sa_cap_raises():
    with pytest.raises(QuotaError, match=r'class 0: \d+/100 accepted after 150 attempts'):
        selective_generate(ToyG(), ToyD(), SampleConfig(n_per_class=100, threshold=0.95, attempts_per_image=1.5), progress=False)


def test_sa_cap_warns():
    with pytest.warns(UserWarning, match='attempts per image'):
        img, lab, rep = selective_generate(ToyG(), ToyD(), SampleConfig(n_per_class=(10, 100), attempts_per_image=1.2,
                                                                        on_cap='warn'), progress=False)
    assert not rep['complete'] and rep['classes']['1']['attempts'] == 120 and rep['sampling']['on_cap'] == 'warn'
    assert lab.bincount(minlength=2).tolist() == [rep['classes'][k]['accepted'] for k in '01']


def test_sa_bad_quota():
    with pytest.raises(ConfigError, match='n_per_class'): selective_generate(ToyG(), ToyD(), SampleConfig(n_per_class=(1, 2, 3)), progress=False)


def test_sa_with_real_networks(tiny_snapshot):
    _, _, G, D = tiny_snapshot
    img, lab, rep = selective_generate(G, D, SampleConfig(n_per_class=3, threshold=0.0, rule='max'), batch_size=8, progress=False)
    assert img.shape == (6, 3, 32, 32) and lab.tolist() == [0, 0, 0, 1, 1, 1]
    assert rep['classes']['0']['acceptance_rate'] == 1.0  # everything passes max p > 0
    p = D.predict_proba(from_uint8(img))  # the label rule at lambda = 0 keeps exactly the argmax == label images
    assert torch.equal(select_mask(p, lab, 0.0), p.argmax(1) == lab)


# snapshots

def test_load_snapshot_roundtrip(tiny_snapshot):
    path, snap, G, D = tiny_snapshot
    G1, D1, cfg = load_snapshot(path)
    assert cfg == {'scenario': 'g'} and not G1.training and not D1.training
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(D1.predict_proba(x), D.predict_proba(x))
    assert torch.equal(generate(G1, [1, 0], seed=0), generate(G, [1, 0], seed=0))


def test_load_snapshot_missing_keys(tiny_snapshot, tmp_path):
    _, snap, _, _ = tiny_snapshot
    torch.save({k: v for k, v in snap.items() if k not in ('G_ema', 'G_kwargs')}, tmp_path / 'partial.pt')
    with pytest.raises(CheckpointError, match=r"partial\.pt: not a network snapshot: missing key\(s\) \['G_ema', 'G_kwargs'\]"):
        load_snapshot(tmp_path / 'partial.pt')


def test_load_snapshot_mismatched_weights(tiny_snapshot, tmp_path):
    _, snap, _, _ = tiny_snapshot
    torch.save(dict(snap, G_kwargs=dict(snap['G_kwargs'], dim=64)), tmp_path / 'wrong.pt')
    with pytest.raises(CheckpointError, match=r'wrong\.pt: G_ema weights do not fit G_kwargs'):
        load_snapshot(tmp_path / 'wrong.pt')


def test_load_snapshot_bad_kwargs(tiny_snapshot, tmp_path):
    _, snap, _, _ = tiny_snapshot
    torch.save(dict(snap, D_kwargs=dict(snap['D_kwargs'], colour=1)), tmp_path / 'kw.pt')
    with pytest.raises(CheckpointError, match=r'kw\.pt: cannot build D from D_kwargs'):
        load_snapshot(tmp_path / 'kw.pt')


def test_load_snapshot_not_a_dict(tmp_path):
    torch.save([1, 2], tmp_path / 'list.pt')
    with pytest.raises(CheckpointError, match=r'list\.pt: not a network snapshot'): load_snapshot(tmp_path / 'list.pt')


def test_load_snapshot_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match='nope.pt'): load_snapshot(tmp_path / 'nope.pt')


# synthetic sets

def _images96(n=6, seed=0):
    return torch.randint(0, 256, (n, 3, 96, 96), dtype=torch.uint8, generator=make_generator(seed))


def test_write_synthetic_readable_by_data_and_torchvision(tmp_path):
    from torchvision.datasets import PCAM
    img, lab = _images96(), np.array([0, 1, 1, 0, 0, 1])
    write_synthetic(img, lab, tmp_path / 'syn', manifest={'tau': 0.7, 'threshold': 0.6})
    ds = open_pcam(tmp_path / 'syn', 'train')
    assert ds.labels.tolist() == lab.tolist()
    assert all(torch.equal(ds[i][0], img[i]) for i in range(6))
    tv = PCAM(str(tmp_path / 'syn'), split='train')
    assert len(tv) == 6 and np.array_equal(np.asarray(tv[2][0]), img[2].permute(1, 2, 0).numpy()) and tv[2][1] == 1


def test_write_synthetic_png_folders(tmp_path):
    img, lab = _images96(4, 1), np.array([1, 0, 1, 1])
    write_synthetic(img, lab, tmp_path, split='valid', png=True)
    assert sorted(p.name for p in (tmp_path / 'valid' / '1').iterdir()) == ['000000.png', '000002.png', '000003.png']
    pf = PCamFolder(tmp_path, 'valid')
    assert sorted(pf.labels.tolist()) == [0, 1, 1, 1]
    got = {tuple(x.flatten()[:16].tolist()) for x, _ in (pf[i] for i in range(4))}
    assert got == {tuple(x.flatten()[:16].tolist()) for x in img}  # PNG is lossless
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temporary folder left


def test_write_synthetic_manifest(tmp_path):
    write_synthetic(_images96(), [0, 1] * 3, tmp_path, manifest={'snapshot_sha256': 'abc', 'acceptance_rate': {'0': 0.5}})
    write_synthetic(_images96(2), [1, 1], tmp_path, split='test')
    m = json.loads((tmp_path / 'manifest.json').read_text())
    assert m['snapshot_sha256'] == 'abc' and m['acceptance_rate'] == {'0': 0.5}
    assert m['splits']['train']['counts'] == {'0': 3, '1': 3} and m['splits']['test']['n'] == 2
    name = 'pcam/camelyonpatch_level_2_split_test_x.h5'
    assert m['splits']['test']['files'][name] == file_sha256(tmp_path / name)


def test_write_synthetic_wrong_dtype(tmp_path):
    with pytest.raises(DataError, match='uint8'): write_synthetic(_images96().float(), [0] * 6, tmp_path)


def test_write_synthetic_wrong_label_count(tmp_path):
    with pytest.raises(DataError, match='6 images but 2 labels'): write_synthetic(_images96(), [0, 1], tmp_path)


def test_write_synthetic_wrong_size_leaves_nothing(tmp_path):
    img = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(DataError, match='96'): write_synthetic(img, [0, 1], tmp_path / 'out')
    assert not (tmp_path / 'out' / 'manifest.json').exists()
    assert not list((tmp_path / 'out' / 'pcam').glob('*.h5'))


def test_write_synthetic_bad_label(tmp_path):
    with pytest.raises(DataError, match=r'outside \{0, 1\}'): write_synthetic(_images96(2), [0, 2], tmp_path)


def test_synthesize_from_snapshot(tmp_path):
    torch.manual_seed(0)
    G, D = build_generator('small'), build_discriminator('small')
    path = tmp_path / 'network-snapshot-000004.pt'
    torch.save(dict(G_ema=G.state_dict(), D=D.state_dict(), G_kwargs=G.init_kwargs, D_kwargs=D.init_kwargs,
                    config={'scenario': 'g'}, cur_nimg=4000, version='test'), path)
    m = synthesize(path, tmp_path / 'sa', SampleConfig(n_per_class=2, threshold=0.0, rule='max'), batch_size=4, progress=False)  # untrained head: keep any
    assert m['snapshot_sha256'] == file_sha256(path) and m['scenario'] == 'g' and m['sampling']['tau'] == 0.7
    assert set(m['acceptance_rate']) == {'0', '1'} and m['splits']['train']['counts'] == {'0': 2, '1': 2}
    assert open_pcam(tmp_path / 'sa', 'train').labels.tolist() == [0, 0, 1, 1]
    m2 = synthesize(path, tmp_path / 'plain', SampleConfig(n_per_class=(1, 2)).plain(), progress=False)
    assert m2['acceptance_rate'] is None and m2['sampling']['tau'] is None and m2['splits']['train']['counts'] == {'0': 1, '1': 2}


def test_load_snapshot_written_by_training_code(tmp_path):
    from hvitgan.config import make_config
    from hvitgan.core import atomic_save
    from hvitgan.train import snapshot_dict
    cfg = make_config('tiny', scenario='g')
    torch.manual_seed(0)
    G, D = build_generator('tiny'), build_discriminator('tiny')
    atomic_save(snapshot_dict(G, D, cfg, 1234), tmp_path / 'network-snapshot-000001.pt')
    G1, D1, config = load_snapshot(tmp_path / 'network-snapshot-000001.pt')
    assert config == cfg.to_dict()
    assert torch.equal(generate(G1, [0, 1], seed=0, tau=0.7), generate(G, [0, 1], seed=0, tau=0.7))


def test_write_synthetic_resize_lower_resolution(tmp_path):
    img = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=make_generator(0))
    m = json.loads(write_synthetic(img, [0, 1, 0, 1], tmp_path, resize=True).read_text())
    assert m['splits']['train']['resized_from'] == 32
    ds = open_pcam(tmp_path, 'train')
    x = ds[1][0]
    assert x.shape == (3, 96, 96)
    down = torch.nn.functional.avg_pool2d(x[None].float(), 3)[0]  # back to 32 px: close to the original
    assert (down - img[1].float()).abs().mean() < 20


def test_synthesize_tiny_snapshot_is_resized(tiny_snapshot, tmp_path):
    path, _, _, _ = tiny_snapshot
    m = synthesize(path, tmp_path / 'out', SampleConfig(n_per_class=(2, 1), threshold=0.0, rule='max'), batch_size=4, progress=False)
    assert m['splits']['train']['resized_from'] == 32 and m['acceptance_rate'] == {'0': 1.0, '1': 1.0}
    with pytest.raises(DataError, match='96'):
        synthesize(path, tmp_path / 'strict', SampleConfig(n_per_class=1).plain(), resize=False, progress=False)


def test_sample_config_round_trip_and_plain():
    s = SampleConfig(n_per_class=[2, 3], tau=0.5, threshold=0.3, seed=9)
    assert SampleConfig.from_dict(json.loads(json.dumps(s.to_dict()))) == s and s.n_per_class == (2, 3)
    assert (s.plain().tau, s.plain().selective, s.plain().seed, s.plain().n_per_class) == (None, False, 9, (2, 3))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lam'\]"): SampleConfig.from_dict(dict(lam=0.6))


def test_sample_images_plain_is_generate():
    img, lab, rep = sample_images(ToyG(), None, SampleConfig(n_per_class=(3, 2), seed=5).plain())
    assert rep is None and lab.tolist() == [0, 0, 0, 1, 1]
    assert torch.equal(img, generate(ToyG(), lab, seed=5))
    with pytest.raises(ConfigError, match='selective is False'): selective_generate(ToyG(), ToyD(), SampleConfig().plain())

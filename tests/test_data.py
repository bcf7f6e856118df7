"""Tests of hvitgan.data outside the notebook: one test per bad-input case, the torchvision round trip, the
loopback download (full, interrupted and resumed, wrong checksum) and the real sample when it is present."""
import gzip, hashlib, http.server, pickle, shutil, threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hvitgan.core import DataError, sample_root
from hvitgan.data import (InfiniteSampler, PCamFolder, PCamH5, balanced_subset, canonical_split, convert_to_h5,
                          download_pcam, make_fake_pcam, open_pcam, pcam_filenames,
                          split_valid, write_pcam_h5)

torch.set_num_threads(1)


def raises_data_error(fn, *parts):
    "Call `fn`; assert it raises a one-line `DataError` whose message contains every string in `parts`."
    with pytest.raises(DataError) as e:
        fn()
    msg = str(e.value)
    assert '\n' not in msg, msg
    for p in parts: assert str(p) in msg, (p, msg)
    return msg


@pytest.fixture
def h5_dir(tmp_path):
    "A valid 8-patch PCam HDF5 pair (split train) in a folder."
    return make_fake_pcam(tmp_path / 'h5', 4, layout='h5', split='train')


def write_raw(folder, x, y, split='train'):
    "Write `x` and `y` as HDF5 datasets without any checks (to build bad files)."
    folder.mkdir(parents=True, exist_ok=True)
    xn, yn = pcam_filenames(split)
    with h5py.File(folder / xn, 'w') as f: f['x'] = x
    with h5py.File(folder / yn, 'w') as f: f['y'] = y
    return folder / xn, folder / yn


GOOD_X = np.zeros((4, 96, 96, 3), np.uint8)
GOOD_Y = np.array([0, 1, 0, 1], np.uint8).reshape(4, 1, 1, 1)

# ---------------------------------------------------------------------------------------------------------------
# Bad input: one test per case. Each error names the file and the problem, on one line.

def test_missing_file(h5_dir):
    yp = h5_dir / pcam_filenames('train')[1]
    yp.unlink()
    raises_data_error(lambda: PCamH5(h5_dir, 'train'), yp, 'no such file')


def test_missing_split_folder(tmp_path):
    raises_data_error(lambda: open_pcam(tmp_path, 'train'), tmp_path, "no PCam data for split 'train'")


def test_truncated_h5(h5_dir):
    xp = h5_dir / pcam_filenames('train')[0]
    data = xp.read_bytes()
    xp.write_bytes(data[:len(data) // 2])
    raises_data_error(lambda: PCamH5(h5_dir, 'train'), xp, 'truncated or corrupt')


def test_corrupt_h5(h5_dir):
    xp = h5_dir / pcam_filenames('train')[0]
    xp.write_bytes(b'\x89HDF\r\n' + bytes(range(256)) * 8)
    raises_data_error(lambda: PCamH5(h5_dir, 'train'), xp, 'not a readable HDF5 file')


def test_length_mismatch(tmp_path):
    xp, yp = write_raw(tmp_path, GOOD_X, GOOD_Y[:3])
    raises_data_error(lambda: PCamH5(tmp_path, 'train'), xp, '4 images', '3 labels')


def test_wrong_shape(tmp_path):
    xp, _ = write_raw(tmp_path, np.zeros((4, 64, 64, 3), np.uint8), GOOD_Y)
    raises_data_error(lambda: PCamH5(tmp_path, 'train'), xp, 'shape (4, 64, 64, 3)', 'expected [N, 96, 96, 3]')


def test_wrong_dtype(tmp_path):
    xp, _ = write_raw(tmp_path, GOOD_X.astype(np.float32), GOOD_Y)
    raises_data_error(lambda: PCamH5(tmp_path, 'train'), xp, 'dtype float32', 'expected uint8')


def test_label_outside_01(tmp_path):
    _, yp = write_raw(tmp_path, GOOD_X, np.array([0, 1, 2, 1], np.uint8).reshape(4, 1, 1, 1))
    raises_data_error(lambda: PCamH5(tmp_path, 'train'), yp, 'label 2 at index 2', 'outside {0, 1}')


def test_empty_folder(tmp_path):
    (tmp_path / 'images' / 'train' / '0').mkdir(parents=True)
    (tmp_path / 'images' / 'train' / '1').mkdir()
    raises_data_error(lambda: PCamFolder(tmp_path, 'train'), tmp_path, 'no images')


def test_unreadable_image(tmp_path):
    root = make_fake_pcam(tmp_path, 2)
    ds = PCamFolder(root, 'train')
    ds.files[1].write_bytes(b'this is not a PNG')
    ds[0]
    raises_data_error(lambda: ds[1], ds.files[1], 'unreadable image')
    raises_data_error(lambda: ds.get_batch([0, 1]), ds.files[1], 'unreadable image')


def test_output_exists(tmp_path, h5_dir):
    xp = h5_dir / pcam_filenames('train')[0]
    before = xp.read_bytes()
    raises_data_error(lambda: write_pcam_h5(GOOD_X, GOOD_Y, h5_dir, 'train'), xp, 'already exists')
    raises_data_error(lambda: convert_to_h5(PCamH5(h5_dir, 'train'), h5_dir, 'train'), xp, 'already exists')
    assert xp.read_bytes() == before
    write_pcam_h5(GOOD_X, GOOD_Y, h5_dir, 'train', overwrite=True, progress=False)
    assert len(PCamH5(h5_dir, 'train')) == 4


def test_unknown_split(tmp_path):
    raises_data_error(lambda: canonical_split('holdout'), "'holdout'", 'train, valid')
    raises_data_error(lambda: PCamH5(tmp_path, 'holdout'), 'unknown PCam split')
    raises_data_error(lambda: PCamFolder(tmp_path, 'holdout'), 'unknown PCam split')


def test_failed_write_leaves_nothing(tmp_path):
    "Bad data discovered mid-stream (second batch) leaves neither file nor temporary behind."
    out = tmp_path / 'out'
    batches = iter([GOOD_X[:2], GOOD_X[2:].astype(np.int16)])
    raises_data_error(lambda: write_pcam_h5(batches, GOOD_Y, out, 'train', progress=False), 'expected uint8')
    raises_data_error(lambda: write_pcam_h5(GOOD_X, [0, 1, 5, 0], out, 'train', progress=False), 'outside {0, 1}')
    raises_data_error(lambda: write_pcam_h5(GOOD_X[:3], GOOD_Y, out, 'train', progress=False), '3 images for 4 labels')
    assert list(out.iterdir()) == []

# ---------------------------------------------------------------------------------------------------------------
# Round trips

@pytest.mark.parametrize('split, tv_split', [('train', 'train'), ('valid', 'val'), ('test', 'test')])
def test_torchvision_reads_converted_files(tmp_path, split, tv_split):
    "Files written by convert_to_h5 read back identically through torchvision.datasets.PCAM."
    from torchvision.datasets import PCAM
    from torchvision.transforms import PILToTensor
    src = PCamFolder(make_fake_pcam(tmp_path / 'src', 3, split=split, seed=7), split)
    convert_to_h5(src, tmp_path / 'root' / 'pcam', split, batch_size=4, progress=False)
    tv = PCAM(tmp_path / 'root', split=tv_split, transform=PILToTensor(), download=False)
    assert len(tv) == len(src) == 6
    for i in range(len(src)):
        (a, ca), (b, cb) = src[i], tv[i]
        assert torch.equal(a, b) and ca == cb
    assert torch.equal(PCamH5(tmp_path / 'root', tv_split).get_batch(range(6))[0], src.get_batch(range(6))[0])


def test_folder_layouts_and_duplicates(tmp_path):
    root = make_fake_pcam(tmp_path / 'a', 3, duplicates=2)
    ds = PCamFolder(root, 'train')
    assert len(ds) == 8 and len(PCamFolder(root, 'train', drop_duplicates=True)) == 6
    assert sorted(ds.pcam_index.tolist()) == list(range(8))
    flat = tmp_path / 'flat'
    shutil.copytree(root / 'images' / 'train', flat / 'train')           # <root>/<split>/<label>/*, no CSV
    ds2 = open_pcam(flat, 'train')
    assert isinstance(ds2, PCamFolder) and len(ds2) == 8
    assert sorted(ds2.labels.tolist()) == sorted(ds.labels.tolist())


def test_h5_pickle_fork_and_loader(h5_dir):
    ds = PCamH5(h5_dir, 'train')
    want = ds.get_batch(range(len(ds)))
    ds[0]                                                  # the parent holds an open handle before the fork
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2._x is None and torch.equal(ds2.get_batch(range(8))[0], want[0])
    xs, ys = zip(*DataLoader(ds, batch_size=3, num_workers=2))
    assert torch.equal(torch.cat(xs), want[0]) and torch.equal(torch.cat(ys), want[1])


@pytest.mark.parametrize('chunk_rows, compression, direct', [(1, None, True), (None, None, True), (3, None, False), (1, 'gzip', False)])
def test_read_paths_agree(tmp_path, h5_dir, chunk_rows, compression, direct):
    "Direct memory-mapped reads and h5py reads return the same patches in the requested order."
    ref = PCamH5(h5_dir, 'train', in_memory=True)
    x_all, y_all = ref.get_batch(range(len(ref)))
    write_pcam_h5(x_all.permute(0, 2, 3, 1).numpy(), y_all.numpy(), tmp_path, 'train', chunk_rows=chunk_rows,
                  compression=compression, progress=False)
    ds = PCamH5(tmp_path, 'train')
    assert ds.direct == direct
    idx = [7, 0, 1, 2, 5, 5, -1]
    assert torch.equal(ds.get_batch(idx)[0], x_all[idx]) and torch.equal(ds.get_batch(idx)[1], y_all[idx])
    with pytest.raises(IndexError): ds.get_batch([8])


def test_loader_resume_equals_straight_run(h5_dir):
    ds = PCamH5(h5_dir, 'train')
    loader = lambda start: iter(torch.utils.data.DataLoader(ds, batch_size=3, sampler=InfiniteSampler(len(ds), 5, start)))
    it = loader(0)
    straight = [next(it)[1].tolist() for _ in range(6)]
    resumed = loader(3 * 4)
    assert [next(resumed)[1].tolist() for _ in range(2)] == straight[4:]


def test_infinite_sampler_start_idx():
    take = lambda s, k: [i for i, _ in zip(s, range(k))]
    full = take(InfiniteSampler(7, seed=11), 40)
    for k in (0, 1, 6, 7, 8, 20):
        assert take(InfiniteSampler(7, seed=11, start_idx=k), 40 - k) == full[k:]
    assert all(sorted(full[e * 7:(e + 1) * 7]) == list(range(7)) for e in range(5))


def test_subsets():
    y = np.repeat([0, 1], [300, 500])
    idx = balanced_subset(y, 200, seed=3)
    assert np.bincount(y[idx]).tolist() == [100, 100] and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, balanced_subset(y, 200, seed=3))
    sel, test = split_valid(y, seed=0)
    assert np.bincount(y[sel]).tolist() == [150, 250] and np.bincount(y[test]).tolist() == [150, 250]
    assert len(np.intersect1d(sel, test)) == 0 and len(sel) + len(test) == len(y)


# ---------------------------------------------------------------------------------------------------------------
# Download against a loopback server

class _Server:
    "An HTTP server on 127.0.0.1 serving `folder` with `Range: bytes=a-` support; it can cut the first response short."
    def __init__(self, folder, cut_first_after=None):
        self.log, self.cut = [], cut_first_after
        srv = self
        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                p = Path(folder) / self.path.lstrip('/')
                rng = self.headers.get('Range')
                if not p.is_file():
                    srv.log.append((self.path, rng, 0)); return self.send_error(404)
                data = p.read_bytes()
                start = int(rng.split('=')[1].split('-')[0]) if rng else 0
                if start >= len(data):
                    srv.log.append((self.path, rng, 0)); return self.send_error(416)
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng: self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
                self.send_header('Content-Length', str(len(body))); self.end_headers()
                if srv.cut is not None:                                  # simulate a dropped connection
                    body, srv.cut = body[:srv.cut], None
                    self.close_connection = True
                self.wfile.write(body); self.wfile.flush()
                srv.log.append((self.path, rng, len(body)))
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/files"

    def close(self): self.httpd.shutdown(); self.httpd.server_close()


@pytest.fixture
def release(tmp_path, monkeypatch):
    "A tiny gzipped 'release' of the test split in `site/files/`, its md5 table and the source dataset."
    for v in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(v, raising=False)
    src = make_fake_pcam(tmp_path / 'src', 4, layout='h5', split='test', seed=3)
    site = tmp_path / 'site' / 'files'; site.mkdir(parents=True)
    for name in pcam_filenames('test'):
        (site / (name + '.gz')).write_bytes(gzip.compress((src / name).read_bytes()))
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in site.iterdir()}
    return site, md5, PCamH5(src, 'test')


def test_download_full(tmp_path, release):
    site, md5, src = release
    server = _Server(site.parent)
    try:
        out = download_pcam(tmp_path / 'dl', server.url, splits=['test'], md5=md5, progress=False)
    finally: server.close()
    assert sorted(p.name for p in out.iterdir()) == sorted(pcam_filenames('test'))    # .gz and .part removed
    got = PCamH5(tmp_path / 'dl', 'test')
    assert torch.equal(got.get_batch(range(8))[0], src.get_batch(range(8))[0])
    assert np.array_equal(got.labels, src.labels)


def test_download_interrupted_then_resumed(tmp_path, release):
    site, md5, src = release
    x_gz = pcam_filenames('test')[0] + '.gz'
    size, cut = (site / x_gz).stat().st_size, 1000
    server = _Server(site.parent, cut_first_after=cut)
    try:
        raises_data_error(lambda: download_pcam(tmp_path / 'dl', server.url, splits=['test'], md5=md5, progress=False),
                          x_gz, 'run again to resume')
        part = tmp_path / 'dl' / 'pcam' / (x_gz + '.part')
        assert part.stat().st_size == cut and not (tmp_path / 'dl' / 'pcam' / pcam_filenames('test')[0]).exists()
        download_pcam(tmp_path / 'dl', server.url, splits=['test'], md5=md5, progress=False)
    finally: server.close()
    x_requests = [(rng, n) for path, rng, n in server.log if path.endswith(x_gz)]
    assert x_requests == [(None, cut), (f'bytes={cut}-', size - cut)]                 # only the rest was sent again
    assert torch.equal(PCamH5(tmp_path / 'dl', 'test').get_batch(range(8))[0], src.get_batch(range(8))[0])


def test_download_wrong_checksum(tmp_path, release):
    site, md5, _ = release
    bad = dict(md5, **{pcam_filenames('test')[0] + '.gz': '0' * 32})
    server = _Server(site.parent)
    try:
        raises_data_error(lambda: download_pcam(tmp_path / 'dl', server.url, splits=['test'], md5=bad, progress=False),
                          'camelyonpatch_level_2_split_test_x.h5.gz', 'does not match')
    finally: server.close()
    assert list((tmp_path / 'dl' / 'pcam').iterdir()) == []


def test_download_missing_file(tmp_path, release):
    site, md5, _ = release
    server = _Server(site.parent)
    try:
        raises_data_error(lambda: download_pcam(tmp_path / 'dl', server.url, splits=['train'], md5=md5, progress=False),
                          'camelyonpatch_level_2_split_train_x.h5.gz', 'HTTP 404')
    finally: server.close()

# ---------------------------------------------------------------------------------------------------------------
# The real sample (../shared/data/pcam-sample), skipped when absent

@pytest.fixture
def sample():
    root = sample_root()
    if root is None: pytest.skip("PCam sample not found at ../shared/data/pcam-sample (set HVITGAN_DATA to its folder)")
    return root


def test_real_sample(sample, tmp_path):
    train, valid = open_pcam(sample, 'train'), open_pcam(sample, 'valid')
    assert isinstance(train, PCamFolder)
    assert np.bincount(train.labels).tolist() == [10_000, 10_000] and np.bincount(valid.labels).tolist() == [1_500, 1_500]
    assert len(PCamFolder(sample, 'train', drop_duplicates=True)) == 20_000 - 829
    assert all(int(f.stem[len('patch'):]) == i for f, i in zip(train.files[:50], train.pcam_index[:50]))
    sub = torch.utils.data.Subset(train, balanced_subset(train.labels, 64, seed=0))
    x, y = next(iter(DataLoader(sub, batch_size=64)))
    assert x.shape == (64, 3, 96, 96) and x.dtype == torch.uint8 and y.sum() == 32
    assert x.float().std() > 10                                      # real tissue, not a blank image
    convert_to_h5(sub, tmp_path / 'pcam', 'train', batch_size=16, progress=False)
    back = PCamH5(tmp_path, 'train')
    assert torch.equal(back.get_batch(range(64))[0], x) and np.array_equal(back.labels, y.numpy())

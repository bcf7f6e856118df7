"""The real-sample Table 1 run on one GPU, inside a fixed device budget (issue 6, item 8).

Three steps, each a subcommand:

    python scripts/gpu_table1.py prepare --dest .gpu/pcam --n-real 2000     # here: copy the subset that travels
    python scripts/gpu_table1.py run --data .gpu/pcam --work /tmp/t1 --minutes 4   # on the GPU machine
    python scripts/gpu_table1.py pack --work /tmp/t1 --out "$OUT"             # on the GPU machine, always

`prepare` copies a seeded, class-balanced subset of the shipped sample's train split (the same draw as
`nbs/runs/table1.ipynb`: `balanced_subset(train.labels, n_real, seed=0)`) and the whole valid split, JPEG bytes
unchanged, with a filtered labels.csv. `run` converts them to PCam HDF5, trains scenario E (our weighting + CP)
on the subset for a wall-clock budget, writing a snapshot every tick, then runs the Table 1 protocol
(`hvitgan.experiments.table1`: baseline and +Aug(CP+SA), 5 seeds, selection and test halves of the valid split)
for the snapshot nearest a fraction `--at` of training (run one process per candidate, side by side). FID needs
Inception weights that do not travel, so the snapshot is chosen by FID afterwards, on the CPU machine, among the
snapshots that `pack` brings back; only the chosen snapshot's row is reported. `pack` copies the logs, tables,
grids and the snapshots at `--fractions` of training into at most 8 files.
"""
import argparse, csv, os, shutil, sys, tarfile, time
from pathlib import Path

import torch

from hvitgan.classifiers import ClassifierRecipe
from hvitgan.config import make_config
from hvitgan.core import sample_root
from hvitgan.data import balanced_subset, convert_to_h5, find_pcam_h5, open_pcam, split_valid
from hvitgan.experiments import LabeledSubset, format_table, table1, table1_rows
from hvitgan.train import training_loop

SNAPSHOT_GLOB = 'network-snapshot-[0-9]*.pt'


def prepare(a):
    "Copy the training subset and the valid split of the sample into `a.dest` (JPEG bytes unchanged)."
    src = Path(a.data) if a.data else sample_root()
    if src is None: sys.exit("prepare: the shipped sample ../shared/data/pcam-sample is absent; pass --data")
    train = open_pcam(src, 'train')
    keep = {str(train.files[i].relative_to(src)) for i in balanced_subset(train.labels, a.n_real, seed=0)}
    with open(src / 'labels.csv', newline='') as f: rows = list(csv.DictReader(f))
    rows = [r for r in rows if r['split'] == 'valid' or r['path'] in keep]
    dest = Path(a.dest)
    if dest.exists(): shutil.rmtree(dest)
    for r in rows:
        (dest / r['path']).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / r['path'], dest / r['path'])
    with open(dest / 'labels.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
    size = sum(p.stat().st_size for p in dest.rglob('*') if p.is_file())
    print(f"prepare: {len(keep)} train + {sum(r['split'] == 'valid' for r in rows)} valid files, {size / 2**20:.1f} MiB -> {dest}")


def snapshots(run_dir: Path) -> list:
    "Network snapshots of a run, oldest first (by the kimg in their names)."
    return sorted(run_dir.glob(SNAPSHOT_GLOB), key=lambda p: int(p.stem.split('-')[-1]))


def at_fraction(snaps: list, f: float) -> Path:
    "The snapshot whose kimg is nearest to `f` times the newest one's."
    kimg = [int(p.stem.split('-')[-1]) for p in snaps]
    return min(zip(kimg, snaps), key=lambda t: (abs(t[0] - f * kimg[-1]), -t[0]))[1]


def prepare_h5(data: Path, work: Path) -> Path:
    "The carried JPEG folder as PCam HDF5 under `work` (fast batched reads for the GAN and the classifiers)."
    h5 = work / 'pcam-h5'
    for split in ('train', 'valid'):  # convert_to_h5 writes atomically: present means complete
        if find_pcam_h5(h5, split) is None: convert_to_h5(open_pcam(data, split), h5, split, overwrite=True, progress=False)
    return h5


def train_gan(a, h5: Path, run_dir: Path):
    "Scenario E (our weighting + CP), a snapshot every tick, for `a.minutes` of wall clock."
    cfg = make_config(a.preset, 'e', data=str(h5), batch_size=a.batch, device=a.device, bf16=a.bf16, tf32=a.bf16,
                      num_workers=a.workers, kimg_per_tick=a.tick_kimg, snapshot_ticks=1, keep_states=1,
                      total_kimg=1e5, seed=0)
    t = time.time()
    training_loop(cfg, run_dir, resume='auto', max_minutes=a.minutes, progress=False)
    print(f"GAN: {time.time() - t:.0f} s, snapshots {[p.name for p in snapshots(run_dir)]}", flush=True)


def evaluate_snapshot(a, h5: Path, snap: Path, out: Path):
    "The Table 1 rows `a.rows` for every classifier; synthetic sets are drawn on the classifiers' device."
    train, valid = open_pcam(h5, 'train'), open_pcam(h5, 'valid')
    real = LabeledSubset(train, balanced_subset(train.labels, min(a.n_real, len(train)), seed=0).tolist())
    sel_idx, test_idx = split_valid(valid.labels, seed=0)
    sel, test = LabeledSubset(valid, sel_idx.tolist()), LabeledSubset(valid, test_idx.tolist())
    recipe = ClassifierRecipe(epochs=a.epochs, batch_size=64, device=a.device, max_steps_per_epoch=a.max_steps or None)
    print(f"{snap.name}: train {len(real)}, selection {len(sel)}, test {len(test)}", flush=True)
    t = time.time()
    table = table1({'e': snap}, real, sel, test, out, classifiers=a.classifiers, rows=table1_rows(a.rows),
                   seeds=tuple(a.seeds), recipe=recipe, tau=a.tau, threshold=a.threshold, on_cap='warn', progress=a.progress)
    print(f"{snap.name}: Table 1 in {time.time() - t:.0f} s\n{format_table(table)}", flush=True)


def run(a):
    t0, work = time.time(), Path(a.work)
    print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}", flush=True)
    h5 = prepare_h5(Path(a.data), work)
    run_dir = work / 'gan-e'
    if a.stage in ('gan', 'all'): train_gan(a, h5, run_dir)
    if a.stage in ('table1', 'all'):
        snap = Path(a.snapshot) if a.snapshot else at_fraction(snapshots(run_dir), a.at)
        evaluate_snapshot(a, h5, snap, work / 'table1' / (snap.stem + (f'-{a.tag}' if a.tag else '')))
    print(f"run ({a.stage}): {time.time() - t0:.0f} s", flush=True)


def pack(a):
    "Bring back the logs, tables, grids and manifests (one tarball) and the newest snapshots (<= 8 files in all)."
    work, out = Path(a.work), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / 'results.tar.gz', 'w:gz') as tar:
        for p in sorted(work.rglob('*')):
            if p.is_file() and p.suffix in ('.json', '.jsonl', '.md', '.csv', '.png', '.txt'):
                tar.add(p, arcname=str(p.relative_to(work)))
    snaps = snapshots(work / 'gan-e')
    keep = sorted({at_fraction(snaps, f) for f in a.fractions}) if snaps else []
    for p in keep: shutil.copyfile(p, out / p.name)
    print(f"pack: results.tar.gz {os.path.getsize(out / 'results.tar.gz') / 2**20:.1f} MiB, snapshots {[p.name for p in keep]}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    q = sub.add_parser('prepare'); q.add_argument('--data', default=''); q.add_argument('--dest', required=True)
    q.add_argument('--n-real', type=int, default=2000)
    r = sub.add_parser('run')
    r.add_argument('--data', required=True); r.add_argument('--work', required=True)
    r.add_argument('--minutes', type=float, default=4.0, help='GAN training budget')
    r.add_argument('--stage', choices=['gan', 'table1', 'all'], default='all')
    r.add_argument('--tag', default='', help='suffix of the Table 1 folder (side-by-side runs on one snapshot)')
    r.add_argument('--snapshot', default='', help='Table 1 for this snapshot instead of one of the run')
    r.add_argument('--rows', nargs='+', default=['baseline', 'cp_sa'], help='Table 1 rows (TABLE1_ROWS keys)')
    r.add_argument('--progress', action='store_true', help='tqdm bars for the classifiers')
    r.add_argument('--at', type=float, default=1.0, help='Table 1 for the snapshot nearest this fraction of training')
    r.add_argument('--preset', default='small', help='training preset of the generator (networks, resolution)')
    r.add_argument('--n-real', type=int, default=2000); r.add_argument('--batch', type=int, default=32)
    r.add_argument('--tick-kimg', type=float, default=16.); r.add_argument('--workers', type=int, default=4)
    r.add_argument('--max-steps', type=int, default=0, help='cut classifier epochs short (smoke runs)')
    r.add_argument('--epochs', type=int, default=8); r.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    r.add_argument('--classifiers', nargs='+', default=['resnet34', 'hvitgan_head'])
    r.add_argument('--tau', type=float, default=0.7); r.add_argument('--threshold', type=float, default=0.6)
    r.add_argument('--device', default='cuda'); r.add_argument('--no-bf16', dest='bf16', action='store_false')
    k = sub.add_parser('pack'); k.add_argument('--work', required=True); k.add_argument('--out', required=True)
    k.add_argument('--fractions', type=float, nargs='+', default=[0.25, 0.5, 1.0], help='snapshots to bring back')
    a = p.parse_args()
    {'prepare': prepare, 'run': run, 'pack': pack}[a.cmd](a)


if __name__ == '__main__':
    main()

"""FID of network snapshots against the valid split, and the best one (Sec. 3.2's model selection), on any machine.

    python scripts/fid_snapshots.py runs/gpu-table1/network-snapshot-*.pt --n 1000 --out runs/gpu-table1/fid.json

Reference statistics of the real split are cached under --cache (keyed by data, settings and weights).
"""
import argparse, json, time
from pathlib import Path

from hvitgan.core import atomic_write, sample_root
from hvitgan.data import open_pcam
from hvitgan.fid import fid_metric, load_fid_inception, reference_stats
from hvitgan.sample import load_snapshot


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('snapshots', nargs='+', help='network-snapshot-*.pt files')
    p.add_argument('--data', default='', help='PCam root; default: the shipped sample')
    p.add_argument('--split', default='valid', help='real split of the reference statistics')
    p.add_argument('--n', type=int, default=1000, help='generated images per snapshot')
    p.add_argument('--cache', default='runs/fid-cache', help='folder of cached reference statistics')
    p.add_argument('--out', required=True, help='JSON file for the scores and the choice')
    a = p.parse_args()
    root = Path(a.data) if a.data else sample_root()
    if root is None: raise SystemExit("fid_snapshots: the shipped sample is absent; pass --data")
    t0 = time.time()
    net = load_fid_inception()[0]
    ref = reference_stats(open_pcam(root, a.split), a.cache, net=net, progress=True)
    print(f"reference statistics: {a.split} split of {root}, {time.time() - t0:.0f} s", flush=True)
    fid = fid_metric(ref, n_images=a.n, net=net, progress=True)
    scores = {}
    for path in a.snapshots:
        G_ema = load_snapshot(path)[0]
        score = fid(G_ema)
        scores[path] = score.as_dict()
        print(f"{path}: FID {float(score):.2f} ({score.n} images, {score.seconds:.0f} s)", flush=True)
    best = min(scores, key=lambda k: scores[k]['fid'])
    res = dict(reference=dict(data=str(root), split=a.split, source=net.source), n_generated=a.n, scores=scores, best=best,
               seconds=time.time() - t0)
    with atomic_write(Path(a.out)) as tmp: tmp.write_text(json.dumps(res, indent=1))
    print(f"best: {best} (FID {scores[best]['fid']:.2f}); {time.time() - t0:.0f} s in all -> {a.out}")


if __name__ == '__main__':
    main()

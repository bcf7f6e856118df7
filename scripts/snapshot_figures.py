"""Fig. 2, and the Fig. 3 panels that one scenario-E snapshot can give ((e) CP and (g) CP+SA), on real data.

    python scripts/snapshot_figures.py runs/gpu-table1/network-snapshot-000079.pt --out nbs/images/gpu

writes `<out>-fig2.png` (real, CP, CP+SA panels) and `<out>-fig3.png` (t-SNE of Inception pool features of
generated patches, coloured by class, with the silhouette score in each title) and prints the silhouettes.
Panels (a)-(d) and (f) of Fig. 3 need the runs of scenarios A-D (`nbs/runs/ablation.ipynb`).
"""
import argparse, json, time
from pathlib import Path

import numpy as np

from hvitgan.core import sample_root
from hvitgan.data import open_pcam
from hvitgan.experiments import fig2, fig3, scenario_images
from hvitgan.fid import inception_features, load_fid_inception


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('snapshot'); p.add_argument('--out', required=True, help='path prefix of the two PNGs')
    p.add_argument('--data', default=''); p.add_argument('--per-class', type=int, default=8, help='Fig. 2 patches per class')
    p.add_argument('--tsne-per-class', type=int, default=150, help='Fig. 3 generated patches per class and panel')
    a = p.parse_args()
    t0 = time.time()
    root = Path(a.data) if a.data else sample_root()
    train = open_pcam(root, 'train')
    idx = np.concatenate([np.flatnonzero(train.labels == c)[:a.per_class] for c in (0, 1)])
    real = train.get_batch(idx)
    gen = scenario_images({'e': a.snapshot}, a.per_class)
    fig2({'real': real, 'CP (e)': gen['e'], 'CP+SA (g)': gen['g']}, f'{a.out}-fig2.png', per_class=a.per_class)
    net = load_fid_inception()[0]
    gen = scenario_images({'e': a.snapshot}, a.tsne_per_class, seed=1)
    sil = fig3(gen, lambda img: inception_features(img, net), f'{a.out}-fig3.png')
    print(json.dumps(dict(snapshot=a.snapshot, silhouette=sil, seconds=round(time.time() - t0)), indent=1))


if __name__ == '__main__':
    main()

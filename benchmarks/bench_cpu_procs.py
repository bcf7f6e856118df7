"""Training throughput of the real loop on the CPU: `cpu_procs` one-thread processes against one process on all cores.

Runs `hvitgan train` (data loading, augmentation, the whole step, ticks) for a few minutes per arm, one arm after the
other on an otherwise idle machine, metrics off, and prints each arm's images per second over its ticks after the
first (start-up and preloading excluded) and the ratio to the peer: one process with torch's threads on every core
(`cpu_procs=1`, the loop as it was before `run_training`). Run directories go to a temporary folder that is removed.

    python benchmarks/bench_cpu_procs.py                       # the cpu preset, 2 minutes an arm
    python benchmarks/bench_cpu_procs.py --preset conv --minutes 3 --set bf16=false
"""
import argparse, json, os, platform, subprocess, sys, tempfile
from pathlib import Path

import torch


def arm(preset: str, procs: int, minutes: float, sets: list[str], root: Path) -> dict:
    "Train one arm with `hvitgan train`; images per second over the ticks after the first."
    run = root / f'procs{procs}'
    cmd = [sys.executable, '-m', 'hvitgan.cli', 'train', '--preset', preset, '--run-dir', str(run), '--minutes', str(minutes),
           '--no-progress', '--set', 'metrics=', '--set', 'best_metric=', '--set', f'cpu_procs={procs}', '--set', 'snapshot_ticks=1000']
    for s in sets: cmd += ['--set', s]
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}  # torch's default threads for the one-process peer
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    ticks = [json.loads(l) for l in (run / 'stats.jsonl').read_text().splitlines()][1:-1]  # the first (start-up) and the last (cut) apart
    if not ticks: raise SystemExit(f"{run}: fewer than three ticks in {minutes} minutes; use --minutes")
    nimg = sum(t['Timing/img_per_sec'] * t['Timing/sec_per_tick'] for t in ticks)
    return dict(procs=procs, ticks=len(ticks), img_per_sec=nimg / sum(t['Timing/sec_per_tick'] for t in ticks),
                kimg=ticks[-1]['kimg'], bf16=json.loads((run / 'config.json').read_text())['bf16'])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--preset', default='cpu')
    p.add_argument('--procs', type=int, default=2, help="processes of the measured arm")
    p.add_argument('--minutes', type=float, default=2.0, help="training time of each arm")
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help="TrainConfig override of both arms")
    a = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}; {platform.processor() or platform.machine()}, {cores} cores; preset {a.preset}; "
          f"{a.minutes:g} min an arm; overrides {a.set or 'none'}")
    with tempfile.TemporaryDirectory(prefix='bench-cpu-procs-') as tmp:
        peer = arm(a.preset, 1, a.minutes, a.set, Path(tmp))
        ours = arm(a.preset, a.procs, a.minutes, a.set, Path(tmp))
    for r in (peer, ours):
        threads = f"{cores} threads" if r['procs'] == 1 else f"{r['procs']} x {max(1, cores // r['procs'])} thread(s)"
        print(f"cpu_procs={r['procs']} ({threads}, bf16 {r['bf16']}): {r['img_per_sec']:.1f} img/s over {r['ticks']} ticks")
    print(f"ratio cpu_procs={a.procs} / one process: {ours['img_per_sec'] / peer['img_per_sec']:.2f}x")


if __name__ == '__main__':
    main()

#!/usr/bin/env bash
# Run every check CI runs: library and notebooks in sync, notebooks clean, all notebooks, all pytest tests.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
start=$SECONDS
nbdev-export
if [[ -n "$(git status --porcelain -- hvitgan nbs)" ]]; then
  git status --short -- hvitgan nbs; echo "FAIL: the library is out of sync with the notebooks: run nbdev-export and commit"; exit 1
fi
nbdev-clean
if [[ -n "$(git status --porcelain -- nbs)" ]]; then
  git status --short -- nbs; echo "FAIL: notebooks are not clean: run nbdev-clean and commit"; exit 1
fi
OMP_NUM_THREADS=1 nbdev-test --n-workers 2 --timing
python -m pytest -q tests "$@"
echo "all checks passed in $((SECONDS - start)) s (after setup)"

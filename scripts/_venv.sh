# Sourced by the scripts in this folder: create .venv on first use and put it on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -x .venv/bin/nbdev-export || ! -f .venv/.hvitgan-installed ]]; then
  echo "setting up .venv (first run only, about 2 minutes)..."
  python3 -m venv .venv
  .venv/bin/pip install -q -e ".[dev,fid]" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  touch .venv/.hvitgan-installed
fi
export PATH="$PWD/.venv/bin:$PATH"

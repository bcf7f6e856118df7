#!/usr/bin/env bash
# The demo: hvitgan's main job at small scale on real PCam patches (see README).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
hvitgan demo "$@"

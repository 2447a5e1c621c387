#!/bin/sh
# The study's Python for DVC stage commands (`sh envs/python.sh -m flmlib.speed ...`): .venv/bin/python, so that
# `dvc repro` works without activating the environment.
#
# DVC's experiment queue (`dvc exp run --queue`, `dvc queue start`) runs the stages in a copy of the repository under
# .dvc/tmp/exps/, which holds only what git and DVC track: no environments and no unpacked weights. There, the
# project folder above lends its own (links to its .venv, .venv-mediapipe and weights/, all git-ignored), and
# PYTHONPATH puts the copy's flmlib ahead of the environment's editable install, which points at the project's.
set -e
if [ ! -x .venv/bin/python ]; then
  up=$(cd .. && pwd)
  while [ "$up" != / ] && [ ! -x "$up/.venv/bin/python" ]; do up=$(dirname "$up"); done
  if [ ! -x "$up/.venv/bin/python" ]; then
    echo "envs/python.sh: no .venv in $(pwd) or a folder above it; run \`make env\`" >&2
    exit 127
  fi
  for name in .venv .venv-mediapipe weights; do
    if [ ! -e "$name" ] && [ -e "$up/$name" ]; then ln -s "$up/$name" "$name"; fi
  done
fi
PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" exec .venv/bin/python "$@"

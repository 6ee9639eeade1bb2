#!/usr/bin/env bash
# Install hubservices into a virtualenv, configurable-http-proxy and MathJax into ./node_modules.
# One script for every recipe: `make` (tests, demo) and the compose Dockerfile run it, so what
# the tests install is what the image carries.
#
#   deploy/install.sh VENV [EXTRAS]      e.g. deploy/install.sh /opt/hubservices/venv postgres
#   EDITABLE=1 deploy/install.sh .venv test   (development: the checkout, editable)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: deploy/install.sh VENV [pip extras, comma-separated]}
extras=${2:-}
spec=.
[ -n "$extras" ] && spec=".[$extras]"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet ${EDITABLE:+--editable} "$spec"
npm ci --no-audit --no-fund --loglevel=error
# the formgrader serves MathJax (TeX on the grading page and in feedback) from the venv
mkdir -p "$venv/share/hubservices"
ln -sfn "$PWD/node_modules/mathjax" "$venv/share/hubservices/mathjax"

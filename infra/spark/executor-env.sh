#!/usr/bin/env bash
# The Python environment Spark executors unpack from `--archives ENV.tar.gz#environment`, as the
# Spark documentation prescribes for Python packages: a fresh venv with the wheel, packed by
# venv-pack. `slim` (default) carries what the Spark stages import on executors
# (requirements/executor.txt); `full` carries every dependency of the wheel (cluster, train).
# venv-pack does not pack the interpreter: executors need the same Python at the same path
# (the base of $PYTHON), as in the images of infra/docker; otherwise use conda-pack.
#
#   infra/spark/executor-env.sh dist/reki_spark-0.1.0-py3-none-any.whl dist/reki-executor-env.tar.gz [slim|full]
set -euo pipefail
wheel=$(realpath "$1")
out=$(realpath -m "$2")
kind=${3:-slim}
python=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/env"
pip=("$work/env/bin/pip" install --quiet --disable-pip-version-check --constraint "$root/requirements/constraints.txt")
case $kind in
  slim) "${pip[@]}" --requirement "$root/requirements/executor.txt"
        # Both pure Python; their pyspark dependency is the cluster's own (pyspark.zip).
        "${pip[@]}" --no-deps "$wheel" delta-spark ;;
  full) "${pip[@]}" "$wheel" ;;
  *) echo "executor-env.sh: unknown kind '$kind' (slim or full)" >&2; exit 2 ;;
esac
venv-pack --prefix "$work/env" --output "$out" --force --quiet
echo "$out"

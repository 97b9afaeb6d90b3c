#!/usr/bin/env bash
# The GPU check on a machine with one GPU and no network (docs/speed.md, "Measuring on a GPU").
#
#   benchmarks/gpu_check.sh --carry      # here, with network: the wheels to carry, into .whl/ (git-ignored)
#   benchmarks/gpu_check.sh [ARGS]       # there: installs .whl/*.whl into a folder of its own, then
#                                        # python benchmarks/gpu_check.py ARGS (results in $OUT, else .selftaught/gpu-check)
#
# The machine is expected to have torch, transformers, accelerate and PyTorch's CUDA stack; what a
# GPU image usually lacks and the train stage needs is carried as wheels: TRL, DeepSpeed (built
# here as a pure-Python wheel: its ops compile on first use), datasets, PEFT, liger-kernel,
# bitsandbytes, pydantic and what they need that such an image lacks. vLLM is not carried: GRPO's
# rollouts use the model's own generate. The wheels match a Python 3.12 x86-64 Linux machine
# (PYTHON_VERSION to change it); keep them under the 64 MiB a lent machine's carry takes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}

# pins: the project's (pyproject.toml's train and gpu extras) and the versions they were tested with
CARRIED=(
  trl==1.16.0 peft==0.21.2 liger-kernel==0.8.5 bitsandbytes==0.50.2
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 hjson==3.1.0
)

carry() {
  mkdir -p "$WHEELS"
  local platforms=()
  for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
  done
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" --implementation cp \
    "${platforms[@]}" -d "$WHEELS" "${CARRIED[@]}"
  # DeepSpeed is published as a source archive: built here, with no ops compiled in, it is a pure-Python wheel
  DS_BUILD_OPS=0 "$PYTHON" -m pip wheel --no-deps --no-build-isolation -w "$WHEELS" deepspeed==0.19.8
  du -sh "$WHEELS"
  local bytes
  bytes=$(du -sb "$WHEELS" | cut -f1)
  if (( bytes > 60 * 1024 * 1024 )); then
    echo "$WHEELS holds $((bytes / 1024 / 1024)) MiB: a lent machine carries 64 MiB with the working tree; leave bitsandbytes out (qlora's row then says so)" >&2
  fi
}

install() {
  # into a folder of its own: what the machine has stays as it is
  local site=${SITE:-/tmp/gpu-check-site}
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$WHEELS"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
}

if [[ "${1:-}" == "--carry" ]]; then
  carry
  exit
fi
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  install
fi
export PYTHONPATH="$PWD/operator${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"

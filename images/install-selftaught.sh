#!/usr/bin/env bash
# Shared by every target of images/Dockerfile: install the selftaught wheel (from the `wheel`
# stage, in /tmp/dist) with one extra and any further requirements, without changing a package the
# base image already has, check the installed version, and make sure uid/gid 1000 exist.
#
#   bash /tmp/dist/install-selftaught.sh EXTRA VERSION [REQUIREMENT ...]
#
# Every distribution the base image ships (vLLM, torch, CUDA libraries, ...) becomes a pip
# constraint: pip may add packages (boto3, datasets, ...) but never upgrade or downgrade one of
# the base image's. If an extra ever needs a version the base does not have, the build fails here
# instead of shipping a vLLM or DeepSpeed with a swapped torch.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: install-selftaught.sh EXTRA VERSION [REQUIREMENT ...]" >&2
  exit 2
fi
extra="$1"
version="$2"
shift 2

python3 -m pip list --format=freeze > /tmp/base-constraints.txt
# PIP_BREAK_SYSTEM_PACKAGES: the vLLM image installs into the system interpreter; it only matters
# where the base OS marks that interpreter as managed.
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir \
  --constraint /tmp/base-constraints.txt \
  "/tmp/dist/selftaught-${version}-py3-none-any.whl[${extra}]" \
  "$@"
python3 - "$version" <<'PYTHON'
import sys
from importlib.metadata import version

assert sys.version_info >= (3, 11), sys.version
assert version("selftaught") == sys.argv[1], (version("selftaught"), sys.argv[1])
PYTHON
rm -rf /tmp/dist /tmp/base-constraints.txt

# numeric uid/gid 1000 (the pods' runAsUser); some base images already have a user there
getent group 1000 >/dev/null || groupadd --gid 1000 selftaught
getent passwd 1000 >/dev/null \
  || useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin selftaught

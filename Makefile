# Two commands do all the set-up on a fresh machine:
#   make quickstart   a whole Self-Taught run on the embedded local default (CPU, local files)
#   make test         the test suite (what CI runs through .ci/run)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# PyTorch's CPU wheels (vLLM's CPU build pins torch==2.13.0+cpu, which PyPI does not serve): a
# page of links, so only torch comes from there. A machine that keeps the wheel on disk (in pip's
# configured find-links) takes it from there and only warns that the page cannot be reached.
TORCH_WHEELS ?= https://download.pytorch.org/whl/cpu/torch/
TINY_MODEL  := .selftaught/models/tiny-judge

.PHONY: setup lock quickstart testbed testbed-hard test test-all images docs release clean
setup: $(VENV)/.installed

# exactly the versions the suite passed with: pylock.cpu.toml (docs/development.md). The CPU torch
# goes first, so the lock's torch is already there; --no-deps because a lock is complete.
$(VENV)/.installed: pyproject.toml pylock.cpu.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q pip==26.3
	$(PY) -m pip install -q --retries 1 --no-deps torch==2.13.0+cpu --find-links $(TORCH_WHEELS)
	$(PY) -m pip install -q --no-deps -r pylock.cpu.toml
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# regenerate pylock.cpu.toml and pylock.gpu.toml from pyproject.toml (after changing a dependency)
lock: setup
	$(PY) .ci/lock.py

quickstart: setup
	$(VENV)/bin/selftaught dev tiny-model $(TINY_MODEL)
	$(VENV)/bin/selftaught run examples/local-quickstart.yaml

# the CPU testbed: a seed that judges arithmetic at chance, three iterations of the loop
# (docs/testbed.md); benchmarks/recipes.py compares recipes on it
testbed: setup
	$(VENV)/bin/selftaught dev testbed .selftaught/testbed
	$(VENV)/bin/selftaught run examples/testbed.yaml

# the testbed's hard world: a seed that also misjudges a third of the pairs, four iterations; the
# loop climbs over several of them, so recipes can be told apart (docs/testbed.md, The hard world)
testbed-hard: setup
	$(VENV)/bin/selftaught dev testbed --world hard .selftaught/testbed-hard
	$(VENV)/bin/selftaught run examples/testbed-hard.yaml

test: setup
	$(VENV)/bin/pytest

test-all: setup
	$(VENV)/bin/pytest -m "slow or not slow"

# build and push the operator, generate and train images (the targets of images/Dockerfile),
# tagged with the package version (selftaught.__version__)
images:
	images/build.sh

# regenerate manifests/ (from the chart), the CRD copies, docs/configuration.md, the chart's
# version and its README tables
docs: setup
	$(PY) docs/gen_reference.py

# what a release ships besides the images: the Helm chart packaged by Helm (dist/selftaught-<version>.tgz)
# and the operator in one file for `kubectl apply --server-side -f dist/selftaught.yaml` (.ci/release.py)
release: setup
	$(PY) .ci/release.py

clean:
	rm -rf .selftaught

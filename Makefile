# Transfer-learning melanoma screening: one target per stage, each a real file of the experiment.
# `make help` lists the targets. EXP picks the experiment (default: the demo on embedded data).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

EXP ?= experiments/demo.toml
OUT := $(basename $(EXP))
STAMPS := $(OUT)/.stamps
DATA_DEPS ?=
VENV ?= .venv
PY := $(VENV)/bin/python
RUN := $(PY) -m pipeline
INSTALLED := $(VENV)/.installed

.PHONY: all demo demo-data test bench help clean clean-cache data folds pretrain finetune features \
        svm report compare

## all: run every stage of $(EXP) up to report.md
all: report

## demo: the whole pipeline on the embedded synthetic data (writes experiments/demo/report.md)
demo: demo-data
	$(MAKE) --no-print-directory all EXP=experiments/demo.toml DATA_DEPS=demo_data/manifest.json

## demo-data: write the synthetic dermoscopy and fundus datasets to demo_data/
demo-data: demo_data/manifest.json
demo_data/manifest.json: | $(INSTALLED)
	$(RUN) demo-data --out demo_data

## test: the test suite
test: $(INSTALLED)
	$(PY) -m pytest -q

## bench: measure every stage, write BENCHMARKS.md
bench: $(INSTALLED)
	$(PY) benchmarks/run.py --out BENCHMARKS.md

# The project's virtual environment, refreshed when the package's requirements change.
$(INSTALLED): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Per-stage settings stamps: rewritten only when the settings a stage reads change, so editing the
# SVM's C grid reruns svm and report and nothing else.
$(STAMPS)/checked: $(EXP) | $(INSTALLED)
	$(RUN) stamps --config $(EXP) --out $(STAMPS)
	touch $@
$(STAMPS)/%.json: $(STAMPS)/checked ;

## data: manifest of the target (and Retinopathy) images, decoded into the image cache
data: $(OUT)/manifest.csv
$(OUT)/manifest.csv: $(STAMPS)/data.json $(DATA_DEPS)
	$(RUN) data --config $(EXP)

## folds: 5x2 folds (or the official split) of every design
folds: $(OUT)/folds/done
$(OUT)/folds/done: $(OUT)/manifest.csv $(STAMPS)/folds.json
	$(RUN) folds --config $(EXP)
	touch $@

## pretrain: the source network of every transfer source (none, imagenet, retinopathy, double)
pretrain: $(OUT)/networks.json
$(OUT)/networks.json: $(OUT)/manifest.csv $(STAMPS)/pretrain.json
	$(RUN) pretrain --config $(EXP)

## finetune: one fine-tuned network per (source, design, repeat, training half)
finetune: $(OUT)/finetuned.csv
$(OUT)/finetuned.csv: $(OUT)/networks.json $(OUT)/folds/done $(STAMPS)/finetune.json
	$(RUN) finetune --config $(EXP)

## features: fc7 features of every network, cached in features_cache/
features: $(OUT)/features.csv
$(OUT)/features.csv: $(OUT)/networks.json $(OUT)/finetuned.csv $(STAMPS)/features.json
	$(RUN) extract --config $(EXP)

## svm: linear SVMs of every cell on the cached features (predictions.csv, metrics.csv)
svm: $(OUT)/metrics.csv
$(OUT)/metrics.csv: $(OUT)/features.csv $(OUT)/folds/done $(STAMPS)/svm.json
	$(RUN) svm --config $(EXP)

## report: tables, plots and statistical comparisons (report.md)
report: $(OUT)/report.md
$(OUT)/report.md: $(OUT)/metrics.csv $(STAMPS)/report.json
	$(RUN) report --config $(EXP)

## compare: print the paired comparison of the transfer sources
compare: $(OUT)/report.md
	$(RUN) compare --config $(EXP)

## clean: delete the results of $(EXP) (its config stays; caches stay)
clean:
	find $(OUT) -mindepth 1 -delete 2>/dev/null || true

## clean-cache: delete features_cache/ (images, networks, features); everything is recomputed
clean-cache:
	find features_cache -mindepth 1 ! -name README.md -delete

## help: this list
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## /  /'

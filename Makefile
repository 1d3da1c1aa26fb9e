# Kova: the two commands (see README.md).
#   make demo   run Kova's main job end to end on this machine
#   make test   run the checks (hack/lint.sh), then the test suite
# Both install what they need first (hack/setup.sh, idempotent, cached).

VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup demo test lint down bench

setup:
	bash hack/setup.sh

demo: setup
	$(VENV)/bin/kova dev demo

down:
	$(VENV)/bin/kova dev down

lint: setup
	KOVA_VENV=$(VENV) bash hack/lint.sh

test: setup
	KOVA_VENV=$(VENV) bash hack/lint.sh
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# make demo: set up and fine-tune a locally generated tiny model on the bundled sample data.
# make test: set up and run every test suite (what CI runs).
VENV := .venv
STAMP := $(VENV)/.cortex-installed

.PHONY: setup demo test bench clean
setup: $(STAMP)

$(STAMP): pyproject.toml scripts/bootstrap.sh
	./scripts/bootstrap.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/cortex-finetune demo

test: setup
	./scripts/run-tests.sh

bench: setup
	$(VENV)/bin/python benchmarks/inspect.py
	$(VENV)/bin/python benchmarks/datasets.py
	$(VENV)/bin/python benchmarks/train.py
	$(VENV)/bin/python benchmarks/adapters.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# The README's two commands: `make run` and `make test`. Both do their own setup.
.PHONY: run test setup check bench clean

VENV ?= .venv

setup:
	@scripts/install

run: setup
	@scripts/run

test: setup
	@scripts/test

check: setup
	@scripts/check

bench: setup
	@scripts/bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache

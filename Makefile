# Shortcuts for the scripts in scripts/ (the README uses the scripts directly, so a machine
# without make can run them too).
.PHONY: run test setup check bench clean
setup: ; @scripts/install
run: ; @scripts/run
test: ; @scripts/test
check: ; @scripts/check
bench: ; @scripts/bench
clean:
	rm -rf .venv build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache

#!/usr/bin/env bash
# Test only: fails on purpose, before touching anything.
echo "broken-deploy: starting (this deploy fails on purpose)"
echo "broken-deploy: failing on purpose with exit code 1" >&2
exit 1

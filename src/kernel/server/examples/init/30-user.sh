#!/usr/bin/env bash
# An example service account: a system user without a login shell. Idempotent.
set -eu
if id -u kernel-demo >/dev/null 2>&1; then
  echo "user kernel-demo already exists"
else
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kernel-demo
  echo "created user kernel-demo"
fi

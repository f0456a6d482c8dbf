#!/usr/bin/env bash
# An example kernel setting. net.core.somaxconn is per network namespace, so applying it on a
# test host does not touch the machine the test hosts run on. Idempotent.
set -eu
conf=/etc/sysctl.d/60-kernel-example.conf
mkdir -p /etc/sysctl.d
printf '# written by Kernel init script 20-sysctl.sh\nnet.core.somaxconn = 4096\n' > "$conf"
sysctl -q -p "$conf"
echo "applied $conf: net.core.somaxconn = $(sysctl -n net.core.somaxconn)"

#!/usr/bin/env bash
# Tell whoever logs in that Kernel manages this server. Idempotent: rewrites one file.
set -eu
mkdir -p /etc/motd.d
cat > /etc/motd.d/50-kernel <<MOTD
This server is managed by Kernel${KERNEL_URL:+ ($KERNEL_URL)}.
MOTD
echo "wrote /etc/motd.d/50-kernel"

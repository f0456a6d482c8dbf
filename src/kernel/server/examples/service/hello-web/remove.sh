#!/usr/bin/env bash
# Remove hello-web; running it twice is fine.
set -u
systemctl disable --now hello-web 2>/dev/null || true
rm -f /etc/systemd/system/hello-web.service
systemctl daemon-reload
systemctl reset-failed hello-web 2>/dev/null || true
rm -rf /var/lib/hello-web
echo "hello-web removed"

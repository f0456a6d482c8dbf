#!/usr/bin/env bash
# A tiny web service with no artifacts: the page and the unit are written right here.
set -euo pipefail
mkdir -p /var/lib/hello-web
cat > /var/lib/hello-web/index.html <<HTML
<!doctype html>
<meta charset="utf-8">
<title>Hello from $(hostname)</title>
<h1>Hello from $(hostname)</h1>
<p>Deployed by Kernel (${KERNEL_URL:-no KERNEL_URL}).</p>
HTML
cat > /etc/systemd/system/hello-web.service <<'UNIT'
[Unit]
Description=Hello web (Kernel example service)
After=network.target

[Service]
ExecStart=/usr/bin/python3 -m http.server 8080 --directory /var/lib/hello-web
User=nobody
Group=nogroup
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable hello-web
systemctl restart hello-web
echo "hello-web deployed: http://$(hostname):8080/"

#!/usr/bin/env bash
# Deploy Sums the way the seed did: fetch the packed files, install them, start the unit.
set -euo pipefail
: "${KERNEL_SERVICE_URL:?is not set: run this script through Kernel}"

# curl, else wget, else python3 (always there: the Kernel agent runs on it).
fetch() {
  if command -v curl >/dev/null 2>&1; then
    echo "downloading $2 with curl"
    curl -fsSL -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    echo "downloading $2 with wget"
    wget -q -O "$2" "$1"
  else
    echo "downloading $2 with python3"
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"
  fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fetch "$KERNEL_SERVICE_URL/sums.tgz" sums.tgz
tar xzf sums.tgz
cd sums_pack
mkdir -p /root/sums
install -m 0755 sums /root/sums/sums
install -m 0644 index.html /root/sums/index.html
install -m 0644 sums.service /usr/lib/systemd/system/sums.service
systemctl daemon-reload
systemctl enable sums
systemctl restart sums   # restart, not start: a second deploy must run the new files
echo "sums deployed: http://$(hostname):8081/"

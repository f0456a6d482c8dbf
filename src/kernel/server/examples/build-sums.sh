#!/usr/bin/env bash
# Pack examples/sums_pack into examples/service/sums/sums.tgz, as the seed README describes
# (`tar czf sums.tgz sums_pack`). Byte-for-byte reproducible: fixed order, owner and times.
set -euo pipefail
cd "$(dirname "$0")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    -cf - sums_pack | gzip -n -9 > service/sums/sums.tgz
echo "wrote service/sums/sums.tgz ($(wc -c < service/sums/sums.tgz) bytes)"

#!/usr/bin/env bash
# Test only: nothing was installed, so there is nothing to remove.
echo "broken-deploy: nothing to remove"

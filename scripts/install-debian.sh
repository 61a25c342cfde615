#!/usr/bin/env bash
# The one place the Debian packages the tests use are installed (idempotent; root or sudo).
#   bash scripts/install-debian.sh [PACKAGE ...]   (default: all of them)
#   dataset-fashion-mnist  full-size data for the benchmarks and the Fashion-MNIST tests
#   postgresql             the real server of the storage, worker and fault tests (.ci/postgres.sh)
#   chromium, chromium-driver  headless browser tests and `sweep report --png`
#   docker-compose         `docker-compose config` validates docker-compose.yml offline
#   slurm-wlm, munge       a live one-node Slurm for tests/deploy/test_slurm.py (.ci/setup-slurm.sh starts it)
set -euo pipefail
command -v apt-get >/dev/null 2>&1 || { echo "install-debian: no apt-get here; install ${*:-the packages above} by hand" >&2; exit 0; }
want=("$@")
[ ${#want[@]} -gt 0 ] || want=(dataset-fashion-mnist postgresql chromium chromium-driver docker-compose slurm-wlm munge)
need=()
for pkg in "${want[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
[ ${#need[@]} -gt 0 ] || exit 0
SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
# Try the local package lists first (fast, works offline with a warm cache); update them only if that fails.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }

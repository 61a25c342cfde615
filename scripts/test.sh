#!/usr/bin/env bash
# Set up everything the tests use on a fresh Debian machine, then run them.
#   bash scripts/test.sh [pytest args]
# Installs: Debian packages (Fashion-MNIST, PostgreSQL, Chromium + chromedriver, docker-compose),
# a virtual environment in .venv with the project and its dev extras, a PostgreSQL server on
# 127.0.0.1 for the storage tests, and a Jupyter kernel for the notebook test.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
  need=()
  for pkg in dataset-fashion-mnist postgresql chromium chromium-driver docker-compose; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null \
      || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

# A PostgreSQL server on 127.0.0.1 for the storage tests (prints its URL).
SWEEP_TEST_POSTGRES_URL=$(bash .ci/postgres.sh)
export SWEEP_TEST_POSTGRES_URL

for setup in .ci/setup-*.sh; do
  [ -e "$setup" ] || continue
  bash "$setup" .venv
done

.venv/bin/python -m pytest "$@"

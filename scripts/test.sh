#!/usr/bin/env bash
# Set up everything the tests use on a fresh Debian machine, then run them.
#   bash scripts/test.sh [pytest args]
# Installs: Debian packages (Fashion-MNIST, PostgreSQL, Chromium + chromedriver, docker-compose),
# a virtual environment in .venv with the project and its dev extras, a PostgreSQL server on
# 127.0.0.1 for the storage tests, and a Jupyter kernel for the notebook test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-debian.sh

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,evidence]'

# A PostgreSQL server on 127.0.0.1 for the storage tests (prints its URL).
SWEEP_TEST_POSTGRES_URL=$(bash .ci/postgres.sh)
export SWEEP_TEST_POSTGRES_URL

for setup in .ci/setup-*.sh; do
  [ -e "$setup" ] || continue
  bash "$setup" .venv
done

.venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# System setup for the report tests (tests/report/test_report_browser.py, tests/test_notebook.py). Idempotent.
#   - headless Chromium + chromedriver: the browser tests (selenium) and `sweep report --png` (kaleido, BROWSER_PATH)
#   - a Jupyter kernel for the venv's Python: the notebook test runs notebooks/lambda_analysis.ipynb with nbclient
# Usage: .ci/report.sh [VENV]   (VENV defaults to .venv)
set -euo pipefail
venv="${1:-.venv}"

bash "$(dirname "$0")/../scripts/install-debian.sh" chromium chromium-driver

# ipykernel's wheel already ships share/jupyter/kernels/python3 inside the venv, and jupyter_client runs
# a kernelspec whose argv[0] is "python" with the running interpreter; install it only if it is missing.
if ! "$venv/bin/python" -c 'from jupyter_client.kernelspec import KernelSpecManager as K; K().get_kernel_spec("python3")' 2>/dev/null; then
    "$venv/bin/python" -m ipykernel install --sys-prefix --name python3
fi

echo "report setup ok: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version | head -1)"

#!/usr/bin/env bash
# CI check for issue 3: run the small CV study on the shipped mnist-sample (grid 5 lambdas x 3
# folds, lambda_1se refit) into a fresh SQLite file, then check `sweep best --rule 1se --format json`
# names both rules with lambda_1se >= lambda_min. Idempotent: a new temporary store every time.
#   bash .ci/cv-sample.sh            (uses .venv/bin/sweep, or $SWEEP if set)
set -euo pipefail
cd "$(dirname "$0")/.."
SWEEP=${SWEEP:-.venv/bin/sweep}
PY=${PY:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
url="sqlite:///$tmp/cv.db"
"$SWEEP" run studies/sample-cv.toml --storage "$url"
"$SWEEP" best sample-cv --storage "$url" --rule 1se --format json | tee "$tmp/best.json"
"$PY" - "$tmp/best.json" <<'PYEOF'
import json, sys
rec = json.load(open(sys.argv[1]))
for key in ("lambda_min", "lambda_1se", "val_acc_min", "val_se_min", "val_acc_1se", "val_se_1se", "test_acc"):
    if not isinstance(rec.get(key), float):
        sys.exit(f"cv-sample: {key} missing or not a number in {rec}")
if not (rec["rule"] == "1se" and rec["lambda"] == rec["lambda_1se"] >= rec["lambda_min"]):
    sys.exit(f"cv-sample: expected rule 1se with lambda_1se >= lambda_min, got {rec}")
print(f"cv-sample: ok, lambda_min {rec['lambda_min']:.3g}, lambda_1se {rec['lambda_1se']:.3g}")
PYEOF

#!/usr/bin/env bash
# One command, offline: set up, index the bundled demo corpus with the bundled
# model, and serve the search page on http://127.0.0.1:${PORT:-5000}/
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
export GLIMPSE_HOME=${GLIMPSE_HOME:-$PWD/glimpse-data/demo}
MODEL=${GLIMPSE_DEMO_MODEL:-local-dir:$PWD/models/glimpse-icons-distil}
# --reembed: a demo home indexed with an earlier bundled model is re-embedded, not refused
.venv/bin/glimpse index demo/corpus --captions demo/corpus/captions.jsonl --model "$MODEL" --reembed
echo "The demo's data lives in $GLIMPSE_HOME. To use the command line on it:"
echo "  export GLIMPSE_HOME=$GLIMPSE_HOME; .venv/bin/glimpse search cat"
exec .venv/bin/glimpse serve --host 127.0.0.1 --port "${PORT:-5000}"

#!/usr/bin/env bash
# Lints a live soundcheck's /openapi.json with Redocly's recommended rules; any error fails (warnings
# are printed). Starts the built debug binary on a free port with a temporary data directory and
# home (so it records itself nowhere else). Usage: scripts/openapi_lint.sh [extra redocly args]
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${SOUNDCHECK_BIN:-${CARGO_TARGET_DIR:-target}/debug/soundcheck}"
[ -x "$bin" ] || { echo "build first: $bin is missing" >&2; exit 1; }
tmp="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

HOME="$tmp" XDG_RUNTIME_DIR="$tmp/run" XDG_STATE_HOME="$tmp/state" SOUNDCHECK_LOG=warn \
    "$bin" serve --addr "127.0.0.1:$port" --data-dir "$tmp/data" --workers 1 >"$tmp/serve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do
    curl -fsS "$base/openapi.json" -o "$tmp/openapi.json" 2>/dev/null && break
    sleep 0.2
done
[ -s "$tmp/openapi.json" ] || { echo "no /openapi.json from $base" >&2; cat "$tmp/serve.log" >&2; exit 1; }

npx --yes @redocly/cli@2.77.0 lint --extends recommended "$tmp/openapi.json" "$@"

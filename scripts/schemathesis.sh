#!/usr/bin/env bash
# Runs schemathesis against a live soundcheck: starts the built debug binary on a free port with a
# temporary data directory and a temporary HOME (so `serve` records itself there, never in the
# user's runtime directory), reads its keys from `soundcheck keys`, and fuzzes every operation of
# /openapi.json with all checks (no 5xx, statuses, content types, headers and bodies as
# documented). Usage: scripts/schemathesis.sh [extra schemathesis args]
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${SOUNDCHECK_BIN:-${CARGO_TARGET_DIR:-target}/debug/soundcheck}"
[ -x "$bin" ] || { echo "build first: $bin is missing" >&2; exit 1; }
data="$(mktemp -d)"
home="$data/home"
mkdir -p -m 700 "$home/run" "$home/state" "$home/data" "$home/config"
# soundcheck with HOME and the XDG directories under the temporary one, and no soundcheck
# settings from outside (schemathesis itself keeps the real environment).
sc_env=(env -u SOUNDCHECK_URL -u SOUNDCHECK_DATA_DIR -u SOUNDCHECK_ADDR -u SOUNDCHECK_TL_KEY
    -u SOUNDCHECK_FT_KEY HOME="$home" XDG_RUNTIME_DIR="$home/run"
    XDG_STATE_HOME="$home/state" XDG_DATA_HOME="$home/data" XDG_CONFIG_HOME="$home/config")
sc() { "${sc_env[@]}" "$bin" "$@"; }
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

# One worker: generations that fuzzing queues run one at a time. Started without the function,
# so that $! is the server itself (env execs it) and the trap below stops it, rather than a
# subshell whose child would outlive the script.
SOUNDCHECK_LOG=warn "${sc_env[@]}" "$bin" serve --addr "127.0.0.1:$port" --data-dir "$data" --workers 1 \
    >"$data/serve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    curl -fsS "$base/openapi.json" >/dev/null 2>&1 && break
    sleep 0.2
done

eval "$(sc keys --data-dir "$data" | sed 's/^/export /')"

# The API keys go in as the two security schemes the document declares. `--checks all` would
# re-enable use_after_free, which schemathesis.toml turns off (a cancelled job stays readable by
# contract), so it is excluded here too.
schemathesis --config-file scripts/schemathesis.toml run "$base/openapi.json" \
    --checks all \
    --exclude-checks use_after_free \
    --header "X-API-Key: $SOUNDCHECK_FT_KEY" \
    --header "Authorization: Bearer $SOUNDCHECK_TL_KEY" \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-30}" \
    --seed "${SCHEMATHESIS_SEED:-1}" \
    "$@"

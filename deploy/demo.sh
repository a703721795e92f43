#!/usr/bin/env bash
# `make demo`: a real export end to end. Starts the mock source API, the
# scheduler and two workers against the local Postgres, Redis and RabbitMQ,
# submits examples/offset.toml (10,000 records through seeded faults and a
# 50 req/s rate limit), waits with a progress display, prints where the CSV
# and manifest are, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# Wherever cargo put the binaries (CARGO_TARGET_DIR, a config file, or ./target).
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/debug"
logs="$root/out/demo-logs"
mkdir -p "$logs"

export PAGEFLEET_DATABASE_URL="postgres://postgres@127.0.0.1:5432/pagefleet_demo"
export PAGEFLEET_NAMESPACE="pagefleet-demo"
# The mock source listens on loopback, which the workers refuse by default.
export PAGEFLEET_OUTBOUND_ALLOW=127.0.0.1
export PAGEFLEET_API="http://127.0.0.1:${DEMO_API_PORT:-8080}"
export MOCK_TOKEN="demo-token-not-a-secret"
# What the workers send: tenant `default`'s secret, the only kind its specs may name.
export PAGEFLEET_SECRET_default__MOCK_TOKEN="$MOCK_TOKEN"
# A fresh bootstrap admin token each run: the scheduler takes it, the CLI sends it.
PAGEFLEET_ADMIN_TOKEN=$(openssl rand -hex 32)
export PAGEFLEET_ADMIN_TOKEN
export PAGEFLEET_TOKEN="$PAGEFLEET_ADMIN_TOKEN"
spec="${DEMO_SPEC:-examples/offset.toml}"

for port in 9000 "${DEMO_API_PORT:-8080}"; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "demo: port $port is already in use; stop what listens there (the examples expect the mock on 9000)" >&2
    exit 1
  fi
done

# A fresh database each run, so the demo always starts from nothing.
PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS pagefleet_demo WITH (FORCE)" \
  -c "CREATE DATABASE pagefleet_demo" >/dev/null

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$bin/pagefleet-mock" --listen 127.0.0.1:9000 --records 10000 --rate 50 --burst 10 \
  --faults standard --hang-ms 6000 --token "$MOCK_TOKEN" >"$logs/mock.log" 2>&1 &
pids+=($!)
"$bin/pagefleet-scheduler" --listen "127.0.0.1:${DEMO_API_PORT:-8080}" >"$logs/scheduler.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  curl -fsS "$PAGEFLEET_API/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
for i in 1 2; do
  "$bin/pagefleet-worker" >"$logs/worker-$i.log" 2>&1 &
  pids+=($!)
done

start=$(date +%s.%N)
set +e
"$bin/pagefleet" submit "$spec" --wait
code=$?
set -e
end=$(date +%s.%N)
stats=$(curl -fsS http://127.0.0.1:9000/_mock/stats || echo '{}')
python3 - "$stats" "$start" "$end" <<'PY' || true
import json, sys
s = json.loads(sys.argv[1] or "{}")
secs = float(sys.argv[3]) - float(sys.argv[2])
if s:
    print(f"mock source: {s['requests']} requests in {secs:.1f} s "
          f"({s['requests']/secs:.1f} req/s against a limit of 50/s, burst 10); "
          f"peak {s['peak_requests_1s']} in any 1 s; 429s: {s['status_429']}; "
          f"faults injected: {sum(s['faults'].values())}")
PY
echo "logs: $logs"
exit $code

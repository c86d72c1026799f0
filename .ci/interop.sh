#!/usr/bin/env bash
# Interoperability: a Python asker written from docs/protocol.md alone (tests/interop/) runs
# hello, catalog, a verified query and the conformance checks against a real `fedgate serve`.
# Needs the release binary (built by .ci/run before this runs) and PyPI for aioquic and cbor2.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${FEDGATE:-target/release/fedgate}
venv=target/interop-venv
if ! "$venv/bin/python" -c "import aioquic, cbor2" 2>/dev/null; then
  if ! python3 -c "import ensurepip" 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check aioquic cbor2
fi

dir=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

"$bin" demo --dir "$dir/demo" --records 300 >/dev/null
provider=hotline12345@wuxi
asker=mediation-center@wuxi
cfg="$dir/demo/$provider/gateway.toml"
"$bin" serve --config "$cfg" >"$dir/serve.log" 2>&1 &
pid=$!

address=$(sed -n 's/^listen = "\(.*\)"$/\1/p' "$cfg")
api=$(sed -n 's/^api = "\(.*\)"$/\1/p' "$cfg")
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/${api%:*}/${api##*:}") 2>/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then cat "$dir/serve.log"; echo "fedgate serve exited"; exit 1; fi
  sleep 0.1
done

tls="$dir/demo/$asker/tls"
"$venv/bin/python" tests/interop/fedgate_client.py \
  --address "$address" --peer "$provider" --node "$asker" \
  --cert "$tls/node.crt" --key "$tls/node.key" --trust "$tls/trust.crt" \
  --dataset hotline-tickets --purpose dispute-mediation --limit 120 --min-records 120

kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
"$bin" audit verify --config "$cfg"

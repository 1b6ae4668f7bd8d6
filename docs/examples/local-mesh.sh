#!/bin/sh
# Your own app behind a Trellis mesh on this machine: a controller in local
# mode and two proxies, all on loopback.
#
#   curl --> client proxy --mTLS--> server proxy --> your app
#           127.0.0.1:4140          127.0.0.1:4143   $APP_ADDR
#
# Walkthrough: docs/local-mode.md ("Your own app behind two proxies").
# Start your app first (HTTP/1.1, h2c or gRPC), then from the repository:
#
#   make build
#   APP_ADDR=127.0.0.1:8080 sh docs/examples/local-mesh.sh
#
# It stops the mesh on Ctrl-C. KEEP_RUNNING=0 stops it after the check.
# Every address below can be overridden from the environment.
set -eu

# --- settings ---
BIN=${BIN:-./bin}                          # trellis-controller, trellis-proxy
APP_ADDR=${APP_ADDR:-127.0.0.1:8080}       # your app
WORK=${WORK:-$(mktemp -d)}                 # store, tokens, CA state, logs
CTRL=${CTRL:-127.0.0.1:8086}               # controller gRPC (proxies dial it)
CTRL_ADMIN=${CTRL_ADMIN:-127.0.0.1:9996}   # controller /ready, /metrics
CLIENT_OUT=${CLIENT_OUT:-127.0.0.1:4140}   # client proxy: your curl talks to it
CLIENT_IN=${CLIENT_IN:-127.0.0.1:4243}     # client proxy: inbound (unused here)
CLIENT_ADMIN=${CLIENT_ADMIN:-127.0.0.1:4191}
CLIENT_TAP=${CLIENT_TAP:-127.0.0.1:4190}   # client proxy: Tap.Observe (the controller's identity only)
SERVER_OUT=${SERVER_OUT:-127.0.0.1:4150}   # server proxy: your app's own calls
SERVER_IN=${SERVER_IN:-127.0.0.1:4143}     # server proxy: mesh peers come here
SERVER_ADMIN=${SERVER_ADMIN:-127.0.0.1:4192}
SERVER_TAP=${SERVER_TAP:-127.0.0.1:4194}
KEEP_RUNNING=${KEEP_RUNNING:-1}

PIDS=""
cleanup() {
  trap - EXIT INT TERM
  [ -z "$PIDS" ] || kill $PIDS 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_ready NAME ADMIN_ADDR: poll /ready for up to 30 s.
wait_ready() {
  i=0
  until curl -fsS -o /dev/null "http://$2/ready" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 300 ]; then
      echo "$1 is not ready after 30s; the end of $WORK/$1.log:" >&2
      tail -n 20 "$WORK/$1.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$1 ready"
}

# --- 1. one token per workload (the credential its proxy shows the controller) ---
mkdir -p "$WORK"
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$WORK/myapp.token"
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$WORK/client.token"

# --- 2. the store: service myapp.local:80 is the workload myapp behind the server proxy ---
cat > "$WORK/mesh.yaml" <<EOF
services:
  - name: myapp                 # reached as myapp.local:80
    namespace: local
    ports:
      - port: 80
workloads:
  - name: myapp                 # your app, behind the server proxy
    namespace: local
    serviceAccount: myapp       # identity spiffe://cluster.local/ns/local/sa/myapp
    token: $(cat "$WORK/myapp.token")
    proxyAddr: $SERVER_IN
    tapAddr: $SERVER_TAP
    endpoints:
      - service: myapp
        port: 80                # no targetPort: the server proxy's --app-addr
  - name: client                # whoever calls through the client proxy
    namespace: local
    serviceAccount: client      # identity spiffe://cluster.local/ns/local/sa/client
    token: $(cat "$WORK/client.token")
    proxyAddr: $CLIENT_IN
    tapAddr: $CLIENT_TAP
EOF

# --- 3. the controller: creates the CA in $WORK/state (anchor.crt is the trust anchor) ---
"$BIN/trellis-controller" local --config "$WORK/mesh.yaml" --state-dir "$WORK/state" \
  --listen "$CTRL" --admin-addr "$CTRL_ADMIN" > "$WORK/controller.log" 2>&1 &
PIDS="$PIDS $!"
wait_ready controller "$CTRL_ADMIN"

# --- 4. the server proxy, in front of your app ---
"$BIN/trellis-proxy" --mode explicit --workload myapp \
  --identity spiffe://cluster.local/ns/local/sa/myapp --token-file "$WORK/myapp.token" \
  --controller-addr "$CTRL" --trust-anchors "$WORK/state/anchor.crt" \
  --inbound-addr "$SERVER_IN" --outbound-addr "$SERVER_OUT" --admin-addr "$SERVER_ADMIN" \
  --tap-addr "$SERVER_TAP" --app-addr "$APP_ADDR" > "$WORK/server-proxy.log" 2>&1 &
PIDS="$PIDS $!"

# --- 5. the client proxy, which your curl or grpcurl talks to ---
"$BIN/trellis-proxy" --mode explicit --workload client \
  --identity spiffe://cluster.local/ns/local/sa/client --token-file "$WORK/client.token" \
  --controller-addr "$CTRL" --trust-anchors "$WORK/state/anchor.crt" \
  --inbound-addr "$CLIENT_IN" --outbound-addr "$CLIENT_OUT" --admin-addr "$CLIENT_ADMIN" \
  --tap-addr "$CLIENT_TAP" > "$WORK/client-proxy.log" 2>&1 &
PIDS="$PIDS $!"
wait_ready server-proxy "$SERVER_ADMIN"
wait_ready client-proxy "$CLIENT_ADMIN"

# --- 6. a request through the mesh: the Host names the service ---
curl -sS -i -H 'Host: myapp.local' "http://$CLIENT_OUT/"
echo

# --- 7. proof that it was meshed: the server proxy saw the client's identity over mTLS ---
curl -s "http://$SERVER_ADMIN/metrics" | grep 'trellis_requests_total{.*tls="true"'

if [ "$KEEP_RUNNING" = 1 ]; then
  echo "mesh running (files in $WORK); Ctrl-C stops it"
  wait
fi

#!/usr/bin/env bash
# Runs ram-authenticator end to end on this machine: builds, runs `init`, starts the STS
# emulator and the webhook server, mints tokens with the `token` command, sends TokenReviews
# over HTTPS the way kube-apiserver does, prints the answers, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER_ID=c-quickstart
WORK=.quickstart
BIN=target/debug

echo "==> building (cargo build --locked --bins)"
cargo build --locked --bins --quiet

rm -rf "$WORK"
mkdir -p "$WORK"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_for_line() { # file prefix -> rest of the first line starting with prefix
  local file=$1 prefix=$2 i
  for i in $(seq 1 200); do
    if line=$(grep -m1 "^$prefix" "$file" 2>/dev/null); then
      echo "${line#"$prefix"}" | tr -d ' '
      return 0
    fi
    sleep 0.05
  done
  echo "timed out waiting for '$prefix' in $file" >&2
  return 1
}

echo "==> ram-authenticator init (serving certificate, key, webhook kubeconfig)"
"$BIN/ram-authenticator" init --cluster-id "$CLUSTER_ID" --state-dir "$WORK/state" \
  --generate-kubeconfig "$WORK/webhook.kubeconfig"

echo "==> starting the STS emulator (examples/emulator-keys.yaml)"
"$BIN/sts-emulator" --listen 127.0.0.1:0 --keys examples/emulator-keys.yaml \
  >"$WORK/emulator.out" 2>"$WORK/emulator.log" &
pids+=($!)
STS_URL=$(wait_for_line "$WORK/emulator.out" "listening on")
echo "    STS emulator at $STS_URL"

echo "==> starting the webhook server (examples/config.yaml)"
"$BIN/ram-authenticator" server --config examples/config.yaml --state-dir "$WORK/state" \
  --generate-kubeconfig "$WORK/webhook.kubeconfig" --port 0 --health-address 127.0.0.1:0 \
  --sts-endpoint "$STS_URL" >"$WORK/server.out" 2>"$WORK/server.log" &
pids+=($!)
WEBHOOK=$(wait_for_line "$WORK/server.out" "serving")
HEALTH=$(wait_for_line "$WORK/server.out" "health")
for i in $(seq 1 100); do
  curl -fsS "$HEALTH/readyz" >/dev/null 2>&1 && break
  sleep 0.05
done
echo "    webhook at $WEBHOOK (kubeconfig for kube-apiserver: $WORK/webhook.kubeconfig)"

# kube-apiserver reads the webhook URL and the CA to trust from the webhook kubeconfig.
grep 'certificate-authority-data' "$WORK/webhook.kubeconfig" | awk '{print $2}' | base64 -d >"$WORK/ca.pem"
WEBHOOK_URL=$(grep ' server: ' "$WORK/webhook.kubeconfig" | awk '{print $2}')

review() { # token apiVersion
  curl -fsS --cacert "$WORK/ca.pem" -H 'Content-Type: application/json' \
    -d "{\"apiVersion\":\"$2\",\"kind\":\"TokenReview\",\"spec\":{\"token\":\"$1\"}}" "$WEBHOOK_URL"
}

echo
echo "==> alice (RAM user) runs the exec credential plugin: ram-authenticator token --cluster-id $CLUSTER_ID"
TOKEN=$(ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI5tQuickstartAlice ALIBABA_CLOUD_ACCESS_KEY_SECRET=QuickstartAliceSecret0000000000 \
  "$BIN/ram-authenticator" token --cluster-id "$CLUSTER_ID" | jq -r .status.token)
echo "    token: ${TOKEN:0:24}... (${#TOKEN} bytes)"
echo "==> kube-apiserver sends a TokenReview (authentication.k8s.io/v1); the answer:"
ANSWER=$(review "$TOKEN" authentication.k8s.io/v1)
echo "$ANSWER" | jq .status
[ "$(echo "$ANSWER" | jq -r .status.authenticated)" = true ] || { echo "quickstart: alice was not authenticated" >&2; exit 1; }
echo "authenticated user: $(echo "$ANSWER" | jq -r .status.user.username) groups: $(echo "$ANSWER" | jq -c .status.user.groups)"

echo
echo "==> a token minted for another cluster is refused without asking STS:"
OTHER=$(ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI5tQuickstartAlice ALIBABA_CLOUD_ACCESS_KEY_SECRET=QuickstartAliceSecret0000000000 \
  "$BIN/ram-authenticator" token --cluster-id c-other | jq -r .status.token)
review "$OTHER" authentication.k8s.io/v1beta1 | jq -c .status

echo
echo "==> the audit log of the server ($WORK/server.log):"
grep ' audit: \|"target":"audit"' "$WORK/server.log" | tail -n 2 || tail -n 2 "$WORK/server.log"
echo
echo "quickstart: OK"

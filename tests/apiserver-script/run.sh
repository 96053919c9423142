#!/usr/bin/env bash
# Tests scripts/configure-apiserver.sh on the sample manifests in fixtures/:
#   kube-apiserver.yaml             as kubeadm writes it
#   kube-apiserver.configured.yaml  the expected result (@KUBECONFIG_DIR@ stands for the
#                                   kubeconfig's directory), also an already-configured input
#   kube-apiserver-indented.yaml    another layout: indented lists, quotes, comments, no volumes
#   kube-apiserver.ack.yaml         the kubeadm manifest as ack-ram-authenticator's own script
#                                   leaves it (@KUBECONFIG_DIR@ as above)
#   the others                      files the script must refuse
# Every case runs in a fresh temporary directory. PyYAML is used to check results; it is
# installed from PyPI if missing.
#
# Usage: tests/apiserver-script/run.sh     Prints "N passed, N failed"; exit 1 on any failure.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
script=$root/scripts/configure-apiserver.sh
fixtures=$here/fixtures
python=${PYTHON:-python3}

if ! "$python" -c 'import yaml' 2>/dev/null; then
  echo "installing PyYAML==6.0.3" >&2
  "$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    PyYAML==6.0.3 >&2 || { echo "cannot install PyYAML"; echo "0 passed, 1 failed"; exit 1; }
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
case_dir=

pass() {
  passed=$((passed + 1))
  echo "ok   $1"
}

fail() {
  failed=$((failed + 1))
  echo "FAIL $1"
  shift
  local line
  for line in "$@"; do echo "     $line"; done
}

# A fresh node layout with a copy of the fixture as the apiserver manifest (mode 0600, as
# kubeadm writes it) and an existing webhook kubeconfig.
setup() {
  case_dir=$(mktemp -d "$work/case.XXXXXX")
  mkdir -p "$case_dir/manifests" "$case_dir/ack-ram-authenticator"
  echo "# webhook kubeconfig" >"$case_dir/ack-ram-authenticator/kubeconfig.yaml"
  cp "$fixtures/$1" "$case_dir/manifests/kube-apiserver.yaml"
  chmod 0600 "$case_dir/manifests/kube-apiserver.yaml"
  manifest=$case_dir/manifests/kube-apiserver.yaml
  kubeconfig=$case_dir/ack-ram-authenticator/kubeconfig.yaml
  backups=$case_dir/backups
}

# Runs the script on the current case; sets rc, out, err.
run_script() {
  rc=0
  bash "$script" --manifest "$manifest" --kubeconfig "$kubeconfig" --backup-dir "$backups" "$@" \
    >"$case_dir/out" 2>"$case_dir/err" || rc=$?
  out=$(cat "$case_dir/out")
  err=$(cat "$case_dir/err")
}

expected_configured() {
  sed "s#@KUBECONFIG_DIR@#$(dirname "$kubeconfig")#g" "$fixtures/kube-apiserver.configured.yaml"
}

# Parses a manifest with PyYAML and checks the ram-authenticator settings are there exactly once.
check_yaml() {
  "$python" - "$1" "$2" <<'PY'
import os, sys, yaml
path, kubeconfig = sys.argv[1:3]
d = os.path.dirname(kubeconfig)
pod = yaml.safe_load(open(path))
[c] = [c for c in pod["spec"]["containers"] if c["name"] == "kube-apiserver"]
args = c.get("command", []) + c.get("args", [])
problems = []
for flag in (f"--authentication-token-webhook-config-file={kubeconfig}",
             "--authentication-token-webhook-version=v1"):
    name = flag.split("=")[0]
    if args.count(flag) != 1 or sum(a.startswith(name) for a in args) != 1:
        problems.append(f"{flag} present {args.count(flag)} times")
mounts = [m for m in c.get("volumeMounts", []) if m["name"] == "ram-authenticator-kubeconfig"]
if mounts != [{"mountPath": d, "name": "ram-authenticator-kubeconfig", "readOnly": True}]:
    problems.append(f"volumeMounts: {mounts}")
vols = [v for v in pod["spec"].get("volumes", []) if v["name"] == "ram-authenticator-kubeconfig"]
if vols != [{"hostPath": {"path": d, "type": "DirectoryOrCreate"},
             "name": "ram-authenticator-kubeconfig"}]:
    problems.append(f"volumes: {vols}")
print("; ".join(problems))
sys.exit(1 if problems else 0)
PY
}

backup_count() {
  find "$backups" -type f ! -name '*.applied' ! -name '*.reverted' 2>/dev/null | wc -l
}

stray_files() {
  find "$case_dir/manifests" -mindepth 1 ! -name kube-apiserver.yaml
}

# ---- A kubeadm manifest -------------------------------------------------------------------

setup kube-apiserver.yaml
original=$(cat "$manifest")
run_script
if [[ $rc -eq 0 ]] && cmp -s <(expected_configured) "$manifest"; then
  pass "kubeadm manifest: the change is exactly the expected file"
else
  fail "kubeadm manifest: the change is exactly the expected file" "exit $rc: $err" \
    "$(diff -u <(expected_configured) "$manifest" | head -40)"
fi

if problems=$(check_yaml "$manifest" "$kubeconfig"); then
  pass "kubeadm manifest: the result parses as YAML, each flag, the mount and the volume once"
else
  fail "kubeadm manifest: the result parses as YAML, each flag, the mount and the volume once" "$problems"
fi

backup=$(find "$backups" -type f -name 'kube-apiserver.yaml.*' ! -name '*.applied' 2>/dev/null)
if [[ $(backup_count) -eq 1 ]] && [[ $(cat "$backup") == "$original" ]] \
  && [[ $(basename "$backup") =~ ^kube-apiserver\.yaml\.[0-9]{8}T[0-9]{6}Z$ ]] \
  && [[ $out == *"backed up $manifest to $backup"* ]]; then
  pass "kubeadm manifest: a timestamped backup of the original is written and reported"
else
  fail "kubeadm manifest: a timestamped backup of the original is written and reported" \
    "backups: $(find "$backups" -type f 2>/dev/null | tr '\n' ' ')" "out: $out"
fi
if cmp -s "$backup.applied" "$manifest" && [[ $(stat -c %a "$backup.applied") == 600 ]]; then
  pass "kubeadm manifest: the file as written is recorded beside the backup"
else
  fail "kubeadm manifest: the file as written is recorded beside the backup" \
    "$(ls -l "$backups" 2>&1)"
fi

if [[ $(stat -c %a "$manifest") == 600 && -z $(stray_files) ]]; then
  pass "kubeadm manifest: mode 0600 kept, no temporary file left beside it"
else
  fail "kubeadm manifest: mode 0600 kept, no temporary file left beside it" \
    "mode $(stat -c %a "$manifest")" "$(stray_files)"
fi

first=$(cat "$manifest")
run_script
if [[ $rc -eq 0 && $(cat "$manifest") == "$first" && $(backup_count) -eq 1 \
  && $out == *"nothing to do"* ]]; then
  pass "second run: no change (byte identical), no new backup"
else
  fail "second run: no change (byte identical), no new backup" "exit $rc" "out: $out" "err: $err" \
    "backups: $(backup_count)"
fi

# Control-plane nodes may lack PyYAML: python3 -S leaves out site-packages.
setup kube-apiserver.yaml
printf '#!/bin/sh\nexec %s -S "$@"\n' "$(command -v "$python")" >"$case_dir/python-no-site"
chmod +x "$case_dir/python-no-site"
rc=0
PYTHON=$case_dir/python-no-site bash "$script" --manifest "$manifest" --kubeconfig "$kubeconfig" \
  --backup-dir "$backups" >"$case_dir/out" 2>&1 || rc=$?
if [[ $rc -eq 0 ]] && cmp -s <(expected_configured) "$manifest" \
  && grep -q "PyYAML is not installed" "$case_dir/out"; then
  pass "without PyYAML: the same result, checked by the script's own reader"
else
  fail "without PyYAML: the same result, checked by the script's own reader" "exit $rc" \
    "$(cat "$case_dir/out")"
fi

# ---- An already configured manifest -------------------------------------------------------

setup kube-apiserver.yaml
expected_configured >"$manifest"
before=$(md5sum <"$manifest")
run_script
if [[ $rc -eq 0 && $(md5sum <"$manifest") == "$before" && $(backup_count) -eq 0 ]]; then
  pass "already configured manifest: left alone, no backup"
else
  fail "already configured manifest: left alone, no backup" "exit $rc" "$out" "$err"
fi

# ---- Dry run ------------------------------------------------------------------------------

setup kube-apiserver.yaml
before=$(md5sum <"$manifest")
run_script --dry-run
if [[ $rc -eq 0 && $(md5sum <"$manifest") == "$before" && $(backup_count) -eq 0 \
  && -z $(stray_files) ]]; then
  pass "dry run: the manifest is not changed and no backup is written"
else
  fail "dry run: the manifest is not changed and no backup is written" "exit $rc" "$err"
fi
expected_diff=$(diff -u --label "$manifest" --label "$manifest (configured)" "$manifest" \
  <(expected_configured))
if [[ $out == "$expected_diff" ]]; then
  pass "dry run: prints the unified diff of the change"
else
  fail "dry run: prints the unified diff of the change" "$(diff <(echo "$expected_diff") <(echo "$out") | head -20)"
fi

# A dry run does not need the kubeconfig to exist yet.
setup kube-apiserver.yaml
rm "$kubeconfig"
run_script --dry-run
if [[ $rc -eq 0 && $out == *"+    - --authentication-token-webhook-version=v1"* ]]; then
  pass "dry run: works before the webhook kubeconfig exists"
else
  fail "dry run: works before the webhook kubeconfig exists" "exit $rc" "$err"
fi

# ---- Another layout -----------------------------------------------------------------------

setup kube-apiserver-indented.yaml
original=$(cat "$manifest")
run_script
if [[ $rc -eq 0 ]] && problems=$(check_yaml "$manifest" "$kubeconfig"); then
  pass "indented layout without volumes: configured, result parses with each setting once"
else
  fail "indented layout without volumes: configured, result parses with each setting once" \
    "exit $rc: $err" "${problems:-}"
fi
if [[ $(grep -c '^# A hand-written manifest' "$manifest") -eq 1 ]] \
  && grep -q '^        - "--secure-port=6443"$' "$manifest" \
  && grep -q '^      volumeMounts:$' "$manifest" && grep -q '^        - mountPath: ' "$manifest" \
  && grep -q '^  volumes:$' "$manifest" && grep -q '^    - hostPath:$' "$manifest"; then
  pass "indented layout: comments and quoting kept, new lines follow the file's indentation"
else
  fail "indented layout: comments and quoting kept, new lines follow the file's indentation" \
    "$(diff <(echo "$original") "$manifest")"
fi
first=$(cat "$manifest")
run_script
if [[ $rc -eq 0 && $(cat "$manifest") == "$first" ]]; then
  pass "indented layout: second run is a no-op"
else
  fail "indented layout: second run is a no-op" "exit $rc: $err"
fi

# ---- Revert ---------------------------------------------------------------------------------

setup kube-apiserver.yaml
original_sum=$(md5sum <"$manifest")
run_script
configured=$(cat "$manifest")
run_script --revert --dry-run
if [[ $rc -eq 0 && $(cat "$manifest") == "$configured" \
  && $out == *"-    - --authentication-token-webhook-version=v1"* ]]; then
  pass "revert dry run: prints the diff back to the backup, changes nothing"
else
  fail "revert dry run: prints the diff back to the backup, changes nothing" "exit $rc" "$out" "$err"
fi
run_script --revert
if [[ $rc -eq 0 && $(md5sum <"$manifest") == "$original_sum" && $out == *"restored $manifest from"* \
  && $(stat -c %a "$manifest") == 600 && -z $(stray_files) ]]; then
  pass "revert: the manifest is the original again, byte for byte, mode kept"
else
  fail "revert: the manifest is the original again, byte for byte, mode kept" "exit $rc" "$out" "$err"
fi
run_script --revert
if [[ $rc -eq 0 && $(md5sum <"$manifest") == "$original_sum" && $out == *"nothing to revert"* ]]; then
  pass "revert twice: the second has nothing to do"
else
  fail "revert twice: the second has nothing to do" "exit $rc" "$out" "$err"
fi
run_script
if [[ $rc -eq 0 ]] && cmp -s <(expected_configured) "$manifest"; then
  pass "configure after a revert: the same result as the first time"
else
  fail "configure after a revert: the same result as the first time" "exit $rc" "$err"
fi

# A manifest edited after the change is not overwritten by a revert.
echo "# edited by hand" >>"$manifest"
edited=$(md5sum <"$manifest")
run_script --revert
if [[ $rc -eq 1 && $err == *"changed since this script wrote it"* && $err == *"diff -u"* \
  && $(md5sum <"$manifest") == "$edited" && -z $(stray_files) ]]; then
  pass "revert refuses a manifest changed since, and changes nothing"
else
  fail "revert refuses a manifest changed since, and changes nothing" "exit $rc" "$out" "$err"
fi

setup kube-apiserver.yaml
before=$(md5sum <"$manifest")
run_script --revert
if [[ $rc -eq 0 && $out == *"nothing to revert"* && $(md5sum <"$manifest") == "$before" ]]; then
  pass "revert without a previous change: nothing to do"
else
  fail "revert without a previous change: nothing to do" "exit $rc" "$out" "$err"
fi

# ---- ack-ram-authenticator's layout ---------------------------------------------------------

setup kube-apiserver.ack.yaml
sed -i "s#@KUBECONFIG_DIR@#$(dirname "$kubeconfig")#g" "$manifest"
original=$(cat "$manifest")
run_script
added=$(diff <(echo "$original") "$manifest" | grep -c '^>')
if [[ $rc -eq 0 && $added -eq 1 ]] \
  && grep -qx -- "    - --authentication-token-webhook-version=v1" "$manifest" \
  && ! grep -q "ram-authenticator-kubeconfig" "$manifest" \
  && [[ $out == *"kept the existing volumeMount ack-ram-authenticator"* ]]; then
  pass "ack layout: its mount is kept, no second mount; only the version flag is added"
else
  fail "ack layout: its mount is kept, no second mount; only the version flag is added" \
    "exit $rc: $err" "$(diff <(echo "$original") "$manifest")"
fi
if "$python" - "$manifest" "$kubeconfig" <<'PY'
import sys, yaml
path, kubeconfig = sys.argv[1:3]
pod = yaml.safe_load(open(path))
[c] = [c for c in pod["spec"]["containers"] if c["name"] == "kube-apiserver"]
args = c["command"]
assert args.count(f"--authentication-token-webhook-config-file={kubeconfig}") == 1, args
assert args.count("--authentication-token-webhook-version=v1") == 1, args
assert [m for m in c["volumeMounts"] if m["mountPath"].startswith(kubeconfig.rsplit("/", 1)[0])] \
    == [{"mountPath": kubeconfig, "name": "ack-ram-authenticator"}], c["volumeMounts"]
PY
then
  pass "ack layout: the result parses, each flag once, one mount of the kubeconfig"
else
  fail "ack layout: the result parses, each flag once, one mount of the kubeconfig"
fi
first=$(cat "$manifest")
run_script
if [[ $rc -eq 0 && $(cat "$manifest") == "$first" && $out == *"nothing to do"* ]]; then
  pass "ack layout: second run is a no-op"
else
  fail "ack layout: second run is a no-op" "exit $rc" "$out" "$err"
fi
run_script --revert
if [[ $rc -eq 0 && $(cat "$manifest") == "$original" ]]; then
  pass "ack layout: revert restores ack-ram-authenticator's manifest exactly"
else
  fail "ack layout: revert restores ack-ram-authenticator's manifest exactly" "exit $rc" "$err"
fi

# The kubeconfig's directory mounted from another host path is refused.
setup kube-apiserver.ack.yaml
sed -i "s#@KUBECONFIG_DIR@#$(dirname "$kubeconfig")#g" "$manifest"
sed -i "s#      path: $(dirname "$kubeconfig")/kubeconfig.yaml#      path: /srv/elsewhere/kubeconfig.yaml#" "$manifest"
before=$(md5sum <"$manifest")
run_script
if [[ $rc -eq 1 && $err == *"not from the same host path"* && $(md5sum <"$manifest") == "$before" \
  && $(backup_count) -eq 0 ]]; then
  pass "refuses a mount of the kubeconfig from another host path"
else
  fail "refuses a mount of the kubeconfig from another host path" "exit $rc" "$err"
fi

# ---- Refusals -----------------------------------------------------------------------------

refuse() { # fixture, expected message, description
  setup "$1"
  local before
  before=$(md5sum <"$manifest")
  run_script
  if [[ $rc -eq 1 && $err == *"refused"*"$2"* && $(md5sum <"$manifest") == "$before" \
    && $(backup_count) -eq 0 && -z $(stray_files) ]]; then
    pass "refuses $3"
  else
    fail "refuses $3" "exit $rc, expected 1" "err: $err" "expected message: $2"
  fi
}

refuse deployment.yaml "not a static pod manifest" "a Deployment"
refuse pod-without-apiserver.yaml "expected one container named kube-apiserver, found 0" \
  "a pod without a kube-apiserver container"
refuse pod-without-command.yaml "the kube-apiserver container has no command: list" \
  "a kube-apiserver container without command"
refuse other-webhook.yaml \
  "--authentication-token-webhook-config-file is already set to '/etc/kubernetes/other-webhook/kubeconfig.yaml'" \
  "another webhook config file"
refuse webhook-v1beta1.yaml "--authentication-token-webhook-version is already set to 'v1beta1'" \
  "another webhook version"
refuse volume-conflict.yaml "volume ram-authenticator-kubeconfig is not the hostPath" \
  "a volume of the same name elsewhere"
refuse anchors.yaml "anchors, aliases and tags are not supported" "YAML anchors"
refuse multi-document.yaml "more than one YAML document" "several YAML documents"
refuse flow-command.yaml "command is not a block list" "a flow-style command list"
refuse multiline-value.yaml "multi-line values are not supported" "a multi-line value"

setup kube-apiserver.yaml
before=$(md5sum <"$manifest")
rm "$kubeconfig"
run_script
if [[ $rc -eq 1 && $err == *"does not exist: kube-apiserver would not start without it"* \
  && $(md5sum <"$manifest") == "$before" && $(backup_count) -eq 0 ]]; then
  pass "refuses while the webhook kubeconfig does not exist"
else
  fail "refuses while the webhook kubeconfig does not exist" "exit $rc" "$err"
fi

setup kube-apiserver.yaml
before=$(md5sum <"$manifest")
backups=$case_dir/manifests
run_script
if [[ $rc -eq 1 && $err == *"is the manifest's directory"* && $(md5sum <"$manifest") == "$before" \
  && -z $(stray_files) ]]; then
  pass "refuses a backup directory that is the manifest directory"
else
  fail "refuses a backup directory that is the manifest directory" "exit $rc" "$err"
fi

setup kube-apiserver.yaml
before=$(md5sum <"$manifest")
kubeconfig="relative/kubeconfig.yaml"
run_script
if [[ $rc -eq 1 && $err == *"--kubeconfig must be a plain absolute file path"* \
  && $(md5sum <"$manifest") == "$before" ]]; then
  pass "refuses a relative kubeconfig path"
else
  fail "refuses a relative kubeconfig path" "exit $rc" "$err"
fi

setup kube-apiserver.yaml
rc=0
bash "$script" --no-such-option >"$case_dir/out" 2>"$case_dir/err" || rc=$?
if [[ $rc -eq 2 ]] && grep -q "unknown argument: --no-such-option" "$case_dir/err"; then
  pass "an unknown option is a usage error (exit 2)"
else
  fail "an unknown option is a usage error (exit 2)" "exit $rc"
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]

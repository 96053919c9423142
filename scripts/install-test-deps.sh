#!/usr/bin/env bash
# Installs what the test suite needs besides cargo:
# - kubectl, for tests/kubectl.rs and for rendering the kustomize overlays
#   (scripts/validate-manifests.sh runs `kubectl kustomize`);
# - Prometheus (Debian package `prometheus`): `promtool check rules` / `promtool test rules` for
#   deploy/monitoring, and the real server that tests/prometheus.rs starts on loopback.
#
# Idempotent and quiet when everything is already there. A kubectl already on PATH (or named by
# $KUBECTL) is kept; otherwise Debian's `kubernetes-client` package is installed with apt-get.
# tests/kubectl.rs works with any kubectl from 1.20 on (`kubectl auth whoami` is also checked
# when the kubectl has it, 1.28 and later); the overlays need kustomize v4 or later (kubectl 1.21+).
# A promtool and prometheus already on PATH (or named by $PROMTOOL and $PROMETHEUS) are kept.
set -euo pipefail

have_kubectl() {
    local k="${KUBECTL:-kubectl}"
    command -v "$k" >/dev/null 2>&1 && "$k" version --client >/dev/null 2>&1
}

have_prometheus() {
    local p="${PROMETHEUS:-prometheus}" t="${PROMTOOL:-promtool}"
    command -v "$p" >/dev/null 2>&1 && "$p" --version >/dev/null 2>&1 &&
        command -v "$t" >/dev/null 2>&1 && "$t" --version >/dev/null 2>&1
}

packages=()
have_kubectl || packages+=(kubernetes-client)
have_prometheus || packages+=(prometheus)
if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: ${packages[*]} missing and apt-get is not available; install them by hand (or set KUBECTL, PROMETHEUS, PROMTOOL)" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-test-deps: ${packages[*]} missing; run this script as root to install them" >&2
        exit 1
    fi
fi

echo "install-test-deps: installing Debian packages ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >/dev/null
# On a host with systemd, the prometheus package also starts its own service (port 9090); the
# tests do not use it: they start their own server on a free loopback port.
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

if ! KUBECTL=kubectl have_kubectl; then
    echo "install-test-deps: kubernetes-client was installed but kubectl does not run" >&2
    exit 1
fi
if ! PROMETHEUS=prometheus PROMTOOL=promtool have_prometheus; then
    echo "install-test-deps: prometheus was installed but prometheus or promtool does not run" >&2
    exit 1
fi
echo "install-test-deps: $(kubectl version --client 2>/dev/null | head -n 1); $(promtool --version 2>&1 | head -n 1)"

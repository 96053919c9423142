#!/usr/bin/env bash
# Installs what the test suite needs besides cargo: kubectl, for tests/kubectl.rs, and Python's
# Prometheus client (its OpenMetrics parser), for tests/observability.rs.
#
# Idempotent and quiet when everything is already there. A kubectl already on PATH (or named by
# $KUBECTL) is kept; otherwise Debian's `kubernetes-client` package is installed with apt-get.
# tests/kubectl.rs works with any kubectl from 1.20 on (`kubectl auth whoami` is also checked
# when the kubectl has it, 1.28 and later).
set -euo pipefail

have_kubectl() {
    local k="${KUBECTL:-kubectl}"
    command -v "$k" >/dev/null 2>&1 && "$k" version --client >/dev/null 2>&1
}

# Python's Prometheus client, whose OpenMetrics parser reads /metrics in tests/observability.rs
# (which tries `python3`, then the system's /usr/bin/python3, as this does).
have_prometheus_parser() {
    local py
    for py in python3 /usr/bin/python3; do
        "$py" -c 'import prometheus_client.openmetrics.parser' >/dev/null 2>&1 && return 0
    done
    return 1
}
if ! have_prometheus_parser; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "install-test-deps: installing python3-prometheus-client"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-prometheus-client >/dev/null
    elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        echo "install-test-deps: installing python3-prometheus-client"
        sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-prometheus-client >/dev/null
    fi
    if ! have_prometheus_parser; then
        echo "install-test-deps: python3 with prometheus_client is missing; install python3-prometheus-client (Debian) or 'pip install prometheus-client'" >&2
        exit 1
    fi
fi

if have_kubectl; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: kubectl is missing and apt-get is not available; install kubectl by hand (or set KUBECTL)" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-test-deps: kubectl is missing; run this script as root to install kubernetes-client" >&2
        exit 1
    fi
fi

echo "install-test-deps: installing kubectl (Debian package kubernetes-client)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >/dev/null
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null

if ! KUBECTL=kubectl have_kubectl; then
    echo "install-test-deps: kubernetes-client was installed but kubectl does not run" >&2
    exit 1
fi
echo "install-test-deps: $(kubectl version --client 2>/dev/null | head -n 1)"

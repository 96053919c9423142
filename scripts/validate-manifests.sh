#!/usr/bin/env bash
# Validates every manifest under crds/ and examples/, and the output of `kubectl kustomize` for
# the deploy/ overlays and deploy/monitoring, offline: YAML syntax, built-in objects against the
# Kubernetes OpenAPI schema (strict: unknown fields are errors), the CRD as an
# apiextensions.k8s.io/v1 object and the RAMIdentityMapping samples against the CRD's schema; the
# cluster ID, STS region and image each set in one place per overlay; the PrometheusRule generated
# from the plain rules file. The checks are in scripts/validate_manifests.py; this wrapper
# installs what it needs (kubectl comes from scripts/install-test-deps.sh).
#
# Usage: scripts/validate-manifests.sh [--root DIR] [--kubernetes-version X.Y] [--write-prometheusrule]
#                                     [--self-test]
#
# Dependencies, pinned, come from PyPI on first use into target/validate-manifests-pylib
# (override with VALIDATE_MANIFESTS_PYLIB); kubernetes-validate carries the Kubernetes schemas,
# so validation itself needs no network. Set RAM_AUTHENTICATOR_BIN to a built binary to also
# check the server config files with `ram-authenticator check-config`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
requirements=(kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.3)
lib=${VALIDATE_MANIFESTS_PYLIB:-$root/target/validate-manifests-pylib}
stamp=$lib/.requirements

if [[ ! -f $stamp || "$(cat "$stamp")" != "${requirements[*]}" ]]; then
  echo "installing ${requirements[*]} into $lib" >&2
  rm -rf "$lib"
  mkdir -p "$lib"
  "$python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$lib" "${requirements[@]}"
  printf '%s' "${requirements[*]}" >"$stamp"
fi

PYTHONPATH="$lib${PYTHONPATH:+:$PYTHONPATH}" exec "$python" "$root/scripts/validate_manifests.py" "$@"

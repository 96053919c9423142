#!/usr/bin/env bash
# Runs every test of the project: installs what the tests need, then the Rust unit, property and
# black-box tests (which start the real binaries), the apiserver-script tests, the manifest
# validation (with the rendered kustomize overlays) and the alert rules' checks and unit tests.
# Exits non-zero when any of them fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
# Tests talk to loopback only: a `token` run that finds no credentials must not fall through to
# the real ECS metadata service (100.100.100.200). Tests of the ECS source point the client at the
# emulator's stand-in instead, and tests that clear the environment set this themselves.
export ALIBABA_CLOUD_ECS_METADATA_DISABLED=true
cargo test --locked --all-targets
tests/apiserver-script/run.sh
# The config files also go through the server's own check-config (built by cargo test above).
RAM_AUTHENTICATOR_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/ram-authenticator" scripts/validate-manifests.sh
# The validation's own checks catch what they are for (a second place for the cluster ID, an image
# written out, a stale PrometheusRule, a runbook section missing).
scripts/validate-manifests.sh --self-test
promtool check rules deploy/monitoring/ram-authenticator.rules.yaml
promtool test rules deploy/monitoring/ram-authenticator.rules.test.yaml

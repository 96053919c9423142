#!/usr/bin/env bash
# Runs every test of the project: installs what the tests need, then the Rust unit, property and
# black-box tests (which start the real binaries), the apiserver-script tests and the manifest
# validation. Exits non-zero when any of them fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo test --locked --all-targets
tests/apiserver-script/run.sh
scripts/validate-manifests.sh

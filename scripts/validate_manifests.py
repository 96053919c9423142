#!/usr/bin/env python3
"""Validates the Kubernetes manifests under crds/ and examples/ and the kustomize output, offline.

Every kustomization in RENDERED (the deploy/ overlays and deploy/monitoring) is rendered with
`kubectl kustomize` and each object of its output is checked like a file's objects below. For
each overlay, a second check edits the cluster ID, the STS region and the image tag in the
overlay's kustomization.yaml (in a copy of the tree), renders again and requires the new values
to reach every container and the old ones to have gone: each is set in exactly one place.

For every *.yaml / *.yml file under SEARCHED (kustomization.yaml files excepted: their output is
checked instead):
  * every YAML document must parse;
  * files that are not Kubernetes objects (the server's config files, the webhook kubeconfig) are
    named in NOT_KUBERNETES below and get a check of their own;
  * built-in Kubernetes objects are validated against the Kubernetes OpenAPI schema bundled with
    kubernetes-validate, strictly: an unknown field is an error, and so is a kind or apiVersion
    the schema does not know;
  * CustomResourceDefinitions are validated as apiextensions.k8s.io/v1 objects, and custom
    resources (RAMIdentityMapping) against the openAPIV3Schema of the CRD in crds/, also strictly
    (the API server's strict field validation, kubectl's default, refuses unknown fields);
  * a few consistency checks: the server config in the ram-authenticator-config ConfigMap passes
    `check-config` (with the cluster ID of the rendered settings ConfigMap), the mappings in the
    alibabacloud-auth ConfigMap are well formed, and the PrometheusRule is the one generated from
    the plain Prometheus rules file (`--write-prometheusrule` regenerates it).

Prints one line per file and a closing "N passed, N failed"; exits 1 if any file failed.
Run through scripts/validate-manifests.sh, which installs the dependencies.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import importlib_resources
import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

# The newest Kubernetes version bundled by the pinned kubernetes-validate.
DEFAULT_KUBERNETES_VERSION = "1.37"

# Directories searched recursively, relative to the repository root (a new directory of plain
# manifests is one more entry).
SEARCHED = ("crds", "examples")

# Kustomizations rendered with `kubectl kustomize` and validated object by object (a new
# kustomization is one more entry).
RENDERED = (
    "deploy/overlays/control-plane",
    "deploy/overlays/hosted",
    "deploy/monitoring",
)

# Overlays whose cluster ID, STS region and image are each set in one place (their
# kustomization.yaml), checked by editing that place.
SINGLE_PLACE = ("deploy/overlays/control-plane", "deploy/overlays/hosted")

# The ConfigMap of per-cluster settings the overlays generate, and the keys set there.
SETTINGS_CONFIGMAP = "ram-authenticator-settings"
SETTINGS_KEYS = ("ACK_CLUSTER_ID", "STS_REGION")

# The server configuration ConfigMap (deploy/base), checked with check-config.
SERVER_CONFIGMAP = ("kube-system", "ram-authenticator-config", "config.yaml")

# The plain Prometheus rules file (the source) and the PrometheusRule generated from it.
PROMETHEUS_RULES = "deploy/monitoring/ram-authenticator.rules.yaml"
PROMETHEUS_RULE = "deploy/monitoring/prometheusrule.yaml"
# Where each alert's runbook_url points: a section headed with the alert's name.
RUNBOOK = "docs/runbook.md"

# Files that are YAML but not Kubernetes objects, with the check each one gets.
SERVER_CONFIG = "ram-authenticator server config"
KUBECONFIG = "kubeconfig"
EMULATOR_KEYS = "sts-emulator keys file"
NOT_KUBERNETES = {
    "examples/config.yaml": SERVER_CONFIG,
    "examples/webhook-kubeconfig.yaml": KUBECONFIG,
    "examples/emulator-keys.yaml": EMULATOR_KEYS,
}

# Files whose Deployment runs `ram-authenticator token --write-token-file PATH --refresh` as a
# sidecar for an app whose kubeconfig (in a ConfigMap: namespace, name, key) reads `tokenFile: PATH`.
TOKEN_FILE_SIDECARS = {
    "examples/workload-sidecar/deployment.yaml": ("apps", "target-cluster", "kubeconfig"),
}

# The ConfigMap read by the ACKConfigMap source.
ACK_CONFIGMAP = ("kube-system", "alibabacloud-auth")


class Failure(Exception):
    """A file did not pass; the message says why."""


def load_documents(path: Path) -> list[Any]:
    """Every non-empty document of a YAML file."""
    try:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise Failure("not valid YAML: " + " ".join(str(e).split())) from e
    docs = [d for d in docs if d is not None]
    if not docs:
        raise Failure("no YAML document")
    return docs


def describe(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    name = meta.get("name", "?")
    ns = meta.get("namespace")
    return f"{doc.get('kind', '?')} {ns + '/' if ns else ''}{name}"


def error_text(e: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
    return f"{where}: {e.message}"


# ---- Custom resources -------------------------------------------------------------------------

def openapi_to_jsonschema(schema: Any) -> Any:
    """A CRD's OpenAPI v3 schema as a JSON Schema that refuses unknown fields.

    `nullable: true` becomes "or null"; an object with `properties` and no
    `additionalProperties` (and no x-kubernetes-preserve-unknown-fields) gets
    `additionalProperties: false`, which is what strict field validation does.
    """
    if isinstance(schema, list):
        return [openapi_to_jsonschema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: openapi_to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = openapi_to_jsonschema(value)
        elif key == "nullable" or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = value
    if schema.get("nullable") is True:
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        elif t is None and "enum" in out:
            out["enum"] = list(out["enum"]) + [None]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


class ObjectMetaValidator:
    """Validates metadata against the strict ObjectMeta schema of the chosen Kubernetes version."""

    def __init__(self, version: str):
        base = importlib_resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
        candidates = sorted(
            (p.name for p in base.iterdir() if p.name.endswith("-local-strict")),
            key=lambda n: tuple(int(x) for x in n[1:].split("-")[0].split(".")),
        )
        wanted = tuple(int(x) for x in version.split(".")[:2])
        chosen = [
            n for n in candidates
            if tuple(int(x) for x in n[1:].split("-")[0].split(".")[:2]) <= wanted
        ]
        if not chosen:
            raise SystemExit(f"kubernetes-validate bundles no schema for Kubernetes {version}")
        folder = base.joinpath(chosen[-1])
        schema = json.loads(folder.joinpath("objectmeta-meta-v1.json").read_text())
        definitions = json.loads(folder.joinpath("_definitions.json").read_text())
        registry = Resource.from_contents(schema) @ Registry()
        registry = Resource.from_contents(definitions) @ registry
        self.validator = jsonschema.Draft202012Validator(schema, registry=registry)

    def errors(self, metadata: Any) -> list[str]:
        return [
            "metadata." + error_text(e)
            for e in sorted(self.validator.iter_errors(metadata), key=str)
        ]


class CustomResources:
    """The CRDs found under crds/, by (group, version, kind)."""

    def __init__(self, meta: ObjectMetaValidator):
        self.meta = meta
        self.kinds: dict[tuple[str, str, str], tuple[str, Any]] = {}

    def add_crd(self, crd: dict) -> list[str]:
        """Registers a CRD; returns the problems found in it beyond the schema check."""
        problems = []
        spec = crd.get("spec") or {}
        group = spec.get("group", "")
        names = spec.get("names") or {}
        expected = f"{names.get('plural', '')}.{group}"
        if (crd.get("metadata") or {}).get("name") != expected:
            problems.append(f"metadata.name must be <plural>.<group>, {expected!r}")
        if spec.get("scope") not in ("Cluster", "Namespaced"):
            problems.append(f"spec.scope must be Cluster or Namespaced, not {spec.get('scope')!r}")
        storage = [v.get("name") for v in spec.get("versions") or [] if v.get("storage") is True]
        if len(storage) != 1:
            problems.append(f"exactly one version must have storage: true, found {storage}")
        for version in spec.get("versions") or []:
            schema = ((version.get("schema") or {}).get("openAPIV3Schema"))
            if schema is None:
                problems.append(f"version {version.get('name')}: no openAPIV3Schema")
                continue
            converted = openapi_to_jsonschema(schema)
            try:
                jsonschema.Draft4Validator.check_schema(converted)
            except jsonschema.SchemaError as e:
                problems.append(f"version {version.get('name')}: schema is not valid: {e.message}")
                continue
            if version.get("served"):
                key = (group, version.get("name"), names.get("kind"))
                self.kinds[key] = (spec.get("scope", ""), converted)
        return problems

    def validate(self, doc: dict) -> list[str]:
        api_version = str(doc.get("apiVersion", ""))
        group, _, version = api_version.rpartition("/")
        key = (group, version, doc.get("kind"))
        if key not in self.kinds:
            return [f"no served CRD under crds/ defines {doc.get('kind')} in {api_version}"]
        scope, schema = self.kinds[key]
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        problems = [
            error_text(e)
            for e in sorted(jsonschema.Draft4Validator(schema).iter_errors(body), key=str)
        ]
        metadata = doc.get("metadata")
        if not isinstance(metadata, dict) or not metadata.get("name"):
            problems.append("metadata.name is missing")
        else:
            problems += self.meta.errors(metadata)
            if scope == "Cluster" and "namespace" in metadata:
                problems.append("metadata.namespace set on a cluster-scoped resource")
            if scope == "Namespaced" and "namespace" not in metadata:
                problems.append("metadata.namespace missing on a namespaced resource")
        return problems


# ---- Files that are not Kubernetes objects ----------------------------------------------------

def check_server_config(docs: list[Any], root: Path, rel: str) -> str:
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise Failure("a server config file is one YAML mapping")
    keys = {str(k).lower() for k in docs[0]}
    unknown = keys - {"clusterid", "server"}
    if unknown:
        raise Failure(f"unknown top-level keys: {sorted(unknown)}")
    problems = run_check_config(root / rel)
    if problems:
        raise Failure(problems[0])
    binary = os.environ.get("RAM_AUTHENTICATOR_BIN")
    if binary:
        return f"{SERVER_CONFIG}, checked by {Path(binary).name} check-config"
    return f"{SERVER_CONFIG}, parsed"


def run_check_config(path: Path) -> list[str]:
    """`$RAM_AUTHENTICATOR_BIN check-config` on a file, when that variable names a binary."""
    binary = os.environ.get("RAM_AUTHENTICATOR_BIN")
    if not binary:
        return []
    run = subprocess.run(
        [binary, "check-config", "--config", str(path)],
        capture_output=True, text=True, check=False,
    )
    if run.returncode != 0:
        return [f"{binary} check-config: {(run.stderr or run.stdout).strip()}"]
    return []


def check_kubeconfig(docs: list[Any], root: Path, rel: str) -> str:
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise Failure("a kubeconfig is one YAML mapping")
    kc = docs[0]
    if kc.get("apiVersion") != "v1" or kc.get("kind") != "Config":
        raise Failure("a kubeconfig has apiVersion v1 and kind Config")
    clusters = kc.get("clusters") or []
    if not clusters:
        raise Failure("no clusters")
    for c in clusters:
        cluster = (c or {}).get("cluster") or {}
        if not str(cluster.get("server", "")).startswith("https://"):
            raise Failure(f"cluster {c.get('name')!r}: server must be an https:// URL")
        data = cluster.get("certificate-authority-data")
        if data is not None:
            try:
                base64.b64decode(data, validate=True)
            except ValueError as e:
                raise Failure(f"cluster {c.get('name')!r}: certificate-authority-data: {e}") from e
    names = {
        "cluster": {c.get("name") for c in clusters},
        "user": {u.get("name") for u in kc.get("users") or []},
    }
    contexts = {c.get("name"): c.get("context") or {} for c in kc.get("contexts") or []}
    for name, ctx in contexts.items():
        for field in ("cluster", "user"):
            if ctx.get(field) not in names[field]:
                raise Failure(f"context {name!r} names an unknown {field} {ctx.get(field)!r}")
    if kc.get("current-context") not in contexts:
        raise Failure("current-context names no context")
    return KUBECONFIG


def check_emulator_keys(docs: list[Any], root: Path, rel: str) -> str:
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise Failure("a keys file is one YAML mapping")
    unknown = set(docs[0]) - {"keys", "roles", "oidcProviders", "ecsMetadata", "credentialsUri"}
    if unknown:
        raise Failure(f"unknown top-level keys: {sorted(unknown)}")
    if not isinstance(docs[0].get("keys"), list) or not docs[0]["keys"]:
        raise Failure("keys: a non-empty list is needed")
    return f"{EMULATOR_KEYS}, parsed"


NOT_KUBERNETES_CHECKS: dict[str, Callable[[list[Any], Path, str], str]] = {
    SERVER_CONFIG: check_server_config,
    KUBECONFIG: check_kubeconfig,
    EMULATOR_KEYS: check_emulator_keys,
}


# ---- Consistency checks on some Kubernetes objects ----------------------------------------------

def check_ack_configmap(doc: dict) -> list[str]:
    """The mappings in kube-system/alibabacloud-auth: YAML text under mapRoles/mapUsers/mapAccounts."""
    problems = []
    data = doc.get("data") or {}
    unknown = set(data) - {"mapRoles", "mapUsers", "mapAccounts"}
    if unknown:
        problems.append(f"data: unknown keys {sorted(unknown)}")
    arn_key = {"mapRoles": "rolearn", "mapUsers": "userarn"}
    for key, text in data.items():
        try:
            entries = yaml.safe_load(text)
        except yaml.YAMLError as e:
            problems.append(f"data.{key}: not valid YAML: " + " ".join(str(e).split()))
            continue
        if entries is None:
            continue
        if not isinstance(entries, list):
            problems.append(f"data.{key}: must be a YAML list")
            continue
        if key == "mapAccounts":
            for i, account in enumerate(entries):
                if not isinstance(account, (str, int)) or not str(account).isdigit():
                    problems.append(f"data.{key}[{i}]: an account ID is a string of digits")
            continue
        if key not in arn_key:
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                problems.append(f"data.{key}[{i}]: must be a mapping")
                continue
            lowered = {str(k).lower(): v for k, v in entry.items()}
            allowed = {arn_key[key], "username", "groups"}
            for extra in sorted(set(lowered) - allowed):
                problems.append(f"data.{key}[{i}]: unknown key {extra!r}")
            arn = lowered.get(arn_key[key])
            if not isinstance(arn, str) or not arn.lower().startswith("acs:ram::"):
                problems.append(f"data.{key}[{i}]: {arn_key[key]} must be an acs:ram:: ARN")
            if not isinstance(lowered.get("username"), str) or not lowered["username"]:
                problems.append(f"data.{key}[{i}]: username is missing")
            groups = lowered.get("groups", [])
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                problems.append(f"data.{key}[{i}]: groups must be a list of strings")
    return problems


def settings_of(docs: list[Any]) -> dict:
    """The data of the generated settings ConfigMap among rendered objects (empty if none)."""
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap" and \
                str((doc.get("metadata") or {}).get("name", "")).startswith(SETTINGS_CONFIGMAP):
            return doc.get("data") or {}
    return {}


def check_server_configmap(doc: dict, settings: dict) -> list[str]:
    """The server config in ram-authenticator-config, with the overlay's cluster ID, passes
    check-config (which wants a cluster ID in the file; the pods get it from the environment)."""
    text = (doc.get("data") or {}).get(SERVER_CONFIGMAP[2])
    if not isinstance(text, str):
        return [f"data.{SERVER_CONFIGMAP[2]} is missing"]
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"data.{SERVER_CONFIGMAP[2]}: not valid YAML: " + " ".join(str(e).split())]
    if not isinstance(parsed, dict):
        return [f"data.{SERVER_CONFIGMAP[2]}: a server config is one YAML mapping"]
    if "clusterid" in {str(k).lower() for k in parsed}:
        return [f"data.{SERVER_CONFIGMAP[2]}: sets clusterID; the overlay's "
                f"{SETTINGS_CONFIGMAP} (ACK_CLUSTER_ID) is the one place for it"]
    cluster_id = settings.get("ACK_CLUSTER_ID")
    if not cluster_id:
        return []  # not rendered with an overlay (the base alone)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text + f"\nclusterID: {cluster_id}\n", encoding="utf-8")
        return run_check_config(path)


def prometheusrule_text(root: Path) -> str:
    """The PrometheusRule generated from the plain rules file."""
    rules = yaml.safe_load((root / PROMETHEUS_RULES).read_text(encoding="utf-8"))
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "ram-authenticator",
            "namespace": "kube-system",
            "labels": {"app.kubernetes.io/name": "ram-authenticator"},
        },
        "spec": {"groups": rules["groups"]},
    }
    header = (
        f"# GENERATED from {PROMETHEUS_RULES} by `scripts/validate-manifests.sh "
        "--write-prometheusrule`;\n"
        "# edit that file, not this one (scripts/validate-manifests.sh fails when they differ).\n"
        "# The same alerts for the Prometheus Operator: docs/runbook.md has a section for each.\n"
    )
    return header + yaml.dump(obj, Dumper=BlockDumper, sort_keys=False, width=100,
                              allow_unicode=True)


class BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the PromQL expressions) as literal blocks."""


BlockDumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None),
)


def check_prometheusrule(doc: dict, root: Path, meta: ObjectMetaValidator) -> list[str]:
    """A PrometheusRule (no schema offline): its rules are those of the plain rules file, and
    the file in the repository is the generated one."""
    problems = meta.errors(doc.get("metadata"))
    if set(doc) - {"apiVersion", "kind", "metadata", "spec"}:
        problems.append(f"unknown top-level fields {sorted(set(doc) - {'apiVersion', 'kind', 'metadata', 'spec'})}")
    try:
        source = yaml.safe_load((root / PROMETHEUS_RULES).read_text(encoding="utf-8"))
        generated = prometheusrule_text(root)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        return problems + [f"cannot read {PROMETHEUS_RULES}: {e}"]
    if (doc.get("spec") or {}) != {"groups": source.get("groups")}:
        problems.append(f"spec.groups differ from {PROMETHEUS_RULES}")
    problems += check_runbook_links(source, root)
    try:
        current = (root / PROMETHEUS_RULE).read_text(encoding="utf-8")
    except OSError as e:
        current = f"({e})"
    if current != generated:
        problems.append(f"{PROMETHEUS_RULE} is not the one generated from {PROMETHEUS_RULES}: "
                        "run scripts/validate-manifests.sh --write-prometheusrule")
    return problems


def check_podmonitor(doc: dict, root: Path, meta: ObjectMetaValidator) -> list[str]:
    """A PodMonitor (no schema offline): the fields the Prometheus Operator needs."""
    problems = meta.errors(doc.get("metadata"))
    spec = doc.get("spec") or {}
    if not (spec.get("selector") or {}).get("matchLabels"):
        problems.append("spec.selector.matchLabels is missing")
    endpoints = spec.get("podMetricsEndpoints")
    if not isinstance(endpoints, list) or not endpoints:
        problems.append("spec.podMetricsEndpoints: a non-empty list is needed")
    for i, endpoint in enumerate(endpoints or []):
        if not isinstance(endpoint, dict) or not endpoint.get("port") or \
                not str(endpoint.get("path", "")).startswith("/"):
            problems.append(f"spec.podMetricsEndpoints[{i}]: a port name and a path are needed")
    return problems


def check_runbook_links(rules: dict, root: Path) -> list[str]:
    """Every alert links to its own section of the runbook, and that section exists."""
    try:
        runbook = (root / RUNBOOK).read_text(encoding="utf-8")
    except OSError as e:
        return [f"cannot read {RUNBOOK}: {e}"]
    headings = {line[3:].strip() for line in runbook.splitlines() if line.startswith("## ")}
    problems = []
    for group in rules.get("groups") or []:
        for rule in group.get("rules") or []:
            alert = rule.get("alert")
            if not alert:
                continue
            want = f"{RUNBOOK}#{alert.lower()}"
            got = (rule.get("annotations") or {}).get("runbook_url")
            if got != want:
                problems.append(f"alert {alert}: runbook_url is {got!r}, not {want!r}")
            if alert not in headings:
                problems.append(f"alert {alert}: {RUNBOOK} has no section '## {alert}'")
    return problems


# Objects of kinds defined outside this repository, with the check each gets.
EXTERNAL_KINDS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheusrule,
    ("monitoring.coreos.com/v1", "PodMonitor"): check_podmonitor,
}


def check_token_file_sidecar(rel: str, docs: list[Any], root: Path) -> list[str]:
    """The sidecar writes the file the app's kubeconfig reads, through a volume both mount."""
    if rel not in TOKEN_FILE_SIDECARS:
        return []
    ns, name, key = TOKEN_FILE_SIDECARS[rel]
    objects = [d for d in docs if isinstance(d, dict)]
    cms = [d for d in objects if d.get("kind") == "ConfigMap"
           and (d.get("metadata") or {}).get("namespace") == ns
           and (d.get("metadata") or {}).get("name") == name]
    if len(cms) != 1 or key not in (cms[0].get("data") or {}):
        return [f"no ConfigMap {ns}/{name} with data.{key}"]
    try:
        kc_docs = list(yaml.safe_load_all(cms[0]["data"][key]))
        check_kubeconfig(kc_docs, root, rel)
    except (yaml.YAMLError, Failure) as e:
        return [f"ConfigMap {ns}/{name} data.{key}: {e}"]
    token_files = {(u.get("user") or {}).get("tokenFile") for u in kc_docs[0].get("users") or []}
    token_files.discard(None)
    if len(token_files) != 1:
        return [f"ConfigMap {ns}/{name} data.{key}: want one user with tokenFile, found {sorted(token_files)}"]
    token_file = token_files.pop()
    problems = []
    for d in objects:
        if d.get("kind") != "Deployment":
            continue
        pod = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
        containers = (pod.get("initContainers") or []) + (pod.get("containers") or [])
        writers = [c for c in containers
                   if "token" in (c.get("args") or [])
                   and f"--write-token-file={token_file}" in (c.get("args") or [])]
        if len(writers) != 1 or "--refresh" not in writers[0].get("args", []):
            problems.append(f"{describe(d)}: no container runs `token --write-token-file={token_file} --refresh`")
            continue
        directory = token_file.rpartition("/")[0]
        mounting = {c.get("name"): {m.get("name") for m in c.get("volumeMounts") or []
                                    if m.get("mountPath") == directory}
                    for c in containers}
        shared = set.intersection(*mounting.values()) if mounting else set()
        if not shared:
            problems.append(f"{describe(d)}: not every container mounts one volume at {directory}")
        if writers[0].get("restartPolicy") != "Always" and writers[0] not in (pod.get("containers") or []):
            problems.append(f"{describe(d)}: the token writer is an init container that is not a sidecar")
    return problems


# ---- Driver -----------------------------------------------------------------------------------

def yaml_files(root: Path) -> list[str]:
    found = []
    for top in SEARCHED:
        base = root / top
        if not base.is_dir():
            continue
        for path in base.rglob("*"):
            if path.is_file() and path.suffix in (".yaml", ".yml") and \
                    path.stem != "kustomization":
                found.append(path.relative_to(root).as_posix())
    return sorted(found, key=lambda p: (not p.startswith("crds/"), p))


def validate_builtin(doc: dict, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [error_text(e)]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"unknown to Kubernetes {version}: {e.message}"]
    except kubernetes_validate.InvalidSchemaError as e:
        return [e.message]
    return []


def check_file(rel: str, root: Path, version: str, crs: CustomResources) -> tuple[str, list[str]]:
    """Returns (summary, problems) for one file."""
    docs = load_documents(root / rel)
    if rel in NOT_KUBERNETES:
        return NOT_KUBERNETES_CHECKS[NOT_KUBERNETES[rel]](docs, root, rel), []
    summary, problems = check_documents(docs, root, version, crs)
    return summary, problems + check_token_file_sidecar(rel, docs, root)


def check_documents(docs: list[Any], root: Path, version: str,
                    crs: CustomResources) -> tuple[str, list[str]]:
    """Returns (summary, problems) for the Kubernetes objects of one file or one rendering."""
    problems: list[str] = []
    kinds = []
    settings = settings_of(docs)
    for index, doc in enumerate(docs):
        prefix = f"document {index + 1}"
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            problems.append(f"{prefix}: not a Kubernetes object (no apiVersion/kind); "
                            "list non-Kubernetes files in NOT_KUBERNETES")
            continue
        prefix += f" ({describe(doc)})"
        kinds.append(doc["kind"])
        if not (doc.get("metadata") or {}).get("name"):
            problems.append(f"{prefix}: metadata.name is missing")
        group = str(doc["apiVersion"]).rpartition("/")[0]
        is_custom = any(g == group and k == doc["kind"] for (g, _, k) in crs.kinds)
        external = EXTERNAL_KINDS.get((doc["apiVersion"], doc["kind"]))
        if is_custom:
            found = crs.validate(doc)
        elif external:
            found = external(doc, root, crs.meta)
        else:
            found = validate_builtin(doc, version)
            if doc["kind"] == "ConfigMap":
                meta = doc.get("metadata") or {}
                if (meta.get("namespace"), meta.get("name")) == ACK_CONFIGMAP:
                    found += check_ack_configmap(doc)
                if (meta.get("namespace"), meta.get("name")) == SERVER_CONFIGMAP[:2]:
                    found += check_server_configmap(doc, settings)
        problems += [f"{prefix}: {p}" for p in found]
    problems += check_container_args(docs)
    return f"{len(docs)} object(s): {', '.join(kinds)}", problems


def check_container_args(docs: list[Any]) -> list[str]:
    """With $RAM_AUTHENTICATOR_BIN, the binary accepts every workload container's arguments
    (parsed, then `--help` instead of running: a misspelt or removed flag is an error)."""
    binary = os.environ.get("RAM_AUTHENTICATOR_BIN")
    if not binary:
        return []
    problems = []
    for where, container in containers(docs):
        args = [str(a) for a in container.get("args") or []]
        run = subprocess.run([binary, *args, "--help"], capture_output=True, text=True,
                             check=False, timeout=30)
        if run.returncode != 0:
            problems.append(f"{where}: {Path(binary).name} refuses its arguments: "
                            f"{(run.stderr or run.stdout).strip().splitlines()[0:3]}")
    return problems


# ---- kustomize --------------------------------------------------------------------------------

def kubectl() -> str:
    return os.environ.get("KUBECTL", "kubectl")


def render(directory: Path) -> list[Any]:
    """`kubectl kustomize DIR`, parsed."""
    try:
        run = subprocess.run([kubectl(), "kustomize", str(directory)],
                             capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Failure(f"cannot run `{kubectl()} kustomize` (scripts/install-test-deps.sh "
                      f"installs kubectl): {e}") from e
    if run.returncode != 0:
        raise Failure(f"`{kubectl()} kustomize` failed: {run.stderr.strip()}")
    try:
        docs = [d for d in yaml.safe_load_all(run.stdout) if d is not None]
    except yaml.YAMLError as e:
        raise Failure("kustomize output is not valid YAML: " + " ".join(str(e).split())) from e
    if not docs:
        raise Failure("kustomize rendered nothing")
    return docs


def containers(docs: list[Any]) -> list[tuple[str, dict]]:
    """(where, container) for every container and init container of the rendered workloads."""
    found = []
    for doc in docs:
        pod = (((doc.get("spec") or {}).get("template") or {}).get("spec")) \
            if isinstance(doc, dict) else None
        if not pod:
            continue
        for field in ("initContainers", "containers"):
            for c in pod.get(field) or []:
                found.append((f"{doc.get('kind')} {doc['metadata'].get('name')}/{c.get('name')}", c))
    return found


def settings_seen_by(container: dict, docs: list[Any]) -> dict:
    """The settings a container gets through envFrom (the rendered ConfigMaps it names)."""
    by_name = {
        (d.get("metadata") or {}).get("name"): d.get("data") or {}
        for d in docs if isinstance(d, dict) and d.get("kind") == "ConfigMap"
    }
    seen: dict = {}
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        seen.update(by_name.get(ref, {}))
    for env in container.get("env") or []:
        seen[env.get("name")] = env.get("value")
    return seen


def check_single_place(root: Path, overlay: str) -> list[str]:
    """Changes the cluster ID, the STS region and the image tag where the overlay sets them, and
    checks that the rendered output follows everywhere: every container sees the new values,
    and the old ones appear nowhere."""
    kustomization = root / overlay / "kustomization.yaml"
    text = kustomization.read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    literals = {}
    for generator in spec.get("configMapGenerator") or []:
        if generator.get("name") == SETTINGS_CONFIGMAP:
            literals = dict(item.split("=", 1) for item in generator.get("literals") or [])
    images = spec.get("images") or []
    missing = [k for k in SETTINGS_KEYS if k not in literals]
    if missing or len(images) != 1 or not images[0].get("newTag"):
        return [f"{overlay}/kustomization.yaml must set {', '.join(SETTINGS_KEYS)} in the "
                f"{SETTINGS_CONFIGMAP} configMapGenerator and one image in `images:`"
                f" (missing: {missing or 'images'})"]
    before = render(root / overlay)
    changed = {k: f"{v}-changed" for k, v in literals.items() if k in SETTINGS_KEYS}
    image = images[0]
    new_tag = f"{image['newTag']}-changed"
    edited = text
    for key, value in changed.items():
        edited, n = re.subn(rf"\b{key}={re.escape(literals[key])}\b", f"{key}={value}", edited)
        if n != 1:
            return [f"{overlay}/kustomization.yaml: {key}= appears {n} times, not once"]
    edited, n = re.subn(rf"newTag: *{re.escape(str(image['newTag']))}\b",
                        f"newTag: {new_tag}", edited)
    if n != 1:
        return [f"{overlay}/kustomization.yaml: newTag appears {n} times, not once"]
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        copy_root = Path(tmp)
        for top in ("crds", "deploy"):
            shutil.copytree(root / top, copy_root / top)
        (copy_root / overlay / "kustomization.yaml").write_text(edited, encoding="utf-8")
        after = render(copy_root / overlay)
    rendered_after = yaml.safe_dump_all(after)
    for key, old in literals.items():
        if key in SETTINGS_KEYS and \
                re.search(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", rendered_after):
            problems.append(f"after changing {key}, the old value {old!r} is still in the output")
    workloads = containers(after)
    if not workloads or len(workloads) != len(containers(before)):
        problems.append("no containers in the output, or not the same ones after the change")
    wanted_image = f"{image.get('newName', image['name'])}:{new_tag}"
    for where, container in workloads:
        seen = settings_seen_by(container, after)
        for key, value in changed.items():
            if seen.get(key) != value:
                problems.append(f"{where}: sees {key}={seen.get(key)!r}, not the changed {value!r}")
        if container.get("image") != wanted_image:
            problems.append(f"{where}: image {container.get('image')!r}, not {wanted_image!r}")
    names_before = {d["metadata"]["name"] for d in before if d.get("kind") == "ConfigMap"}
    names_after = {d["metadata"]["name"] for d in after if d.get("kind") == "ConfigMap"}
    if names_before == names_after:
        problems.append(f"the {SETTINGS_CONFIGMAP} ConfigMap kept its name: a change would not "
                        "roll the pods (keep its hash suffix)")
    return problems


# ---- Self-test: the checks above catch what they are for ------------------------------------------

def self_test(root: Path, version: str) -> list[str]:
    """Breaks a copy of the tree in ways the checks must catch; returns the ones that were not."""
    overlay = "deploy/overlays/control-plane"
    hosted = "deploy/overlays/hosted"
    breakages: list[tuple[str, str, str, str, Callable[[Path], list[str]]]] = [
        ("a second place for the cluster ID", f"{overlay}/daemonset.yaml",
         "            - --kubeconfig-pregenerated\n",
         "            - --kubeconfig-pregenerated\n            - --cluster-id\n"
         "            - c1234567890abcdef\n",
         lambda r: check_single_place(r, overlay)),
        ("an image written out in the workload", f"{hosted}/deployment.yaml",
         "          image: ram-authenticator\n",
         "          image: registry.example.com/ram-authenticator:0.0.9\n",
         lambda r: check_single_place(r, hosted)),
        ("a rules file edited without regenerating the PrometheusRule", PROMETHEUS_RULES,
         "        for: 5m\n", "        for: 6m\n",
         lambda r: check_prometheusrule(
             load_documents(r / PROMETHEUS_RULE)[0], r, ObjectMetaValidator(version))),
        ("a runbook section renamed", RUNBOOK,
         "## RAMAuthenticatorDown\n", "## RAMAuthenticatorIsDown\n",
         lambda r: check_prometheusrule(
             load_documents(r / PROMETHEUS_RULE)[0], r, ObjectMetaValidator(version))),
    ]
    uncaught = []
    for what, rel, old, new, check in breakages:
        with tempfile.TemporaryDirectory() as tmp:
            copy_root = Path(tmp)
            for top in ("crds", "deploy", "docs"):
                shutil.copytree(root / top, copy_root / top)
            if check(copy_root):
                uncaught.append(f"the intact copy already fails the check for {what}")
                continue
            text = (copy_root / rel).read_text(encoding="utf-8")
            if text.count(old) < 1:
                uncaught.append(f"{what}: {rel} no longer contains {old.strip()!r}")
                continue
            (copy_root / rel).write_text(text.replace(old, new, 1), encoding="utf-8")
            problems = check(copy_root)
            print(f"{'ok  ' if problems else 'FAIL'} self-test: {what} -> "
                  f"{problems[0] if problems else 'NOT CAUGHT'}")
            if not problems:
                uncaught.append(what)
    return uncaught


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="repository root (default: the one this script is in)")
    parser.add_argument("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION,
                        help=f"Kubernetes version whose schema is used (default {DEFAULT_KUBERNETES_VERSION})")
    parser.add_argument("--write-prometheusrule", action="store_true",
                        help=f"write {PROMETHEUS_RULE} from {PROMETHEUS_RULES}, then validate")
    parser.add_argument("--self-test", action="store_true",
                        help="break copies of the tree and check that the checks notice")
    args = parser.parse_args()
    root: Path = args.root.resolve()
    version: str = args.kubernetes_version
    if args.self_test:
        uncaught = self_test(root, version)
        for problem in uncaught:
            print(f"FAIL self-test: {problem}")
        return 1 if uncaught else 0
    if args.write_prometheusrule:
        (root / PROMETHEUS_RULE).write_text(prometheusrule_text(root), encoding="utf-8")
        print(f"wrote {PROMETHEUS_RULE}")

    files = yaml_files(root)
    if not files:
        print(f"no YAML files under {', '.join(SEARCHED)} in {root}")
        print("0 passed, 1 failed")
        return 1

    crs = CustomResources(ObjectMetaValidator(version))
    passed = failed = 0
    crd_problems: dict[str, list[str]] = {}
    # First pass: register the CRDs, so custom resources can be checked in any order.
    for rel in files:
        try:
            docs = load_documents(root / rel)
        except Failure:
            continue  # reported in the second pass
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition" \
                    and str(doc.get("apiVersion", "")).startswith("apiextensions.k8s.io/"):
                crd_problems.setdefault(rel, []).extend(
                    f"({describe(doc)}): {p}" for p in crs.add_crd(copy.deepcopy(doc)))

    def report(name: str, check: Callable[[], tuple[str, list[str]]]) -> None:
        nonlocal passed, failed
        try:
            summary, problems = check()
        except Failure as e:
            summary, problems = "", [str(e)]
        if problems:
            failed += 1
            print(f"FAIL {name}")
            for p in problems:
                print(f"     {p}")
        else:
            passed += 1
            print(f"ok   {name} ({summary})")

    def file_check(rel: str) -> tuple[str, list[str]]:
        summary, problems = check_file(rel, root, version, crs)
        return summary, crd_problems.get(rel, []) + problems

    for rel in files:
        report(rel, lambda rel=rel: file_check(rel))
    for rel in RENDERED:
        report(f"{rel} (kubectl kustomize)",
               lambda rel=rel: check_documents(render(root / rel), root, version, crs))
    for rel in SINGLE_PLACE:
        report(f"{rel} (one place each for {', '.join(SETTINGS_KEYS)} and the image)",
               lambda rel=rel: ("changed once, followed everywhere",
                                check_single_place(root, rel)))
    print(f"Kubernetes schema version {version} (kubernetes-validate "
          f"{kubernetes_validate.__version__}), strict")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

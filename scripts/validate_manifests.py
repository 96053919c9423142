#!/usr/bin/env python3
"""Validates the Kubernetes manifests under crds/ and examples/, offline.

For every *.yaml / *.yml file:
  * every YAML document must parse;
  * files that are not Kubernetes objects (the server's config files, the webhook kubeconfig) are
    named in NOT_KUBERNETES below and get a check of their own;
  * built-in Kubernetes objects are validated against the Kubernetes OpenAPI schema bundled with
    kubernetes-validate, strictly: an unknown field is an error, and so is a kind or apiVersion
    the schema does not know;
  * CustomResourceDefinitions are validated as apiextensions.k8s.io/v1 objects, and custom
    resources (RAMIdentityMapping) against the openAPIV3Schema of the CRD in crds/, also strictly
    (the API server's strict field validation, kubectl's default, refuses unknown fields);
  * a few consistency checks: the server config embedded in the ConfigMap equals the plain file,
    and the mappings in the alibabacloud-auth ConfigMap are well formed.

Prints one line per file and a closing "N passed, N failed"; exits 1 if any file failed.
Run through scripts/validate-manifests.sh, which installs the dependencies.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import importlib_resources
import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

# The newest Kubernetes version bundled by the pinned kubernetes-validate.
DEFAULT_KUBERNETES_VERSION = "1.37"

# Directories searched, relative to the repository root.
SEARCHED = ("crds", "examples")

# Files that are YAML but not Kubernetes objects, with the check each one gets.
SERVER_CONFIG = "ram-authenticator server config"
KUBECONFIG = "kubeconfig"
EMULATOR_KEYS = "sts-emulator keys file"
NOT_KUBERNETES = {
    "examples/config.yaml": SERVER_CONFIG,
    "examples/deploy/config.yaml": SERVER_CONFIG,
    "examples/deploy/webhook-kubeconfig.yaml": KUBECONFIG,
    "examples/emulator-keys.yaml": EMULATOR_KEYS,
}

# A ConfigMap whose data key must hold exactly the text of a file.
EMBEDDED = {
    ("examples/deploy/configmap-config.yaml", "kube-system", "ram-authenticator-config", "config.yaml"):
        "examples/deploy/config.yaml",
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
    binary = os.environ.get("RAM_AUTHENTICATOR_BIN")
    if binary:
        run = subprocess.run(
            [binary, "check-config", "--config", str(root / rel)],
            capture_output=True, text=True, check=False,
        )
        if run.returncode != 0:
            raise Failure(f"{binary} check-config: {(run.stderr or run.stdout).strip()}")
        return f"{SERVER_CONFIG}, checked by {Path(binary).name} check-config"
    return f"{SERVER_CONFIG}, parsed"


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


def check_embedded(rel: str, doc: dict, root: Path) -> list[str]:
    meta = doc.get("metadata") or {}
    problems = []
    for (file, ns, name, key), source in EMBEDDED.items():
        if file == rel and meta.get("namespace") == ns and meta.get("name") == name:
            embedded = (doc.get("data") or {}).get(key)
            try:
                expected = (root / source).read_text(encoding="utf-8")
            except OSError as e:
                problems.append(f"cannot read {source}: {e}")
                continue
            if embedded != expected:
                problems.append(f"data.{key} differs from {source} (keep the two identical)")
    return problems


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
            if path.is_file() and path.suffix in (".yaml", ".yml"):
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
    problems: list[str] = []
    kinds = []
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
        if is_custom:
            found = crs.validate(doc)
        else:
            found = validate_builtin(doc, version)
            if doc["kind"] == "ConfigMap":
                meta = doc.get("metadata") or {}
                if (meta.get("namespace"), meta.get("name")) == ACK_CONFIGMAP:
                    found += check_ack_configmap(doc)
                found += check_embedded(rel, doc, root)
        problems += [f"{prefix}: {p}" for p in found]
    problems += check_token_file_sidecar(rel, docs, root)
    return f"{len(docs)} object(s): {', '.join(kinds)}", problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="repository root (default: the one this script is in)")
    parser.add_argument("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION,
                        help=f"Kubernetes version whose schema is used (default {DEFAULT_KUBERNETES_VERSION})")
    args = parser.parse_args()
    root: Path = args.root.resolve()
    version: str = args.kubernetes_version

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

    for rel in files:
        try:
            summary, problems = check_file(rel, root, version, crs)
            problems = crd_problems.get(rel, []) + problems
        except Failure as e:
            summary, problems = "", [str(e)]
        if problems:
            failed += 1
            print(f"FAIL {rel}")
            for p in problems:
                print(f"     {p}")
        else:
            passed += 1
            print(f"ok   {rel} ({summary})")
    print(f"Kubernetes schema version {version} (kubernetes-validate "
          f"{kubernetes_validate.__version__}), strict")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

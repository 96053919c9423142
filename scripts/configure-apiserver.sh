#!/usr/bin/env bash
# Points kube-apiserver (a static pod on a control-plane node) at ram-authenticator.
#
# Usage: configure-apiserver.sh [--dry-run] [--revert] [--manifest PATH] [--kubeconfig PATH] [--backup-dir DIR]
#
#   --manifest PATH    the kube-apiserver static pod manifest
#                      (default /etc/kubernetes/manifests/kube-apiserver.yaml)
#   --kubeconfig PATH  the webhook kubeconfig written by `ram-authenticator init`
#                      (default /etc/kubernetes/ack-ram-authenticator/kubeconfig.yaml)
#   --backup-dir DIR   where the manifest is copied before it is changed
#                      (default /var/backups/ram-authenticator; never the manifest's own directory,
#                      since the kubelet would start every manifest it finds there)
#   --dry-run          print the change as a unified diff; write nothing
#   --revert           undo the last change this script made, from its backup
#
# It adds to the kube-apiserver container:
#   command:       --authentication-token-webhook-config-file=<kubeconfig>
#                  --authentication-token-webhook-version=v1
#   volumeMounts:  ram-authenticator-kubeconfig at the kubeconfig's directory, readOnly
# and to the pod:
#   volumes:       ram-authenticator-kubeconfig, hostPath <kubeconfig's directory>, DirectoryOrCreate
# The kubelet sees the changed manifest and restarts kube-apiserver with the new flags.
#
# A manifest already set up by ack-ram-authenticator's own script (the flag pointing at
# /etc/kubernetes/ack-ram-authenticator/kubeconfig.yaml, that file mounted from the same host
# path by a volume named ack-ram-authenticator) is recognised: any existing mount that provides
# the kubeconfig at the same path on the host and in the container is kept, and no second mount
# is added; only what is missing (usually the webhook version flag) is.
#
# Safe to run again: what is already there (same values) is left alone, and a run that has
# nothing to add changes nothing, not even a byte. It refuses, with exit status 1 and a message,
# a file it does not fully understand or that conflicts: not a Pod, no container named
# kube-apiserver, no `command:` list, one of the flags already set to another value, a volume
# or mount of that name that points elsewhere, a mount of the kubeconfig from another host path.
# The manifest is backed up first, with a UTC timestamp in the name (<backup-dir>/<name>.<stamp>),
# then replaced atomically (temporary file beside it, renamed over it) with its mode and owner
# kept; the file as written is recorded beside the backup (<name>.<stamp>.applied).
#
# --revert restores the backup of the last change, and only if the manifest is still exactly
# what this script wrote (else it refuses and changes nothing: undo by hand with the backup).
# The record is then renamed <name>.<stamp>.reverted, so a second --revert has nothing to do.
#
# How the YAML is edited: control-plane nodes have python3, but often not PyYAML, and a YAML
# library would drop the comments and reorder the file anyway. So the manifest is edited as text
# by a small reader (in Python, standard library only) that understands block-style YAML as
# kubeadm and similar tools write it: mappings, block sequences (indented or not), one-line
# plain and quoted scalars, one-line flow collections, block scalars and comments. Anything
# else (anchors, aliases, tags, several documents, multi-line plain scalars, tabs) is refused
# rather than guessed at. New lines copy the indentation of their neighbours. The result is read
# back and must need no further change; when PyYAML is available, both files are also parsed
# and the new one must equal the old one plus exactly the additions above.
#
# Exit status: 0 done (or nothing to do, or dry run), 1 refused or failed, 2 usage error.
set -euo pipefail

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

manifest=/etc/kubernetes/manifests/kube-apiserver.yaml
kubeconfig=/etc/kubernetes/ack-ram-authenticator/kubeconfig.yaml
backup_dir=/var/backups/ram-authenticator
dry_run=0
revert=0

need_value() {
  if [[ $# -lt 2 || -z $2 ]]; then
    echo "configure-apiserver.sh: $1 needs a value" >&2
    usage >&2
    exit 2
  fi
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) dry_run=1; shift ;;
    --revert) revert=1; shift ;;
    --manifest) need_value "$@"; manifest=$2; shift 2 ;;
    --manifest=*) manifest=${1#*=}; shift ;;
    --kubeconfig) need_value "$@"; kubeconfig=$2; shift 2 ;;
    --kubeconfig=*) kubeconfig=${1#*=}; shift ;;
    --backup-dir) need_value "$@"; backup_dir=$2; shift 2 ;;
    --backup-dir=*) backup_dir=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *)
      echo "configure-apiserver.sh: unknown argument: $1" >&2
      usage >&2
      exit 2
      ;;
  esac
done

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "configure-apiserver.sh: $python is needed (the standard library is enough)" >&2
  exit 1
fi

exec "$python" - "$manifest" "$kubeconfig" "$backup_dir" "$dry_run" "$revert" <<'PYTHON'
import datetime
import difflib
import os
import re
import sys
import tempfile

FLAG_FILE = "--authentication-token-webhook-config-file"
FLAG_VERSION = "--authentication-token-webhook-version"
WEBHOOK_VERSION = "v1"
VOLUME = "ram-authenticator-kubeconfig"
CONTAINER = "kube-apiserver"
PROG = "configure-apiserver.sh"


class Refuse(Exception):
    """The file is not one this script can change safely."""


# ---- A reader for block-style YAML, keeping line positions -------------------------------------

class Scalar:
    def __init__(self, value, line):
        self.value, self.first, self.last = value, line, line


class Opaque:
    """A value this script never looks into: a flow collection or a block scalar."""

    def __init__(self, first, last):
        self.first, self.last = first, last


class Map:
    def __init__(self, indent, entries):
        self.indent = indent
        self.entries = entries  # list of (key, node, first_line, last_line)
        self.first, self.last = entries[0][2], entries[-1][3]

    def get(self, key):
        for k, node, _, _ in self.entries:
            if k == key:
                return node
        return None


class Seq:
    def __init__(self, indent, items):
        self.indent = indent
        self.items = items  # list of (node, first_line, last_line)
        self.first, self.last = items[0][1], items[-1][2]


KEY = re.compile(
    r"""^(?P<key>"[^"\\]*"|'(?:[^']|'')*'|[^\s'"#:{}\[\],&*!|>%@`-][^:#]*?|-[^\s:#][^:#]*?)"""
    r"""\s*:(?:\s+(?P<rest>.*))?$"""
)


def is_item(text):
    return text == "-" or text.startswith("- ")


def strip_comment(s):
    """Removes a trailing comment from a plain value."""
    m = re.search(r"(^|\s)#", s)
    return (s[: m.start()] if m else s).rstrip()


def unquote_key(k):
    if k.startswith('"'):
        return k[1:-1]
    if k.startswith("'"):
        return k[1:-1].replace("''", "'")
    return k.rstrip()


class Reader:
    def __init__(self, text):
        if "\r" in text:
            raise Refuse("the file has CR (\\r) line endings")
        self.raw = text.split("\n")
        self.virtual = {}  # line -> (indent, text): a "- key: v" line seen as "key: v" at its column
        for i, line in enumerate(self.raw):
            lead = line[: len(line) - len(line.lstrip(" \t"))]
            if "\t" in lead:
                raise Refuse(f"line {i + 1}: tab in the indentation")

    def where(self, i):
        return f"line {i + 1} ({self.raw[i].strip()!r})"

    def content(self, i):
        """Index of the first line at or after i that is neither blank nor a comment."""
        while i < len(self.raw):
            s = self.raw[i].strip()
            if s and not s.startswith("#"):
                return i
            i += 1
        return i

    def indent(self, i):
        if i in self.virtual:
            return self.virtual[i][0]
        line = self.raw[i]
        return len(line) - len(line.lstrip(" "))

    def text(self, i):
        if i in self.virtual:
            return self.virtual[i][1]
        return self.raw[i].strip()

    def at_end(self, i):
        return i >= len(self.raw)

    def document(self):
        i = self.content(0)
        if self.at_end(i):
            raise Refuse("the file is empty")
        if self.text(i).startswith("%"):
            raise Refuse(f"{self.where(i)}: YAML directives are not supported")
        if self.text(i) == "---" or self.text(i).startswith("--- "):
            if self.text(i) != "---":
                raise Refuse(f"{self.where(i)}: content after --- is not supported")
            i = self.content(i + 1)
        for j in range(i, len(self.raw)):
            if self.raw[j].rstrip() in ("---", "...") or self.raw[j].startswith("--- "):
                raise Refuse(f"line {j + 1}: more than one YAML document")
        if self.at_end(i) or self.indent(i) != 0:
            raise Refuse("the document does not start with a mapping at column 0")
        node, i = self.block(i)
        if not self.at_end(i):
            raise Refuse(f"{self.where(i)}: not understood (indentation)")
        if not isinstance(node, Map):
            raise Refuse("the document is not a mapping")
        return node

    def block(self, i):
        text = self.text(i)
        if is_item(text):
            return self.seq(i, self.indent(i))
        if KEY.match(text):
            return self.map(i, self.indent(i))
        raise Refuse(f"{self.where(i)}: not understood")

    def scalar(self, s, i):
        """A one-line value; returns Scalar or Opaque."""
        s = s.strip()
        if not s or s.startswith("#"):
            return Scalar(None, i)
        c = s[0]
        if c in "&*!":
            raise Refuse(f"{self.where(i)}: anchors, aliases and tags are not supported")
        if c in "%@`":
            raise Refuse(f"{self.where(i)}: not understood")
        if c == '"':
            m = re.match(r'"([^"\\]*)"(.*)$', s)
            if not m or strip_comment(m.group(2)):
                raise Refuse(f"{self.where(i)}: double-quoted value not understood")
            return Scalar(m.group(1), i)
        if c == "'":
            m = re.match(r"'((?:[^']|'')*)'(.*)$", s)
            if not m or strip_comment(m.group(2)):
                raise Refuse(f"{self.where(i)}: single-quoted value not understood")
            return Scalar(m.group(1).replace("''", "'"), i)
        if c in "[{":
            body = strip_comment(s)
            close = "]" if c == "[" else "}"
            if not body.endswith(close) or body.count(c) != body.count(close):
                raise Refuse(f"{self.where(i)}: a flow collection must fit on one line")
            return Opaque(i, i)
        value = strip_comment(s)
        if ": " in value or value.endswith(":"):
            raise Refuse(f"{self.where(i)}: not understood")
        return Scalar(value, i)

    def no_continuation(self, i, indent):
        j = self.content(i + 1)
        if not self.at_end(j) and self.indent(j) > indent:
            raise Refuse(f"{self.where(j)}: multi-line values are not supported")

    def block_scalar(self, i, indent):
        """Lines of a | or > value: blank or indented deeper than its key. Returns the last."""
        last, j = i, i + 1
        while j < len(self.raw):
            line = self.raw[j]
            if line.strip() == "":
                j += 1
                continue
            if len(line) - len(line.lstrip(" ")) > indent:
                last = j
                j += 1
                continue
            break
        return last

    def map(self, i, indent):
        entries, seen = [], set()
        while not self.at_end(i) and self.indent(i) == indent and not is_item(self.text(i)):
            m = KEY.match(self.text(i))
            if not m:
                raise Refuse(f"{self.where(i)}: not understood")
            key = unquote_key(m.group("key"))
            if key in seen:
                raise Refuse(f"{self.where(i)}: key {key!r} appears twice")
            seen.add(key)
            rest = strip_comment(m.group("rest") or "")
            if rest == "":
                j = self.content(i + 1)
                if not self.at_end(j) and self.indent(j) > indent:
                    node, _ = self.block(j)
                    last = node.last
                elif not self.at_end(j) and self.indent(j) == indent and is_item(self.text(j)):
                    node, _ = self.seq(j, indent)
                    last = node.last
                else:
                    node, last = Scalar(None, i), i
            elif rest[0] in "|>":
                if not re.fullmatch(r"[|>][-+]?[1-9]?|[|>][1-9][-+]", rest):
                    raise Refuse(f"{self.where(i)}: block scalar header not understood")
                last = self.block_scalar(i, indent)
                node = Opaque(i, last)
            else:
                node = self.scalar(m.group("rest"), i)
                self.no_continuation(i, indent)
                last = i
            entries.append((key, node, i, last))
            i = self.content(last + 1)
        if not entries:
            raise Refuse(f"{self.where(i)}: not understood")
        if not self.at_end(i) and (
            self.indent(i) > indent or (self.indent(i) == indent and is_item(self.text(i)))
        ):
            raise Refuse(f"{self.where(i)}: not understood (indentation)")
        return Map(indent, entries), i

    def seq(self, i, indent):
        items = []
        while not self.at_end(i) and self.indent(i) == indent and is_item(self.text(i)):
            rest = self.text(i)[1:]
            inner = rest.lstrip(" ")
            if inner == "" or inner.startswith("#"):
                j = self.content(i + 1)
                if not self.at_end(j) and self.indent(j) > indent:
                    node, _ = self.block(j)
                    last = node.last
                else:
                    node, last = Scalar(None, i), i
            elif is_item(inner) or KEY.match(inner):
                column = indent + 1 + (len(rest) - len(inner))
                self.virtual[i] = (column, inner)
                node, _ = self.block(i)
                last = node.last
            elif inner[0] in "|>":
                raise Refuse(f"{self.where(i)}: block scalars in lists are not supported")
            else:
                node = self.scalar(inner, i)
                self.no_continuation(i, indent)
                last = i
            items.append((node, i, last))
            i = self.content(last + 1)
        if not self.at_end(i) and self.indent(i) > indent:
            raise Refuse(f"{self.where(i)}: not understood (indentation)")
        return Seq(indent, items), i


# ---- What the manifest has, and what it needs --------------------------------------------------

def scalar_value(node):
    return node.value if isinstance(node, Scalar) else None


def flag_values(items, flag):
    """Values of a flag in a list of arguments: --flag=value or --flag value."""
    found = []
    for n, v in enumerate(items):
        if v == flag:
            found.append(items[n + 1] if n + 1 < len(items) else "")
        elif v.startswith(flag + "="):
            found.append(v[len(flag) + 1:])
    return found


class Plan:
    def __init__(self):
        self.insert = {}  # line index -> lines to insert before it
        self.added = []  # human-readable list of additions
        self.flag_positions = []  # (index in command list, text), for the PyYAML cross-check
        self.mount_created = self.volumes_created = False
        self.adds_mount = self.adds_volume = False
        self.kept = []  # existing mounts that already provide the kubeconfig

    def add(self, before, lines, what):
        self.insert.setdefault(before, []).extend(lines)
        self.added.append(what)


def string_list(seq, what):
    if not isinstance(seq, Seq):
        raise Refuse(f"{what} is not a block list (`- item` lines)")
    values = []
    for node, first, _ in seq.items:
        if not isinstance(node, Scalar) or node.value is None:
            raise Refuse(f"line {first + 1}: every item of {what} must be a one-line string")
        values.append(node.value)
    return values


def map_list(seq, what):
    if not isinstance(seq, Seq):
        raise Refuse(f"{what} is not a block list (`- item` lines)")
    for node, first, _ in seq.items:
        if not isinstance(node, Map):
            raise Refuse(f"line {first + 1}: every item of {what} must be a mapping")
    return [node for node, _, _ in seq.items]


def item_style(seq, parent):
    """(dash indent, key indent) of new items: copied from the list, or from its parent."""
    if seq is not None:
        first = seq.items[0][0]
        return seq.indent, (first.indent if isinstance(first, Map) else seq.indent + 2)
    return parent, parent + 2


def plan(text, kubeconfig):
    root = Reader(text).document()
    if scalar_value(root.get("kind")) != "Pod" or scalar_value(root.get("apiVersion")) != "v1":
        raise Refuse(
            "not a static pod manifest: expected apiVersion v1 and kind Pod, found "
            f"apiVersion {scalar_value(root.get('apiVersion'))!r}, kind {scalar_value(root.get('kind'))!r}"
        )
    spec = root.get("spec")
    if not isinstance(spec, Map):
        raise Refuse("the Pod has no spec mapping")
    containers = map_list(spec.get("containers"), "spec.containers")
    matches = [c for c in containers if scalar_value(c.get("name")) == CONTAINER]
    if len(matches) != 1:
        raise Refuse(f"expected one container named {CONTAINER}, found {len(matches)}")
    container = matches[0]

    command_seq = container.get("command")
    if command_seq is None:
        raise Refuse(f"the {CONTAINER} container has no command: list")
    command = string_list(command_seq, "command")
    args = []
    if container.get("args") is not None:
        args = string_list(container.get("args"), "args")
    arguments = command + args

    dir_ = os.path.dirname(kubeconfig)
    p = Plan()

    # Flags, kept in the sorted order kubeadm writes them in.
    for flag, want in ((FLAG_FILE, kubeconfig), (FLAG_VERSION, WEBHOOK_VERSION)):
        have = flag_values(arguments, flag)
        if len(have) > 1:
            raise Refuse(f"{flag} is given {len(have)} times")
        if have:
            if have[0] != want:
                raise Refuse(f"{flag} is already set to {have[0]!r}, not {want!r}; "
                             "change or remove it by hand first")
            continue
        text_ = f"{flag}={want}"
        position = len(command)
        for n in range(1, len(command)):
            if command[n].startswith("--") and command[n] > text_:
                position = n
                break
        if position < len(command):
            before = command_seq.items[position][1]
        else:
            before = command_seq.last + 1
        p.add(before, [" " * command_seq.indent + "- " + text_], f"command: {text_}")
        p.flag_positions.append((position, text_))

    compact = command_seq.indent == container.indent

    # The mount. An existing mount that provides the kubeconfig at the same path on the host
    # and in the container (ack-ram-authenticator's layout mounts the file itself, as volume
    # ack-ram-authenticator) is kept, and then no mount or volume is added.
    mounts_seq = container.get("volumeMounts")
    mounts = [] if mounts_seq is None else map_list(mounts_seq, "volumeMounts")
    volumes_seq = spec.get("volumes")
    volumes = [] if volumes_seq is None else map_list(volumes_seq, "spec.volumes")
    covered = False
    for m in mounts:
        path = scalar_value(m.get("mountPath"))
        name = scalar_value(m.get("name"))
        if path is None or name == VOLUME:
            continue
        path = path.rstrip("/") or "/"
        if not (kubeconfig == path or dir_ == path or kubeconfig.startswith(path.rstrip("/") + "/")):
            continue
        source = [v for v in volumes if scalar_value(v.get("name")) == name]
        host_path = source[0].get("hostPath") if len(source) == 1 else None
        host = scalar_value(host_path.get("path")) if isinstance(host_path, Map) else None
        if host is None or host.rstrip("/") != path.rstrip("/"):
            raise Refuse(f"{path} is already mounted, as volume {name!r}, but not from the same "
                         f"host path (found {host!r}); kube-apiserver would not read the "
                         f"kubeconfig ram-authenticator writes at {kubeconfig}")
        covered = True
        p.kept.append(f"volumeMount {name} ({path}, hostPath {host})")
    mine = [m for m in mounts if scalar_value(m.get("name")) == VOLUME]
    if len(mine) > 1:
        raise Refuse(f"volumeMount {VOLUME} appears {len(mine)} times")
    if mine:
        if scalar_value(mine[0].get("mountPath")) != dir_:
            raise Refuse(f"volumeMount {VOLUME} is mounted at "
                         f"{scalar_value(mine[0].get('mountPath'))!r}, not {dir_!r}")
    elif not covered:
        dash, key = item_style(mounts_seq, container.indent if compact else container.indent + 2)
        lines = [
            " " * dash + "- mountPath: " + dir_,
            " " * key + "name: " + VOLUME,
            " " * key + "readOnly: true",
        ]
        if mounts_seq is None:
            lines.insert(0, " " * container.indent + "volumeMounts:")
            p.mount_created = True
            before = container.last + 1
        else:
            before = mounts_seq.last + 1
        p.add(before, lines, f"volumeMount {VOLUME} at {dir_} (readOnly)")
        p.adds_mount = True

    # The volume.
    mine = [v for v in volumes if scalar_value(v.get("name")) == VOLUME]
    if len(mine) > 1:
        raise Refuse(f"volume {VOLUME} appears {len(mine)} times")
    if mine:
        host_path = mine[0].get("hostPath")
        path = scalar_value(host_path.get("path")) if isinstance(host_path, Map) else None
        if path != dir_:
            raise Refuse(f"volume {VOLUME} is not the hostPath {dir_!r} (found {path!r})")
    elif not covered:
        spec_seq_compact = spec.get("containers").indent == spec.indent
        dash, key = item_style(volumes_seq, spec.indent if spec_seq_compact else spec.indent + 2)
        step = 2
        for v in volumes:
            hp = v.get("hostPath")
            if isinstance(hp, Map):
                step = hp.indent - v.indent
                break
        lines = [
            " " * dash + "- hostPath:",
            " " * (key + step) + "path: " + dir_,
            " " * (key + step) + "type: DirectoryOrCreate",
            " " * key + "name: " + VOLUME,
        ]
        if volumes_seq is None:
            lines.insert(0, " " * spec.indent + "volumes:")
            p.volumes_created = True
            before = spec.last + 1
        else:
            before = volumes_seq.last + 1
        p.add(before, lines, f"volume {VOLUME}: hostPath {dir_} (DirectoryOrCreate)")
        p.adds_volume = True
    return p


def render(text, p):
    raw = text.split("\n")
    out = []
    for i, line in enumerate(raw):
        out.extend(p.insert.get(i, []))
        out.append(line)
    # Insertions after the last line go before the final newline, if there is one.
    tail = p.insert.get(len(raw), [])
    if tail:
        if out and out[-1] == "":
            out[-1:-1] = tail
        else:
            out.extend(tail)
    return "\n".join(out)


def cross_check(old_text, new_text, p, kubeconfig):
    """With PyYAML: new must equal old plus exactly the planned additions."""
    try:
        import yaml
    except ImportError:
        return False
    old, new = yaml.safe_load(old_text), yaml.safe_load(new_text)
    container = [c for c in old["spec"]["containers"] if c.get("name") == CONTAINER][0]
    # Last position first; of two at the same position, the later one first.
    for _, (position, text_) in sorted(enumerate(p.flag_positions),
                                       key=lambda t: (t[1][0], t[0]), reverse=True):
        container["command"].insert(position, text_)
    dir_ = os.path.dirname(kubeconfig)
    if p.adds_mount:
        container.setdefault("volumeMounts", []).append(
            {"mountPath": dir_, "name": VOLUME, "readOnly": True})
    if p.adds_volume:
        old["spec"].setdefault("volumes", []).append(
            {"hostPath": {"path": dir_, "type": "DirectoryOrCreate"}, "name": VOLUME})
    if old != new:
        raise Refuse("internal check failed: the edited file does not parse to the intended "
                     "change; nothing was written")
    return True


# ---- Main ---------------------------------------------------------------------------------------

def replace_atomically(manifest, text, st):
    """Writes text over manifest: a hidden temporary file beside it (the kubelet ignores hidden
    files in its manifest directory), mode and owner of st, fsync, rename, fsync the directory."""
    manifest_dir = os.path.dirname(os.path.abspath(manifest))
    fd, tmp = tempfile.mkstemp(dir=manifest_dir, prefix=f".{os.path.basename(manifest)}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), st.st_mode & 0o7777)
            try:
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            except PermissionError:
                if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                    raise Refuse(f"cannot keep the owner of {manifest} "
                                 f"({st.st_uid}:{st.st_gid}); run as root") from None
            os.fsync(f.fileno())
        os.replace(tmp, os.path.abspath(manifest))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(manifest_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_new(path, text, mode):
    """Creates path exclusively (never through a symlink) with its final mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def revert(manifest, backup_dir, dry_run):
    """Restores the backup of the last change, if the manifest is still what was written."""
    base = os.path.basename(manifest)
    pattern = re.compile(re.escape(base) + r"\.(\d{8}T\d{6}Z)(?:\.(\d+))?\.applied$")
    records = []
    if os.path.isdir(backup_dir):
        for name in os.listdir(backup_dir):
            m = pattern.match(name)
            if m:
                records.append(((m.group(1), int(m.group(2) or 0)), name))
    if not records:
        print(f"nothing to revert: {backup_dir} holds no record of a change to {base} "
              "by this script")
        return 0
    _, record = max(records)
    record_path = os.path.join(backup_dir, record)
    backup = record_path[: -len(".applied")]
    if not os.path.isfile(backup):
        raise Refuse(f"the backup {backup} of the last change is missing")
    with open(record_path, encoding="utf-8") as f:
        applied = f.read()
    with open(backup, encoding="utf-8") as f:
        original = f.read()
    if os.path.islink(manifest):
        raise Refuse(f"{manifest} is a symbolic link; give the file it points to")
    with open(manifest, encoding="utf-8") as f:
        current = f.read()
    if current == original:
        print(f"{manifest} is already the backup {backup}; nothing to do")
        return 0
    if current != applied:
        raise Refuse(f"{manifest} changed since this script wrote it (see {record_path}); "
                     f"nothing was written. Compare it with the backup: diff -u {backup} "
                     f"{manifest}")
    if dry_run:
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(keepends=True), original.splitlines(keepends=True),
            fromfile=manifest, tofile=manifest + " (reverted)"))
        print(f"dry run: {manifest} not changed", file=sys.stderr)
        return 0
    replace_atomically(manifest, original, os.stat(manifest))
    os.replace(record_path, backup + ".reverted")
    print(f"restored {manifest} from {backup}")
    print("the kubelet restarts kube-apiserver without the webhook; "
          "watch it with: crictl ps --name kube-apiserver")
    return 0


def main():
    manifest, kubeconfig, backup_dir, dry_run, revert_ = sys.argv[1:6]
    dry_run = dry_run == "1"
    if revert_ == "1":
        return revert(manifest, backup_dir, dry_run)

    if not os.path.isabs(kubeconfig) or not re.fullmatch(r"/[A-Za-z0-9._/-]+", kubeconfig) \
            or kubeconfig.endswith("/") or "/../" in kubeconfig + "/" or "/./" in kubeconfig + "/":
        raise Refuse(f"--kubeconfig must be a plain absolute file path "
                     f"(letters, digits, . _ - /), got {kubeconfig!r}")
    if os.path.islink(manifest):
        raise Refuse(f"{manifest} is a symbolic link; give the file it points to")
    if not os.path.isfile(manifest):
        raise Refuse(f"{manifest}: no such file")
    with open(manifest, encoding="utf-8") as f:
        old_text = f.read()

    try:
        p = plan(old_text, kubeconfig)
    except Refuse as e:
        raise Refuse(f"{manifest}: {e}") from None
    if not p.added:
        print(f"{manifest} already has the ram-authenticator webhook settings; nothing to do")
        return 0

    new_text = render(old_text, p)
    # The result must read back and need nothing more.
    try:
        again = plan(new_text, kubeconfig)
    except Refuse as e:
        raise Refuse(f"internal check failed: the edited file is not understood ({e}); "
                     "nothing was written") from None
    if again.added:
        raise Refuse("internal check failed: the edited file still lacks "
                     f"{', '.join(again.added)}; nothing was written")
    checked = cross_check(old_text, new_text, p, kubeconfig)

    if dry_run:
        sys.stdout.writelines(difflib.unified_diff(
            old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
            fromfile=manifest, tofile=manifest + " (configured)"))
        print(f"dry run: {manifest} not changed", file=sys.stderr)
        return 0

    if not os.path.isfile(kubeconfig):
        raise Refuse(f"{kubeconfig} does not exist: kube-apiserver would not start without it. "
                     "Deploy the ram-authenticator DaemonSet first (its init container writes it) "
                     "and wait until the file is on this node")

    manifest_dir = os.path.dirname(os.path.abspath(manifest))
    if os.path.realpath(backup_dir) == os.path.realpath(manifest_dir):
        raise Refuse(f"--backup-dir {backup_dir} is the manifest's directory: the kubelet would "
                     "run the backup as a second pod")
    os.makedirs(backup_dir, mode=0o700, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    backup = os.path.join(backup_dir, f"{os.path.basename(manifest)}.{stamp}")
    n = 1
    while os.path.exists(backup):
        backup = os.path.join(backup_dir, f"{os.path.basename(manifest)}.{stamp}.{n}")
        n += 1
    st = os.stat(manifest)
    write_new(backup, old_text, st.st_mode & 0o7777)
    replace_atomically(manifest, new_text, st)
    write_new(backup + ".applied", new_text, 0o600)

    print(f"backed up {manifest} to {backup}")
    print(f"changed {manifest}:")
    for what in p.added:
        print(f"  added {what}")
    for what in p.kept:
        print(f"  kept the existing {what}: it already provides {kubeconfig}")
    if not checked:
        print("  (PyYAML is not installed: the result was checked with this script's own reader)")
    print("the kubelet restarts kube-apiserver with these settings; "
          "watch it with: crictl ps --name kube-apiserver")
    return 0


try:
    sys.exit(main())
except Refuse as e:
    print(f"{PROG}: refused: {e}", file=sys.stderr)
    sys.exit(1)
except OSError as e:
    print(f"{PROG}: {e}", file=sys.stderr)
    sys.exit(1)
PYTHON

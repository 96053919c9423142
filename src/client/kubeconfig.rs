//! `kubeconfig`: a kubeconfig whose user runs this binary as the exec credential plugin.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use serde::Serialize;

/// The CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read the CA file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the CA file {path} is not PEM: {detail} (want one or more -----BEGIN CERTIFICATE----- blocks)")]
    NotPem { path: String, detail: String },
    #[error("the CA file {0} holds no certificate (want one or more -----BEGIN CERTIFICATE----- blocks)")]
    Empty(String),
}

/// Reads the certificates of a PEM file and writes them back as PEM (anything else in the file,
/// such as a private key, is left out).
pub fn read_ca(path: &Path) -> Result<String, CaError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CaError::Read {
        path: p.clone(),
        source,
    })?;
    let mut pem = String::new();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| CaError::NotPem {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    if pem.is_empty() {
        return Err(CaError::Empty(p));
    }
    Ok(pem)
}

/// Shown by kubectl when the plugin's command is not found.
pub const INSTALL_HINT: &str = "ram-authenticator signs the tokens of this kubeconfig and is not \
on your PATH. Install it (in a checkout of its sources: cargo install --locked --path .; or copy \
the binary your administrator provides into a directory on PATH), then run kubectl again.";

/// How the kubeconfig's user gets its token.
pub enum UserKind<'a> {
    /// kubectl runs the exec credential plugin.
    Exec {
        /// The plugin's command (a name looked up in `PATH`, or an absolute path).
        command: &'a str,
        /// Arguments of the plugin (`token --cluster-id ...`).
        args: &'a [String],
        /// ExecCredential apiVersion kubectl should ask for.
        api_version: &'a str,
    },
    /// kubectl reads the bearer token from this file (re-read as it changes).
    TokenFile(&'a str),
}

/// What goes into the kubeconfig.
pub struct Input<'a> {
    /// Name of the cluster, user and context.
    pub name: &'a str,
    pub server: &'a str,
    /// PEM certificates of the API server's CA.
    pub ca_pem: &'a str,
    pub user: UserKind<'a>,
}

#[derive(Serialize)]
struct Kubeconfig<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named<'a, ClusterDoc<'a>>>,
    contexts: Vec<Named<'a, ContextDoc<'a>>>,
    #[serde(rename = "current-context")]
    current_context: &'a str,
    preferences: std::collections::BTreeMap<String, String>,
    users: Vec<Named<'a, UserDoc<'a>>>,
}

/// `{name: ..., <field>: ...}`, the shape of kubeconfig list items.
struct Named<'a, T> {
    name: &'a str,
    field: &'static str,
    value: T,
}

impl<T: Serialize> Serialize for Named<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("name", self.name)?;
        m.serialize_entry(self.field, &self.value)?;
        m.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterDoc<'a> {
    server: &'a str,
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct ContextDoc<'a> {
    cluster: &'a str,
    user: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum UserDoc<'a> {
    Exec {
        exec: ExecDoc<'a>,
    },
    TokenFile {
        #[serde(rename = "tokenFile")]
        token_file: &'a str,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecDoc<'a> {
    api_version: &'a str,
    command: &'a str,
    args: &'a [String],
    install_hint: &'static str,
    interactive_mode: &'static str,
    provide_cluster_info: bool,
}

fn parts<'a>(
    input: &'a Input<'a>,
) -> (
    Named<'a, ClusterDoc<'a>>,
    Named<'a, ContextDoc<'a>>,
    Named<'a, UserDoc<'a>>,
) {
    let user = match &input.user {
        UserKind::Exec {
            command,
            args,
            api_version,
        } => UserDoc::Exec {
            exec: ExecDoc {
                api_version,
                command,
                args,
                install_hint: INSTALL_HINT,
                interactive_mode: "Never",
                provide_cluster_info: false,
            },
        },
        UserKind::TokenFile(path) => UserDoc::TokenFile { token_file: path },
    };
    (
        Named {
            name: input.name,
            field: "cluster",
            value: ClusterDoc {
                server: input.server,
                certificate_authority_data: base64::engine::general_purpose::STANDARD
                    .encode(input.ca_pem),
            },
        },
        Named {
            name: input.name,
            field: "context",
            value: ContextDoc {
                cluster: input.name,
                user: input.name,
            },
        },
        Named {
            name: input.name,
            field: "user",
            value: user,
        },
    )
}

/// Renders the kubeconfig as YAML.
pub fn render(input: &Input<'_>) -> Result<String, serde_yaml::Error> {
    let (cluster, context, user) = parts(input);
    let doc = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: vec![cluster],
        contexts: vec![context],
        current_context: input.name,
        preferences: Default::default(),
        users: vec![user],
    };
    serde_yaml::to_string(&doc)
}

/// Why a kubeconfig could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("it is not a kubeconfig (YAML): {0}")]
    NotYaml(String),
    #[error(
        "its {0} list is not written in block style; merging would rewrite it (write to another \
         file with --write FILE and list both in KUBECONFIG)"
    )]
    FlowStyle(&'static str),
    #[error(
        "the merge would change more than the entries named {0:?} (unusual formatting); nothing \
         was written (write to another file with --write FILE and list both in KUBECONFIG)"
    )]
    WouldChangeOthers(String),
    #[error("cannot render the entries: {0}")]
    Render(#[from] serde_yaml::Error),
}

const LISTS: [(&str, &str); 3] = [
    ("clusters", "cluster"),
    ("contexts", "context"),
    ("users", "user"),
];

/// Merges the cluster, context and user of `input` into the kubeconfig text `existing`, and
/// makes the context current. Entries with other names keep their exact text (as do comments
/// and every other key); entries with the same name are replaced. The result is checked: other
/// entries must parse to what they were, or nothing is returned.
pub fn merge(existing: &str, input: &Input<'_>) -> Result<String, MergeError> {
    let before: serde_yaml::Value =
        serde_yaml::from_str(existing).map_err(|e| MergeError::NotYaml(e.to_string()))?;
    if before.is_null() {
        return Ok(render(input)?);
    }
    if !before.is_mapping() {
        return Err(MergeError::NotYaml("the document is not a mapping".into()));
    }
    let (cluster, context, user) = parts(input);
    let items = [
        serde_yaml::to_string(&[cluster])?,
        serde_yaml::to_string(&[context])?,
        serde_yaml::to_string(&[user])?,
    ];
    let mut text = existing.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for ((key, _), item) in LISTS.iter().zip(&items) {
        text = put_item(&text, key, input.name, item)?;
    }
    text = put_scalar(&text, "current-context", input.name);
    for (key, value) in [("apiVersion", "v1"), ("kind", "Config")] {
        if before.get(key).is_none() {
            text = put_scalar(&text, key, value);
        }
    }
    check_merge(&before, &text, input)?;
    Ok(text)
}

/// What `--write` did.
pub enum Written {
    /// The file did not exist and was created.
    Created,
    /// The file already held these entries.
    Unchanged,
    /// The file was updated; the old one was kept here.
    Updated { backup: PathBuf },
}

impl Written {
    /// A line for the user.
    pub fn describe(&self, path: &Path, name: &str) -> String {
        let path = path.display();
        match self {
            Self::Created => format!("wrote {path} with cluster, user and context {name:?} (current context)\n"),
            Self::Unchanged => format!("{path} already holds cluster, user and context {name:?}; nothing to do\n"),
            Self::Updated { backup } => format!(
                "merged cluster, user and context {name:?} into {path} (current context); the previous file is {}\n",
                backup.display()
            ),
        }
    }
}

/// Merges the entries into the kubeconfig at `path` (created, mode 0600, when absent). A
/// symlink is followed to the file it names, which is replaced atomically with its mode kept;
/// the old content is first copied, exclusively, to `<file>.<UTC time>.bak`.
pub fn write_merged(path: &Path, input: &Input<'_>) -> anyhow::Result<Written> {
    use anyhow::Context as _;
    use std::os::unix::fs::PermissionsExt as _;
    let target = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e).with_context(|| format!("cannot resolve {}", path.display())),
    };
    let existing = match std::fs::read(&target) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", target.display())),
    };
    let Some(existing) = existing else {
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = render(input)?;
        crate::files::write_atomic(&target, text.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", target.display()))?;
        return Ok(Written::Created);
    };
    let old = String::from_utf8(existing).map_err(|_| {
        anyhow::anyhow!(
            "cannot merge into {}: it is not UTF-8 text",
            target.display()
        )
    })?;
    let new =
        merge(&old, input).with_context(|| format!("cannot merge into {}", target.display()))?;
    if new == old {
        return Ok(Written::Unchanged);
    }
    let mode = std::fs::metadata(&target)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o600);
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let mut backup = target.clone().into_os_string();
    backup.push(format!(".{stamp}.bak"));
    let backup = PathBuf::from(backup);
    {
        use std::io::Write as _;
        let mut f = crate::files::create_new(&backup, mode)
            .with_context(|| format!("cannot create the backup {}", backup.display()))?;
        f.write_all(old.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write the backup {}", backup.display()))?;
    }
    crate::files::write_atomic(&target, new.as_bytes(), mode)
        .with_context(|| format!("cannot write {}", target.display()))?;
    Ok(Written::Updated { backup })
}

/// Byte ranges of the top-level keys: (key, start of its line, end of its block).
fn top_level(text: &str) -> Vec<(String, usize, usize)> {
    let mut out: Vec<(String, usize, usize)> = Vec::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let first = line.chars().next().unwrap_or(' ');
        if !matches!(first, ' ' | '\t' | '-' | '#' | '\n' | '\r') {
            if let Some((key, _)) = line.split_once(':') {
                if let Some(last) = out.last_mut() {
                    last.2 = pos;
                }
                let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
                out.push((key.to_string(), pos, text.len()));
            }
        }
        pos += line.len();
    }
    out
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.split_inclusive('\n')
        .map(|l| format!("{pad}{l}"))
        .collect()
}

/// Puts `item` (a one-element YAML sequence) into the list `key`, replacing the item named `name`.
fn put_item(text: &str, key: &'static str, name: &str, item: &str) -> Result<String, MergeError> {
    let Some((_, start, end)) = top_level(text).into_iter().find(|(k, _, _)| k == key) else {
        return Ok(format!("{text}{key}:\n{item}"));
    };
    let block = &text[start..end];
    let (key_line, body) = block.split_at(block.find('\n').map_or(block.len(), |i| i + 1));
    let inline = key_line
        .split_once(':')
        .map(|(_, v)| v.trim())
        .unwrap_or("");
    let inline = inline.split(" #").next().unwrap_or("").trim();
    if !inline.is_empty() && !inline.starts_with('#') {
        if matches!(inline, "[]" | "null" | "~") {
            return Ok(format!("{}{key}:\n{item}{}", &text[..start], &text[end..]));
        }
        return Err(MergeError::FlowStyle(key));
    }
    // Items: lines starting with `- ` at the indentation of the first one.
    let mut starts: Vec<usize> = Vec::new();
    let mut item_indent = None;
    let mut pos = 0;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim_start_matches(' ');
        let ind = line.len() - trimmed.len();
        if trimmed.starts_with("- ") || trimmed.trim_end() == "-" {
            match item_indent {
                None => {
                    item_indent = Some(ind);
                    starts.push(pos);
                }
                Some(i) if i == ind => starts.push(pos),
                Some(_) => {}
            }
        } else if item_indent.is_none() && !trimmed.trim().is_empty() && !trimmed.starts_with('#') {
            return Err(MergeError::FlowStyle(key));
        }
        pos += line.len();
    }
    let ind = item_indent.unwrap_or(0);
    let ours = indent(item, ind);
    let body_start = start + key_line.len();
    for (i, &s) in starts.iter().enumerate() {
        let e = starts.get(i + 1).copied().unwrap_or(body.len());
        let item_text = &body[s..e];
        let dedented: String = item_text
            .split_inclusive('\n')
            .map(|l| l.get(ind..).unwrap_or(l.trim_start()))
            .collect();
        let parsed: serde_yaml::Value = serde_yaml::from_str(&dedented).unwrap_or_default();
        if parsed[0]["name"].as_str() == Some(name) {
            // Keep the blank lines and comments that trail the replaced item.
            let tail_start = trailing_trivia(item_text);
            return Ok(format!(
                "{}{ours}{}{}",
                &text[..body_start + s],
                &item_text[tail_start..],
                &text[body_start + e..]
            ));
        }
    }
    // Not there: append after the last item (before trailing blank lines and comments).
    let last_end = match starts.last() {
        Some(&s) => s + trailing_trivia(&body[s..]),
        None => 0,
    };
    Ok(format!(
        "{}{ours}{}",
        &text[..body_start + last_end],
        &text[body_start + last_end..]
    ))
}

/// Where the trailing blank and comment lines of an item begin.
fn trailing_trivia(item: &str) -> usize {
    let lines: Vec<&str> = item.split_inclusive('\n').collect();
    let mut keep = item.len();
    for line in lines.iter().skip(1).rev() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            keep -= line.len();
        } else {
            break;
        }
    }
    keep
}

/// Sets the top-level scalar `key` (one line), or appends it.
fn put_scalar(text: &str, key: &str, value: &str) -> String {
    let line = format!("{key}: {value}\n");
    match top_level(text).into_iter().find(|(k, _, _)| k == key) {
        Some((_, start, _)) => {
            let end = text[start..]
                .find('\n')
                .map_or(text.len(), |i| start + i + 1);
            format!("{}{line}{}", &text[..start], &text[end..])
        }
        None => format!("{text}{line}"),
    }
}

/// The merged text must parse to the old document with only our entries changed.
fn check_merge(
    before: &serde_yaml::Value,
    text: &str,
    input: &Input<'_>,
) -> Result<(), MergeError> {
    let wrong = || MergeError::WouldChangeOthers(input.name.to_string());
    let after: serde_yaml::Value = serde_yaml::from_str(text).map_err(|_| wrong())?;
    let ours: serde_yaml::Value =
        serde_yaml::from_str(&render(input)?).map_err(|e| MergeError::NotYaml(e.to_string()))?;
    let (Some(b), Some(a)) = (before.as_mapping(), after.as_mapping()) else {
        return Err(wrong());
    };
    for (k, v) in b {
        let key = k.as_str().unwrap_or("");
        if LISTS.iter().any(|(l, _)| *l == key) || key == "current-context" {
            continue;
        }
        if a.get(k) != Some(v) {
            return Err(wrong());
        }
    }
    for (key, _) in LISTS {
        let others = |doc: &serde_yaml::Value| -> Vec<serde_yaml::Value> {
            doc[key]
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .filter(|e| e["name"].as_str() != Some(input.name))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        };
        if others(before) != others(&after) {
            return Err(wrong());
        }
        let mine: Vec<&serde_yaml::Value> = after[key]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .filter(|e| e["name"].as_str() == Some(input.name))
                    .collect()
            })
            .unwrap_or_default();
        if mine.len() != 1 || Some(mine[0]) != ours[key].get(0) {
            return Err(wrong());
        }
    }
    if after["current-context"].as_str() != Some(input.name) {
        return Err(wrong());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    fn self_signed() -> String {
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("cert")
            .cert
            .pem()
    }

    #[test]
    fn reads_ca_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = self_signed();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, format!("junk before\n{cert}")).expect("write");
        let pem = read_ca(&path).expect("ca");
        assert_eq!(pem.trim(), cert.trim().replace("\r\n", "\n"));

        let e = read_ca(&dir.path().join("missing.pem"))
            .expect_err("missing")
            .to_string();
        assert!(e.starts_with("cannot read the CA file"), "{e}");
        std::fs::write(&path, "hello").expect("write");
        let e = read_ca(&path).expect_err("empty").to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let e = read_ca(&path).expect_err("bad").to_string();
        assert!(e.contains("is not PEM"), "{e}");
    }

    #[test]
    fn renders_an_exec_kubeconfig() {
        let args = vec!["token".to_string(), "--cluster-id".into(), "c1".into()];
        let yaml = render(&Input {
            name: "c1",
            server: "https://127.0.0.1:6443",
            ca_pem: "PEM",
            user: UserKind::Exec {
                command: "/usr/bin/ram-authenticator",
                args: &args,
                api_version: "client.authentication.k8s.io/v1beta1",
            },
        })
        .expect("yaml");
        let v: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("parse");
        assert_eq!(v["apiVersion"], "v1");
        assert!(v.get("api-version").is_none(), "{yaml}");
        assert_eq!(v["current-context"], "c1");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(v["contexts"][0]["context"]["user"], "c1");
        let exec = &v["users"][0]["user"]["exec"];
        assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1beta1");
        assert_eq!(exec["command"], "/usr/bin/ram-authenticator");
        assert_eq!(exec["interactiveMode"], "Never");
        assert_eq!(exec["provideClusterInfo"], false);
        assert_eq!(exec["args"][2], "c1");
        assert_eq!(exec["installHint"], INSTALL_HINT);
    }

    const OTHERS: &str = "\
# my clusters
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: QUJD
    server: https://other.example:6443
  name: other
- cluster:
    server: \"https://quoted.example\"   # a comment
    insecure-skip-tls-verify: true
  name: quoted
contexts:
- context:
    cluster: other
    user: other-admin
    namespace: dev
  name: other
current-context: other
kind: Config
preferences: {}
users:
- name: other-admin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: aws
      args:
        - eks
        - get-token
";

    fn input<'a>(args: &'a [String]) -> Input<'a> {
        Input {
            name: "c1",
            server: "https://127.0.0.1:6443",
            ca_pem: "PEM",
            user: UserKind::Exec {
                command: "ram-authenticator",
                args,
                api_version: "client.authentication.k8s.io/v1beta1",
            },
        }
    }

    #[test]
    fn merge_keeps_other_entries_byte_for_byte() {
        let args = vec!["token".to_string(), "-i".into(), "c1".into()];
        let merged = merge(OTHERS, &input(&args)).expect("merge");
        // Every line of the old file but current-context is still there, in order.
        let kept: Vec<&str> = OTHERS
            .lines()
            .filter(|l| !l.starts_with("current-context"))
            .collect();
        let mut rest = merged.lines();
        for line in &kept {
            assert!(rest.any(|m| m == *line), "lost {line:?} in\n{merged}");
        }
        let v: serde_yaml::Value = serde_yaml::from_str(&merged).expect("yaml");
        assert_eq!(v["current-context"], "c1");
        assert_eq!(v["clusters"].as_sequence().expect("clusters").len(), 3);
        assert_eq!(v["users"][1]["user"]["exec"]["args"][2], "c1");
        // Idempotent, and a changed entry replaces the old one in place.
        assert_eq!(merge(&merged, &input(&args)).expect("again"), merged);
        let args2 = vec!["token".to_string(), "-i".into(), "c2".into()];
        let changed = merge(&merged, &input(&args2)).expect("change");
        let v: serde_yaml::Value = serde_yaml::from_str(&changed).expect("yaml");
        assert_eq!(v["users"].as_sequence().expect("users").len(), 2);
        assert_eq!(v["users"][1]["user"]["exec"]["args"][2], "c2");
        assert!(changed.contains("  name: quoted\n"), "{changed}");
    }

    #[test]
    fn merge_into_empty_lists_and_refusals() {
        let args = vec!["token".to_string()];
        let merged = merge(
            "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: null\nusers:\n",
            &input(&args),
        )
        .expect("merge");
        let v: serde_yaml::Value = serde_yaml::from_str(&merged).expect("yaml");
        assert_eq!(v["clusters"][0]["name"], "c1");
        assert_eq!(v["contexts"][0]["name"], "c1");
        assert_eq!(v["users"][0]["name"], "c1");
        assert_eq!(
            merge("", &input(&args)).expect("empty"),
            render(&input(&args)).expect("render")
        );
        let e = merge(
            "{\"apiVersion\":\"v1\",\"clusters\":[{\"name\":\"x\",\"cluster\":{}}]}",
            &input(&args),
        )
        .expect_err("flow style");
        assert!(e.to_string().contains("--write"), "{e}");
        let e = merge("clusters: [{name: x}]\n", &input(&args)).expect_err("flow list");
        assert!(matches!(e, MergeError::FlowStyle("clusters")), "{e}");
        assert!(matches!(
            merge("- a\n", &input(&args)),
            Err(MergeError::NotYaml(_))
        ));
    }
}

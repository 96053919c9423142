//! `add`, `remove` and `list`: manage mappings in the cluster, as RAMIdentityMapping objects
//! (`--backend CRD`, the default) or as entries of the `kube-system/alibabacloud-auth`
//! ConfigMap (`--backend ACKConfigMap`, ack-ram-authenticator's `add`).
//!
//! Every change is validated with the server's own rules first (the entry as the server would
//! build it, and for the ConfigMap the whole data as the server would parse it), is idempotent
//! (the mapping of an ARN is found by its canonical form, whatever the object's name or the
//! key casing), and `--dry-run` prints the object instead of writing it.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;

use ::kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::{Client, Config};
use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

use crate::arn::{Arn, Resource};
use crate::exit::usage;
use crate::kube::configmap;
use crate::kube::crd::{canonical_arn_for_status, RAMIdentityMapping};
use crate::mapping::glob::Glob;
use crate::mapping::index::Entry;

/// Where mappings are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// RAMIdentityMapping objects (one per ARN).
    #[default]
    #[value(name = "CRD", alias = "crd")]
    Crd,
    /// The `mapRoles`/`mapUsers` keys of ConfigMap kube-system/alibabacloud-auth.
    #[value(name = "ACKConfigMap", alias = "ackconfigmap", alias = "ConfigMap")]
    AckConfigMap,
}

/// How to reach the cluster and how to write.
#[derive(Debug, Args)]
pub struct Target {
    /// Where the mappings live.
    #[arg(long, value_enum, default_value_t = Backend::Crd)]
    pub backend: Backend,
    /// Kubeconfig file. Default: $KUBECONFIG, ~/.kube/config, else the pod's service account.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig to use. Default: its current context.
    #[arg(long, value_name = "NAME")]
    pub kubeconfig_context: Option<String>,
    /// API server URL, overriding the kubeconfig's.
    #[arg(long, value_name = "URL")]
    pub master_url: Option<String>,
}

/// Writing flags of `add` and `remove`.
#[derive(Debug, Args)]
pub struct WriteFlags {
    #[command(flatten)]
    pub target: Target,
    /// Print the object that would be written, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Ask before writing (`--prompt=false` never asks). Default: ask when standard input is a
    /// terminal.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub prompt: Option<bool>,
}

/// What a mapping says.
#[derive(Debug, Args)]
pub struct MappingFlags {
    /// Kubernetes username; may use {{AccountID}}, {{SessionName}}, {{SessionNameRaw}}.
    #[arg(long)]
    pub username: String,
    /// Kubernetes groups, comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Name of the RAMIdentityMapping object. Default: derived from the ARN.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AddCommand {
    /// Map a RAM user (or the account's root) to a Kubernetes user.
    User {
        /// The RAM user's ARN (acs:ram::<account>:user/<name>), or a pattern with * and ?.
        #[arg(long = "userarn", visible_alias = "user-arn", value_name = "ARN")]
        arn: String,
        #[command(flatten)]
        mapping: MappingFlags,
        #[command(flatten)]
        write: WriteFlags,
    },
    /// Map a RAM role (anyone who assumes it) to a Kubernetes user.
    Role {
        /// The RAM role's ARN (acs:ram::<account>:role/<name>), or a pattern with * and ?.
        #[arg(long = "rolearn", visible_alias = "role-arn", value_name = "ARN")]
        arn: String,
        #[command(flatten)]
        mapping: MappingFlags,
        #[command(flatten)]
        write: WriteFlags,
    },
}

#[derive(Debug, Subcommand)]
pub enum RemoveCommand {
    /// Remove the mapping of a RAM user.
    User {
        #[arg(long = "userarn", visible_alias = "user-arn", value_name = "ARN")]
        arn: String,
        #[command(flatten)]
        write: WriteFlags,
    },
    /// Remove the mapping of a RAM role.
    Role {
        #[arg(long = "rolearn", visible_alias = "role-arn", value_name = "ARN")]
        arn: String,
        #[command(flatten)]
        write: WriteFlags,
    },
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    User,
    Role,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Role => "role",
        }
    }
    fn list_key(self) -> &'static str {
        match self {
            Kind::User => "mapUsers",
            Kind::Role => "mapRoles",
        }
    }
    fn arn_key(self) -> &'static str {
        match self {
            Kind::User => "userarn",
            Kind::Role => "rolearn",
        }
    }
}

/// The key a mapping is found by: the canonical ARN (or the pattern), lower-cased.
fn mapping_key(arn: &str) -> Option<String> {
    canonical_arn_for_status(arn)
}

/// Refuses an ARN of the wrong kind (`add user --userarn ...:role/x`) or one the server would
/// refuse.
fn check_arn(kind: Kind, arn: &str) -> anyhow::Result<String> {
    let arn = arn.trim();
    let flag = match kind {
        Kind::User => "--userarn",
        Kind::Role => "--rolearn",
    };
    if arn.is_empty() {
        return Err(usage(format!("{flag} is empty")));
    }
    if !Glob::is_pattern(arn) {
        let parsed = Arn::parse(arn).map_err(|e| usage(format!("{flag}: {e}")))?;
        let fits = matches!(
            (kind, &parsed.resource),
            (Kind::User, Resource::User(_) | Resource::Root)
                | (Kind::Role, Resource::Role(_) | Resource::AssumedRole { .. })
        );
        if !fits {
            let other = if kind == Kind::User { "role" } else { "user" };
            return Err(usage(format!(
                "{flag} {arn:?} is not a RAM {} ARN (acs:ram::<account>:{}/<name>); for a {other} use `add {other}`",
                kind.word(),
                kind.word()
            )));
        }
    }
    Ok(arn.to_string())
}

/// The mapping as the server would build it; its errors are usage errors.
fn validated(kind: Kind, arn: &str, m: &MappingFlags) -> anyhow::Result<(String, Vec<String>)> {
    let arn = check_arn(kind, arn)?;
    let groups: Vec<String> = m
        .groups
        .iter()
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    Entry::new(&arn, m.username.trim(), &groups, "command line".into())
        .map_err(|e| usage(format!("the mapping would be refused by the server: {e}")))?;
    Ok((arn, groups))
}

/// A kube client from the flags.
pub async fn client(t: &Target) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: t.kubeconfig_context.clone(),
        ..KubeConfigOptions::default()
    };
    let mut config = match (&t.kubeconfig, &t.kubeconfig_context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .with_context(|| format!("cannot use the kubeconfig {}", path.display()))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .context("cannot use the default kubeconfig")?,
        (None, None) => Config::infer()
            .await
            .context("no Kubernetes configuration found (pass --kubeconfig)")?,
    };
    if let Some(url) = &t.master_url {
        config.cluster_url = url
            .parse()
            .map_err(|e| usage(format!("--master-url {url:?}: {e}")))?;
    }
    Client::try_from(config).context("cannot build the Kubernetes client")
}

fn confirm(w: &WriteFlags, action: &str) -> anyhow::Result<bool> {
    let ask = w.prompt.unwrap_or_else(|| std::io::stdin().is_terminal());
    if !ask || w.dry_run {
        return Ok(true);
    }
    eprint!("{action}: continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

fn mappings_api(client: Client) -> Api<DynamicObject> {
    Api::all_with(client, &ApiResource::erase::<RAMIdentityMapping>(&()))
}

fn configmaps_api(client: Client) -> Api<ConfigMap> {
    Api::namespaced(client, configmap::NAMESPACE)
}

/// A DNS-1123 object name for an ARN: readable, with a short hash when the ARN had to be
/// changed to fit.
fn object_name(kind: Kind, key: &str) -> String {
    let plain: String = key
        .trim_start_matches("acs:ram::")
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            _ => '-',
        })
        .collect();
    let plain = plain.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut name: String = format!("{}-{plain}", kind.word())
        .chars()
        .take(200)
        .collect();
    let exact = format!(
        "{}-{}",
        kind.word(),
        key.trim_start_matches("acs:ram::").replace([':', '/'], "-")
    );
    if name != exact {
        name = format!(
            "{}-{}",
            name.trim_end_matches(['-', '.']),
            crate::types::short_hash(key)
        );
    }
    name
}

enum Outcome {
    Unchanged(String),
    Written(String),
    DryRun(String),
    Cancelled,
}

fn finish(outcome: Outcome) -> anyhow::Result<i32> {
    match outcome {
        Outcome::Unchanged(what) => {
            crate::output::emit(&format!("{what} already as asked; nothing to do\n"))?
        }
        Outcome::Written(what) => crate::output::emit(&format!("{what}\n"))?,
        Outcome::DryRun(object) => crate::output::emit(&object)?,
        Outcome::Cancelled => eprintln!("cancelled; nothing was written"),
    }
    Ok(0)
}

/// `add user` / `add role`.
pub async fn add(cmd: AddCommand) -> anyhow::Result<i32> {
    let (kind, arn, mapping, write) = match &cmd {
        AddCommand::User {
            arn,
            mapping,
            write,
        } => (Kind::User, arn, mapping, write),
        AddCommand::Role {
            arn,
            mapping,
            write,
        } => (Kind::Role, arn, mapping, write),
    };
    let (arn, groups) = validated(kind, arn, mapping)?;
    let username = mapping.username.trim().to_string();
    let key = mapping_key(&arn).unwrap_or_else(|| arn.to_lowercase());
    let client = client(&write.target).await?;
    let outcome = match write.target.backend {
        Backend::Crd => {
            add_object(
                client,
                kind,
                &arn,
                &key,
                &username,
                &groups,
                mapping.name.as_deref(),
                write,
            )
            .await?
        }
        Backend::AckConfigMap => {
            if mapping.name.is_some() {
                return Err(usage("--name names a RAMIdentityMapping object; it does not apply to --backend ACKConfigMap"));
            }
            let mut entry = serde_yaml::Mapping::new();
            entry.insert(kind.arn_key().into(), arn.clone().into());
            entry.insert("username".into(), username.clone().into());
            if !groups.is_empty() {
                entry.insert(
                    "groups".into(),
                    serde_yaml::Value::Sequence(groups.iter().map(|g| g.clone().into()).collect()),
                );
            }
            edit_configmap(
                client,
                kind,
                &key,
                Some(serde_yaml::Value::Mapping(entry)),
                write,
                &arn,
            )
            .await?
        }
    };
    finish(outcome)
}

/// `remove user` / `remove role`.
pub async fn remove(cmd: RemoveCommand) -> anyhow::Result<i32> {
    let (kind, arn, write) = match &cmd {
        RemoveCommand::User { arn, write } => (Kind::User, arn, write),
        RemoveCommand::Role { arn, write } => (Kind::Role, arn, write),
    };
    let arn = check_arn(kind, arn)?;
    let key = mapping_key(&arn).unwrap_or_else(|| arn.to_lowercase());
    let client = client(&write.target).await?;
    let outcome = match write.target.backend {
        Backend::Crd => {
            let api = mappings_api(client);
            let names: Vec<String> = api
                .list(&ListParams::default())
                .await
                .context("cannot list RAMIdentityMapping objects")?
                .items
                .into_iter()
                .filter(|o| {
                    spec_arn(o).and_then(|a| mapping_key(&a)).as_deref() == Some(key.as_str())
                })
                .filter_map(|o| o.metadata.name)
                .collect();
            if names.is_empty() {
                Outcome::Unchanged(format!("no RAMIdentityMapping maps {arn};"))
            } else if write.dry_run {
                Outcome::DryRun(
                    names
                        .iter()
                        .map(|n| format!("would delete RAMIdentityMapping/{n}\n"))
                        .collect(),
                )
            } else if !confirm(
                write,
                &format!("delete RAMIdentityMapping {}", names.join(", ")),
            )? {
                Outcome::Cancelled
            } else {
                for n in &names {
                    api.delete(n, &DeleteParams::default())
                        .await
                        .with_context(|| format!("cannot delete RAMIdentityMapping/{n}"))?;
                }
                Outcome::Written(format!("deleted RAMIdentityMapping {}", names.join(", ")))
            }
        }
        Backend::AckConfigMap => edit_configmap(client, kind, &key, None, write, &arn).await?,
    };
    finish(outcome)
}

fn spec_arn(o: &DynamicObject) -> Option<String> {
    o.data["spec"]["arn"].as_str().map(str::to_string)
}

#[allow(clippy::too_many_arguments)]
async fn add_object(
    client: Client,
    kind: Kind,
    arn: &str,
    key: &str,
    username: &str,
    groups: &[String],
    name: Option<&str>,
    write: &WriteFlags,
) -> anyhow::Result<Outcome> {
    let api = mappings_api(client);
    let existing: Vec<DynamicObject> = api
        .list(&ListParams::default())
        .await
        .context("cannot list RAMIdentityMapping objects (is the CRD installed? `ram-authenticator crd | kubectl apply -f -`)")?
        .items
        .into_iter()
        .filter(|o| spec_arn(o).and_then(|a| mapping_key(&a)).as_deref() == Some(key))
        .collect();
    if existing.len() > 1 {
        let names: Vec<String> = existing
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        return Err(anyhow::anyhow!(
            "{} RAMIdentityMapping objects map {arn} ({}); remove the extra ones first",
            names.len(),
            names.join(", ")
        ));
    }
    let mut spec = json!({"arn": arn, "username": username});
    if !groups.is_empty() {
        spec["groups"] = json!(groups);
    }
    let current = existing.into_iter().next();
    let name = match (&current, name) {
        (Some(o), Some(n)) if o.metadata.name.as_deref() != Some(n) => {
            return Err(usage(format!(
                "{arn} is already mapped by RAMIdentityMapping/{}; --name {n} would map it twice",
                o.metadata.name.as_deref().unwrap_or("?")
            )))
        }
        (Some(o), _) => o.metadata.name.clone().unwrap_or_default(),
        (None, Some(n)) => n.to_string(),
        (None, None) => object_name(kind, key),
    };
    let mut object = json!({
        "apiVersion": format!("{}/{}", crate::kube::crd::GROUP, crate::kube::crd::VERSION),
        "kind": crate::kube::crd::KIND,
        "metadata": {"name": name},
        "spec": spec,
    });
    if let Some(o) = &current {
        let same_groups = o.data["spec"]["groups"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0)
            == groups.len()
            && groups
                .iter()
                .enumerate()
                .all(|(i, g)| o.data["spec"]["groups"][i].as_str() == Some(g));
        // Found by its key: the same ARN, whatever its spelling.
        if o.data["spec"]["username"].as_str() == Some(username) && same_groups {
            return Ok(Outcome::Unchanged(format!(
                "RAMIdentityMapping/{name} maps {arn}"
            )));
        }
        object["metadata"]["resourceVersion"] = json!(o.metadata.resource_version);
    }
    if write.dry_run {
        let mut shown = object.clone();
        if let Some(m) = shown["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        return Ok(Outcome::DryRun(serde_yaml::to_string(&shown)?));
    }
    let verb = if current.is_some() {
        "update"
    } else {
        "create"
    };
    if !confirm(
        write,
        &format!("{verb} RAMIdentityMapping/{name}: {arn} -> {username} {groups:?}"),
    )? {
        return Ok(Outcome::Cancelled);
    }
    let object: DynamicObject = serde_json::from_value(object)?;
    if current.is_some() {
        api.replace(&name, &PostParams::default(), &object)
            .await
            .with_context(|| format!("cannot update RAMIdentityMapping/{name}"))?;
        Ok(Outcome::Written(format!(
            "updated RAMIdentityMapping/{name}: {arn} -> {username}"
        )))
    } else {
        api.create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("cannot create RAMIdentityMapping/{name}"))?;
        Ok(Outcome::Written(format!(
            "created RAMIdentityMapping/{name}: {arn} -> {username}"
        )))
    }
}

/// Puts (`Some`) or removes (`None`) the entry of `key` in the ConfigMap's list for `kind`.
async fn edit_configmap(
    client: Client,
    kind: Kind,
    key: &str,
    entry: Option<serde_yaml::Value>,
    write: &WriteFlags,
    arn: &str,
) -> anyhow::Result<Outcome> {
    let api = configmaps_api(client);
    let current = api.get_opt(configmap::NAME).await.with_context(|| {
        format!(
            "cannot read ConfigMap {}/{}",
            configmap::NAMESPACE,
            configmap::NAME
        )
    })?;
    let data: BTreeMap<String, String> = current
        .as_ref()
        .and_then(|c| c.data.clone())
        .unwrap_or_default();
    // The list's data key as written (any casing), else the conventional one.
    let data_key = data
        .keys()
        .find(|k| k.eq_ignore_ascii_case(kind.list_key()))
        .cloned()
        .unwrap_or_else(|| kind.list_key().to_string());
    let mut items: Vec<serde_yaml::Value> = match data.get(&data_key) {
        None => Vec::new(),
        Some(text) => match serde_yaml::from_str::<serde_yaml::Value>(text) {
            Ok(serde_yaml::Value::Null) => Vec::new(),
            Ok(serde_yaml::Value::Sequence(s)) => s,
            _ => {
                return Err(anyhow::anyhow!(
                "data key {data_key:?} of ConfigMap {} is not a YAML list; fix it by hand first",
                configmap::NAME
            ))
            }
        },
    };
    let entry_key = |v: &serde_yaml::Value| -> Option<String> {
        v.as_mapping()?.iter().find_map(|(k, v)| {
            (k.as_str()?.eq_ignore_ascii_case(kind.arn_key()))
                .then(|| v.as_str().and_then(mapping_key))
                .flatten()
        })
    };
    let position = items
        .iter()
        .position(|i| entry_key(i).as_deref() == Some(key));
    let what = format!(
        "ConfigMap {}/{} {data_key}",
        configmap::NAMESPACE,
        configmap::NAME
    );
    match (&entry, position) {
        (None, None) => {
            return Ok(Outcome::Unchanged(format!(
                "no entry of {what} maps {arn};"
            )))
        }
        (None, Some(p)) => {
            items.remove(p);
        }
        (Some(e), Some(p)) => {
            let have = crate::mapping::lowercase_keys(items[p].clone());
            let groups =
                |v: &serde_yaml::Value| v["groups"].as_sequence().cloned().unwrap_or_default();
            if have["username"] == e["username"] && groups(&have) == groups(e) {
                return Ok(Outcome::Unchanged(format!("{what} maps {arn}")));
            }
            items[p] = e.clone();
        }
        (Some(e), None) => items.push(e.clone()),
    }
    let mut new_data = data.clone();
    if items.is_empty() {
        new_data.insert(data_key.clone(), String::new());
    } else {
        new_data.insert(data_key.clone(), serde_yaml::to_string(&items)?);
    }
    // The server must accept every key of the result.
    let parsed = configmap::parse_data(&new_data, &configmap::LastGood::default());
    if !parsed.errors.is_empty() {
        anyhow::bail!(
            "the ConfigMap would be refused by the server: {}",
            parsed.errors.join("; ")
        );
    }
    let mut cm = current.clone().unwrap_or_default();
    cm.metadata.name = Some(configmap::NAME.to_string());
    cm.metadata.namespace = Some(configmap::NAMESPACE.to_string());
    cm.data = Some(new_data);
    if write.dry_run {
        let mut shown = serde_json::to_value(&cm)?;
        shown["apiVersion"] = json!("v1");
        shown["kind"] = json!("ConfigMap");
        if let Some(m) = shown["metadata"].as_object_mut() {
            for k in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "managedFields",
            ] {
                m.remove(k);
            }
        }
        return Ok(Outcome::DryRun(serde_yaml::to_string(&shown)?));
    }
    let action = match (&entry, position) {
        (None, _) => format!("remove {arn} from {what}"),
        (Some(_), Some(_)) => format!("update {arn} in {what}"),
        (Some(_), None) => format!("add {arn} to {what}"),
    };
    if !confirm(write, &action)? {
        return Ok(Outcome::Cancelled);
    }
    if current.is_some() {
        api.replace(configmap::NAME, &PostParams::default(), &cm)
            .await
            .with_context(|| {
                format!(
                    "cannot update ConfigMap {}/{}",
                    configmap::NAMESPACE,
                    configmap::NAME
                )
            })?;
    } else {
        api.create(&PostParams::default(), &cm)
            .await
            .with_context(|| {
                format!(
                    "cannot create ConfigMap {}/{}",
                    configmap::NAMESPACE,
                    configmap::NAME
                )
            })?;
    }
    Ok(Outcome::Written(match (&entry, position) {
        (None, _) => format!("removed {arn} from {what}"),
        (Some(_), Some(_)) => format!("updated {arn} in {what}"),
        (Some(_), None) => format!("added {arn} to {what}"),
    }))
}

/// `list`: the mappings stored in the cluster, one per line (`ARN -> username [groups] (where)`).
pub async fn list(args: &ListArgs) -> anyhow::Result<i32> {
    use std::fmt::Write as _;
    let client = client(&args.target).await?;
    let mut out = String::new();
    match args.target.backend {
        Backend::Crd => {
            let mut items = mappings_api(client)
                .list(&ListParams::default())
                .await
                .context("cannot list RAMIdentityMapping objects")?
                .items;
            items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            for o in items {
                let spec = &o.data["spec"];
                let groups: Vec<&str> = spec["groups"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|g| g.as_str()).collect())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{} -> {} {:?} (RAMIdentityMapping/{})",
                    spec["arn"].as_str().unwrap_or("?"),
                    spec["username"].as_str().unwrap_or("?"),
                    groups,
                    o.metadata.name.as_deref().unwrap_or("?")
                );
            }
        }
        Backend::AckConfigMap => {
            let cm = configmaps_api(client)
                .get_opt(configmap::NAME)
                .await
                .with_context(|| {
                    format!(
                        "cannot read ConfigMap {}/{}",
                        configmap::NAMESPACE,
                        configmap::NAME
                    )
                })?;
            let data = cm.and_then(|c| c.data).unwrap_or_default();
            for (key, text) in &data {
                let lower = key.to_ascii_lowercase();
                if lower != "maproles" && lower != "mapusers" {
                    continue;
                }
                let items: Vec<serde_yaml::Value> = match serde_yaml::from_str(text) {
                    Ok(serde_yaml::Value::Sequence(s)) => s,
                    _ => Vec::new(),
                };
                for item in items.into_iter().map(crate::mapping::lowercase_keys) {
                    let arn = item["rolearn"]
                        .as_str()
                        .or(item["userarn"].as_str())
                        .unwrap_or("?");
                    let groups: Vec<&str> = item["groups"]
                        .as_sequence()
                        .map(|a| a.iter().filter_map(|g| g.as_str()).collect())
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "{arn} -> {} {groups:?} (ConfigMap {}/{} {key})",
                        item["username"].as_str().unwrap_or("?"),
                        configmap::NAMESPACE,
                        configmap::NAME
                    );
                }
            }
        }
    }
    crate::output::emit(&out)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_dns_names_and_stable() {
        assert_eq!(
            object_name(Kind::Role, "acs:ram::1234567890123456:role/kubeadmin"),
            "role-1234567890123456-role-kubeadmin"
        );
        let n = object_name(Kind::User, "acs:ram::1:user/alice@example.com");
        assert!(n.starts_with("user-1-user-alice-example.com-"), "{n}");
        assert_eq!(
            n,
            object_name(Kind::User, "acs:ram::1:user/alice@example.com")
        );
        assert!(n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'));
    }

    #[test]
    fn arns_of_the_wrong_kind_are_usage_errors() {
        let e = check_arn(Kind::User, "acs:ram::1:role/x").expect_err("role as user");
        assert_eq!(crate::exit::code(&e), 2);
        assert!(e.to_string().contains("add role"), "{e}");
        assert!(check_arn(Kind::Role, "acs:ram::1:assumed-role/x/s").is_ok());
        assert!(check_arn(Kind::Role, "acs:ram::1:role/dev-*").is_ok());
        let e = check_arn(Kind::Role, "arn:aws:iam::1:role/x").expect_err("aws");
        assert_eq!(crate::exit::code(&e), 2);
    }
}

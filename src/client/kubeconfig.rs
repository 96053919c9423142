//! `kubeconfig`: a kubeconfig whose user runs this binary as the exec credential plugin.

use std::path::Path;

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

/// What goes into the kubeconfig.
pub struct Input<'a> {
    /// Name of the cluster, user and context.
    pub name: &'a str,
    pub server: &'a str,
    /// PEM certificates of the API server's CA.
    pub ca_pem: &'a str,
    /// The plugin's command (an absolute path, or a name looked up in `PATH`).
    pub command: &'a str,
    /// Arguments of the plugin (`token --cluster-id ...`).
    pub args: &'a [String],
    /// ExecCredential apiVersion kubectl should ask for.
    pub exec_api_version: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig<'a> {
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named<'a, ClusterDoc<'a>>>,
    contexts: Vec<Named<'a, ContextDoc<'a>>>,
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
struct UserDoc<'a> {
    exec: ExecDoc<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecDoc<'a> {
    api_version: &'a str,
    command: &'a str,
    args: &'a [String],
    interactive_mode: &'static str,
    provide_cluster_info: bool,
}

/// Renders the kubeconfig as YAML.
pub fn render(input: &Input<'_>) -> Result<String, serde_yaml::Error> {
    let doc = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name: input.name,
            field: "cluster",
            value: ClusterDoc {
                server: input.server,
                certificate_authority_data: base64::engine::general_purpose::STANDARD
                    .encode(input.ca_pem),
            },
        }],
        contexts: vec![Named {
            name: input.name,
            field: "context",
            value: ContextDoc {
                cluster: input.name,
                user: input.name,
            },
        }],
        current_context: input.name,
        preferences: Default::default(),
        users: vec![Named {
            name: input.name,
            field: "user",
            value: UserDoc {
                exec: ExecDoc {
                    api_version: input.exec_api_version,
                    command: input.command,
                    args: input.args,
                    interactive_mode: "Never",
                    provide_cluster_info: false,
                },
            },
        }],
    };
    serde_yaml::to_string(&doc)
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
            command: "/usr/bin/ram-authenticator",
            args: &args,
            exec_api_version: "client.authentication.k8s.io/v1beta1",
        })
        .expect("yaml");
        let v: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("parse");
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
    }
}

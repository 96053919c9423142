//! `init`: the serving certificate and key (self-signed, ECDSA P-256) and the webhook
//! kubeconfig kube-apiserver uses to reach the server. Existing certificate and key are reused.
//!
//! With `--client-cert` (mutual TLS) it also makes a client CA (`client-ca.pem`,
//! `client-ca-key.pem`) and a certificate for kube-apiserver signed by it (`apiserver-client.pem`,
//! `apiserver-client-key.pem`), all in the state directory, and writes that certificate and key
//! into the webhook kubeconfig (`client-certificate-data`, `client-key-data`). A server started
//! with the same state directory finds `client-ca.pem` there and requires client certificates.
//!
//! Every file is written with [`crate::files::write_atomic`]: exclusively created, never
//! through a symlink, with its final mode from the start (keys and a kubeconfig holding a key
//! 0600, certificates 0644).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::Args;

/// File name of the serving certificate in the state directory.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the serving key in the state directory.
pub const KEY_FILE: &str = "key.pem";
/// The client CA certificate of mutual TLS, in the state directory.
pub const CLIENT_CA_FILE: &str = "client-ca.pem";
/// The client CA's key (only `init` uses it, to sign kube-apiserver's certificate).
pub const CLIENT_CA_KEY_FILE: &str = "client-ca-key.pem";
/// kube-apiserver's client certificate, signed by the client CA.
pub const CLIENT_CERT_FILE: &str = "apiserver-client.pem";
/// kube-apiserver's client key.
pub const CLIENT_KEY_FILE: &str = "apiserver-client-key.pem";
/// Common name of kube-apiserver's client certificate.
pub const CLIENT_CERT_CN: &str = "kube-apiserver";
/// How long a generated certificate is valid. It is pinned by the webhook kubeconfig (it is
/// its own CA), so rotation is an operator's decision; the expiry is exported as a metric.
pub const CERT_VALIDITY_DAYS: i64 = 3650;

/// Arguments of `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The cluster ID (the root flag `-i/--cluster-id`, or clusterID of `--config`).
    #[arg(skip)]
    pub cluster_id: String,
    /// Directory for cert.pem and key.pem.
    #[arg(long, default_value = ".")]
    pub state_dir: PathBuf,
    /// Host name kube-apiserver uses to reach the webhook (certificate SAN, kubeconfig URL).
    #[arg(long, default_value = "localhost")]
    pub hostname: String,
    /// Address the server listens on (added to the certificate when it is an IP).
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
    /// Port the server listens on.
    #[arg(long, default_value_t = 21362)]
    pub port: u16,
    /// Where to write the webhook kubeconfig [default: <state-dir>/ram-authenticator.kubeconfig].
    #[arg(long)]
    pub generate_kubeconfig: Option<PathBuf>,
    /// Mutual TLS: also make a client CA and a client certificate for kube-apiserver, and put
    /// that certificate in the webhook kubeconfig; a server using this state directory then
    /// requires it.
    #[arg(long)]
    pub client_cert: bool,
}

pub fn run(args: &InitArgs) -> anyhow::Result<i32> {
    let pair = ensure_cert(&args.state_dir, &args.hostname, &args.address)?;
    let kubeconfig = args
        .generate_kubeconfig
        .clone()
        .unwrap_or_else(|| args.state_dir.join("ram-authenticator.kubeconfig"));
    let client = if args.client_cert {
        Some(ensure_client_cert(&args.state_dir)?)
    } else {
        None
    };
    write_kubeconfig(
        &kubeconfig,
        &args.cluster_id,
        &args.hostname,
        args.port,
        &pair.cert_pem,
        client.as_ref().map(|c| &c.client),
    )?;
    let verb = if pair.created { "wrote" } else { "reused" };
    let mut out = format!(
        "{verb} {}\n{verb} {}\n",
        pair.cert_path.display(),
        pair.key_path.display(),
    );
    if let Some(c) = &client {
        for (created, path) in &c.files {
            let verb = if *created { "wrote" } else { "reused" };
            out.push_str(&format!("{verb} {}\n", path.display()));
        }
    }
    out.push_str(&format!("wrote {}\n", kubeconfig.display()));
    out.push_str(&next_steps(args, &kubeconfig, client.is_some()));
    crate::output::emit(&out)?;
    Ok(0)
}

/// What to do with the files `init` wrote: where each goes, the server's and kube-apiserver's
/// flags, and a check before kube-apiserver depends on the webhook.
fn next_steps(args: &InitArgs, kubeconfig: &Path, mtls: bool) -> String {
    let state = args.state_dir.display();
    let kc = kubeconfig.display();
    let (cluster, port) = (&args.cluster_id, args.port);
    let host = if args.hostname.contains(':') && !args.hostname.starts_with('[') {
        format!("[{}]", args.hostname)
    } else {
        args.hostname.clone()
    };
    let mut lines = vec![
        String::new(),
        "Next steps:".to_string(),
        format!("1. Files. {state}/{CERT_FILE} and {state}/{KEY_FILE} (0600) stay on the node that runs the server."),
    ];
    if mtls {
        lines.push(format!("   {kc} (0600: it holds kube-apiserver's client key) goes where kube-apiserver reads it."));
        lines.push(format!("   {state}/{CLIENT_CA_FILE} is the client CA the server requires; {state}/{CLIENT_CA_KEY_FILE} (0600)"));
        lines.push("   signs client certificates (init --client-cert issues a new one when it is missing): keep it private.".into());
    } else {
        lines.push(format!(
            "   {kc} (0644) goes where kube-apiserver reads it."
        ));
    }
    lines.push("2. Run the server with the same state directory, so that it serves the certificate the kubeconfig trusts:".into());
    lines.push(format!("   ram-authenticator server --cluster-id {cluster} --state-dir {state} --port {port} --kubeconfig-pregenerated --config <config.yaml>"));
    if mtls {
        lines.push(format!("   Mutual TLS is on: the server finds {CLIENT_CA_FILE} there and refuses clients without a certificate from it."));
    }
    let cert = if mtls {
        format!(" --cert {state}/{CLIENT_CERT_FILE} --key {state}/{CLIENT_KEY_FILE}")
    } else {
        String::new()
    };
    lines.push("3. Before kube-apiserver depends on it, check that the webhook answers (a TokenReview with your own token):".into());
    lines.push(format!(r#"   token=$(ram-authenticator token -i {cluster} | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')"#));
    lines.push(format!(
        r#"   curl --cacert {state}/{CERT_FILE}{cert} -H 'Content-Type: application/json' -d '{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"'"$token"'"}}}}' https://{host}:{port}/authenticate"#
    ));
    lines.push("4. Start kube-apiserver with:".into());
    lines.push(format!(
        "   --authentication-token-webhook-config-file={kc}"
    ));
    lines.push("   --authentication-token-webhook-version=v1".into());
    lines.push("   --authentication-token-webhook-cache-ttl=2m0s   (the default: how long kube-apiserver caches an answer)".into());
    lines.push("   For a kubeadm static pod, scripts/configure-apiserver.sh adds these flags and the mount (--revert undoes it).".into());
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// The serving pair on disk.
pub struct CertPair {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub created: bool,
}

/// Returns the certificate and key in `state_dir`, generating them if both are absent.
/// Refuses to overwrite when only one of them exists.
pub fn ensure_cert(state_dir: &Path, hostname: &str, address: &str) -> anyhow::Result<CertPair> {
    crate::files::ensure_private_dir(state_dir)?;
    let cert_path = state_dir.join(CERT_FILE);
    let key_path = state_dir.join(KEY_FILE);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let cert_pem = std::fs::read_to_string(&cert_path)
                .with_context(|| format!("cannot read {}", cert_path.display()))?;
            // Validate the pair now rather than at the first handshake.
            super::tls::load_certified_key(&cert_path, &key_path)?;
            Ok(CertPair {
                cert_path,
                key_path,
                cert_pem,
                created: false,
            })
        }
        (false, false) => {
            let (cert_pem, key_pem) = generate(hostname, address)?;
            write_file(&key_path, key_pem.as_bytes(), 0o600)?;
            write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
            Ok(CertPair {
                cert_path,
                key_path,
                cert_pem,
                created: true,
            })
        }
        (c, _) => bail!(
            "{} exists but {} does not; refusing to overwrite half a pair (remove it or restore the other file)",
            if c { cert_path.display() } else { key_path.display() },
            if c { key_path.display() } else { cert_path.display() },
        ),
    }
}

/// A self-signed certificate for `hostname`, `localhost`, `127.0.0.1` and `address` (if an IP).
pub fn generate(hostname: &str, address: &str) -> anyhow::Result<(String, String)> {
    let mut names = vec![hostname.to_string()];
    for extra in ["localhost", "127.0.0.1", address] {
        let unspecified = extra
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_unspecified())
            .unwrap_or(false);
        if !extra.is_empty() && !unspecified && !names.iter().any(|n| n == extra) {
            names.push(extra.to_string());
        }
    }
    let mut params =
        rcgen::CertificateParams::new(names).context("invalid host name for the certificate")?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        format!("ram-authenticator {hostname}"),
    );
    params.distinguished_name = dn;
    set_validity(&mut params);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().context("cannot generate a key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes the webhook kubeconfig: server `https://<hostname>:<port>/authenticate`, the
/// certificate as CA and, for mutual TLS, kube-apiserver's client certificate and key (the file
/// is then 0600, since it holds a key).
pub fn write_kubeconfig(
    path: &Path,
    cluster_id: &str,
    hostname: &str,
    port: u16,
    cert_pem: &str,
    client: Option<&ClientPem>,
) -> anyhow::Result<()> {
    let ca = base64::engine::general_purpose::STANDARD.encode(cert_pem.as_bytes());
    let host = if hostname.contains(':') && !hostname.starts_with('[') {
        format!("[{hostname}]")
    } else {
        hostname.to_string()
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let user = match client {
        Some(c) => format!(
            "\n    client-certificate-data: {}\n    client-key-data: {}",
            b64(&c.cert_pem),
            b64(&c.key_pem)
        ),
        None => "{}".to_string(),
    };
    let text = format!(
        "# Webhook kubeconfig for kube-apiserver's --authentication-token-webhook-config-file.\n\
         # Written by ram-authenticator for cluster {cluster_id}.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: ram-authenticator\n  \
           cluster:\n    \
             certificate-authority-data: {ca}\n    \
             server: https://{host}:{port}/authenticate\n\
         users:\n\
         - name: kube-apiserver\n  \
           user: {user}\n\
         contexts:\n\
         - name: webhook\n  \
           context:\n    \
             cluster: ram-authenticator\n    \
             user: kube-apiserver\n\
         current-context: webhook\n"
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_file(
        path,
        text.as_bytes(),
        if client.is_some() { 0o600 } else { 0o644 },
    )
}

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct ClientPem {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The client CA of mutual TLS.
pub struct ClientCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The client CA's parameters; rebuilt identically to sign with an existing CA key.
fn client_ca_params() -> anyhow::Result<rcgen::CertificateParams> {
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).context("client CA parameters")?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "ram-authenticator client CA");
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    Ok(params)
}

fn set_validity(params: &mut rcgen::CertificateParams) {
    let ymd = |d: chrono::DateTime<chrono::Utc>| {
        use chrono::Datelike as _;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    let now = chrono::Utc::now();
    params.not_before = ymd(now - chrono::TimeDelta::days(1));
    params.not_after = ymd(now + chrono::TimeDelta::days(CERT_VALIDITY_DAYS));
}

impl ClientCa {
    /// A new client CA (ECDSA P-256).
    pub fn generate() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate().context("cannot generate a key")?;
        let cert = client_ca_params()?
            .self_signed(&key)
            .context("cannot sign the client CA")?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate (clientAuth usage) for `common_name`, signed by this CA.
    pub fn issue(&self, common_name: &str) -> anyhow::Result<ClientPem> {
        let ca_key =
            rcgen::KeyPair::from_pem(&self.key_pem).context("the client CA key is not usable")?;
        let issuer = rcgen::Issuer::new(client_ca_params()?, ca_key);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .context("client certificate parameters")?;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params);
        let key = rcgen::KeyPair::generate().context("cannot generate a key")?;
        let cert = params
            .signed_by(&key, &issuer)
            .context("cannot sign the client certificate")?;
        Ok(ClientPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The mutual-TLS files in a state directory: kube-apiserver's certificate and key, and which
/// files were created (true) or reused (false).
pub struct ClientFiles {
    pub client: ClientPem,
    pub files: Vec<(bool, PathBuf)>,
}

/// Makes (or reuses) the client CA and kube-apiserver's client certificate in `state_dir`.
/// A reused certificate must still be accepted by the CA; otherwise a new one is issued.
pub fn ensure_client_cert(state_dir: &Path) -> anyhow::Result<ClientFiles> {
    crate::files::ensure_private_dir(state_dir)?;
    let ca_path = state_dir.join(CLIENT_CA_FILE);
    let ca_key_path = state_dir.join(CLIENT_CA_KEY_FILE);
    let cert_path = state_dir.join(CLIENT_CERT_FILE);
    let key_path = state_dir.join(CLIENT_KEY_FILE);
    let mut files = Vec::new();
    let ca = match read_both(&ca_path, &ca_key_path)? {
        Some((cert_pem, key_pem)) => {
            files.push((false, ca_path.clone()));
            files.push((false, ca_key_path.clone()));
            ClientCa { cert_pem, key_pem }
        }
        None => {
            let ca = ClientCa::generate()?;
            write_file(&ca_key_path, ca.key_pem.as_bytes(), 0o600)?;
            write_file(&ca_path, ca.cert_pem.as_bytes(), 0o644)?;
            files.push((true, ca_path.clone()));
            files.push((true, ca_key_path.clone()));
            ca
        }
    };
    if let Some((cert_pem, key_pem)) = read_both(&cert_path, &key_path)? {
        if client_cert_accepted(&ca.cert_pem, &cert_pem, &key_pem) {
            files.push((false, cert_path));
            files.push((false, key_path));
            return Ok(ClientFiles {
                client: ClientPem { cert_pem, key_pem },
                files,
            });
        }
    }
    let client = ca.issue(CLIENT_CERT_CN)?;
    write_file(&key_path, client.key_pem.as_bytes(), 0o600)?;
    write_file(&cert_path, client.cert_pem.as_bytes(), 0o644)?;
    files.push((true, cert_path));
    files.push((true, key_path));
    Ok(ClientFiles { client, files })
}

/// kube-apiserver's certificate and key from `state_dir`, when `init --client-cert` made them
/// and the client CA in `ca_file` accepts them.
pub fn existing_client_cert(state_dir: &Path, ca_file: &Path) -> anyhow::Result<Option<ClientPem>> {
    let Some((cert_pem, key_pem)) = read_both(
        &state_dir.join(CLIENT_CERT_FILE),
        &state_dir.join(CLIENT_KEY_FILE),
    )?
    else {
        return Ok(None);
    };
    let ca = std::fs::read_to_string(ca_file)
        .with_context(|| format!("cannot read {}", ca_file.display()))?;
    Ok(client_cert_accepted(&ca, &cert_pem, &key_pem).then_some(ClientPem { cert_pem, key_pem }))
}

/// Both files of a pair (certificate, key), `None` if both are absent; half a pair is an error.
/// The key must not be readable by every user.
fn read_both(cert: &Path, key: &Path) -> anyhow::Result<Option<(String, String)>> {
    match (cert.exists(), key.exists()) {
        (false, false) => Ok(None),
        (true, true) => {
            super::tls::check_key_permissions(key)?;
            let c = std::fs::read_to_string(cert)
                .with_context(|| format!("cannot read {}", cert.display()))?;
            let k = std::fs::read_to_string(key)
                .with_context(|| format!("cannot read {}", key.display()))?;
            Ok(Some((c, k)))
        }
        (c, _) => bail!(
            "{} exists but {} does not; refusing to overwrite half a pair (remove it or restore the other file)",
            if c { cert.display() } else { key.display() },
            if c { key.display() } else { cert.display() },
        ),
    }
}

/// Whether the client pair is usable and chains to the CA (with the clientAuth usage).
fn client_cert_accepted(ca_pem: &str, cert_pem: &str, key_pem: &str) -> bool {
    let Ok(verifier) = super::tls::client_verifier_from_pem(ca_pem.as_bytes()) else {
        return false;
    };
    let Ok(ck) = super::tls::certified_key_from_pem(cert_pem.as_bytes(), key_pem.as_bytes()) else {
        return false;
    };
    let Some(end) = ck.cert.first() else {
        return false;
    };
    verifier
        .verify_client_cert(end, &ck.cert[1..], rustls_pki_types::UnixTime::now())
        .is_ok()
}

/// Writes a file atomically with the given mode, never through a symlink (see [`crate::files`]).
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    crate::files::write_atomic(path, data, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn creates_then_reuses_with_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure_cert(dir.path(), "localhost", "127.0.0.1").expect("create");
        assert!(first.created);
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&first.key_path), 0o600);
        assert_eq!(mode(&first.cert_path), 0o644);
        let second = ensure_cert(dir.path(), "localhost", "127.0.0.1").expect("reuse");
        assert!(!second.created);
        assert_eq!(first.cert_pem, second.cert_pem);
    }

    #[test]
    fn client_cert_is_issued_then_reused_and_reissued_for_a_new_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure_client_cert(dir.path()).expect("create");
        assert!(first.files.iter().all(|(created, _)| *created));
        let mode = |n: &str| {
            std::fs::metadata(dir.path().join(n))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(CLIENT_CA_KEY_FILE), 0o600);
        assert_eq!(mode(CLIENT_KEY_FILE), 0o600);
        assert_eq!(mode(CLIENT_CA_FILE), 0o644);
        let ca = std::fs::read_to_string(dir.path().join(CLIENT_CA_FILE)).expect("ca");
        assert!(client_cert_accepted(
            &ca,
            &first.client.cert_pem,
            &first.client.key_pem
        ));
        // A certificate from another CA, or a server certificate, is not accepted.
        let other = ClientCa::generate().expect("ca");
        assert!(!client_cert_accepted(
            &other.cert_pem,
            &first.client.cert_pem,
            &first.client.key_pem
        ));
        let (srv_cert, srv_key) = generate("localhost", "127.0.0.1").expect("gen");
        assert!(!client_cert_accepted(&ca, &srv_cert, &srv_key));

        let second = ensure_client_cert(dir.path()).expect("reuse");
        assert!(second.files.iter().all(|(created, _)| !*created));
        assert_eq!(second.client.cert_pem, first.client.cert_pem);

        // A new CA makes the old client certificate useless: a new one is issued.
        std::fs::remove_file(dir.path().join(CLIENT_CA_FILE)).expect("rm");
        std::fs::remove_file(dir.path().join(CLIENT_CA_KEY_FILE)).expect("rm");
        let third = ensure_client_cert(dir.path()).expect("new ca");
        assert_ne!(third.client.cert_pem, first.client.cert_pem);
    }

    #[test]
    fn refuses_half_a_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CERT_FILE), "x").expect("write");
        let err = ensure_cert(dir.path(), "localhost", "127.0.0.1")
            .err()
            .expect("refused");
        assert!(err.to_string().contains("refusing"), "{err}");
    }
}

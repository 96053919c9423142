//! `init`: the serving certificate and key (self-signed, ECDSA P-256) and the webhook
//! kubeconfig kube-apiserver uses to reach the server. Existing certificate and key are reused.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::Args;

/// File name of the serving certificate in the state directory.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the serving key in the state directory.
pub const KEY_FILE: &str = "key.pem";
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
}

pub fn run(args: &InitArgs) -> anyhow::Result<i32> {
    let pair = ensure_cert(&args.state_dir, &args.hostname, &args.address)?;
    let kubeconfig = args
        .generate_kubeconfig
        .clone()
        .unwrap_or_else(|| args.state_dir.join("ram-authenticator.kubeconfig"));
    write_kubeconfig(
        &kubeconfig,
        &args.cluster_id,
        &args.hostname,
        args.port,
        &pair.cert_pem,
    )?;
    let verb = if pair.created { "wrote" } else { "reused" };
    crate::output::emit(&format!(
        "{verb} {}\n{verb} {}\nwrote {}\n",
        pair.cert_path.display(),
        pair.key_path.display(),
        kubeconfig.display()
    ))?;
    Ok(0)
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
            std::fs::create_dir_all(state_dir)
                .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
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
    let ymd = |d: chrono::DateTime<chrono::Utc>| {
        use chrono::Datelike as _;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    let now = chrono::Utc::now();
    params.not_before = ymd(now - chrono::TimeDelta::days(1));
    params.not_after = ymd(now + chrono::TimeDelta::days(CERT_VALIDITY_DAYS));
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
/// certificate as CA.
pub fn write_kubeconfig(
    path: &Path,
    cluster_id: &str,
    hostname: &str,
    port: u16,
    cert_pem: &str,
) -> anyhow::Result<()> {
    let ca = base64::engine::general_purpose::STANDARD.encode(cert_pem.as_bytes());
    let host = if hostname.contains(':') && !hostname.starts_with('[') {
        format!("[{hostname}]")
    } else {
        hostname.to_string()
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
           user: {{}}\n\
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
    write_file(path, text.as_bytes(), 0o644)
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
    fn refuses_half_a_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CERT_FILE), "x").expect("write");
        let err = ensure_cert(dir.path(), "localhost", "127.0.0.1")
            .err()
            .expect("refused");
        assert!(err.to_string().contains("refusing"), "{err}");
    }
}

//! Serving TLS: rustls (TLS 1.2 and 1.3, ring), with the certificate behind an `ArcSwap` so a
//! rotated cert.pem/key.pem is picked up by new connections without dropping open ones. Bad
//! new files keep the old pair and are logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::metrics::Metrics;

/// Reads and checks a PEM certificate chain and its private key.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let cert_pem =
        std::fs::read(cert_path).with_context(|| format!("cannot read {}", cert_path.display()))?;
    let key_pem =
        std::fs::read(key_path).with_context(|| format!("cannot read {}", key_path.display()))?;
    certified_key_from_pem(&cert_pem, &key_pem).with_context(|| {
        format!(
            "bad TLS pair {} / {}",
            cert_path.display(),
            key_path.display()
        )
    })
}

/// Builds a signing pair from PEM text.
pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<CertifiedKey> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("certificate file is not valid PEM")?;
    if certs.is_empty() {
        bail!("certificate file holds no certificate");
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).context("key file holds no usable private key")?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(certs, key, &provider)
        .context("key does not match the certificate")?;
    Ok(ck)
}

/// Unix time at which the first certificate of a PEM chain expires.
pub fn expiry_unix(cert_pem: &[u8]) -> Option<i64> {
    let der = CertificateDer::pem_slice_iter(cert_pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The current serving pair, swapped in place on reload.
#[derive(Debug)]
pub struct ReloadingResolver {
    current: ArcSwap<CertifiedKey>,
    cert_path: PathBuf,
    key_path: PathBuf,
    last: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ReloadingResolver {
    /// Loads the pair now (an error here stops start-up).
    pub fn load(cert_path: &Path, key_path: &Path, metrics: &Metrics) -> anyhow::Result<Arc<Self>> {
        let cert_pem = std::fs::read(cert_path)
            .with_context(|| format!("cannot read {}", cert_path.display()))?;
        let key_pem = std::fs::read(key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        let ck = certified_key_from_pem(&cert_pem, &key_pem).with_context(|| {
            format!(
                "bad TLS pair {} / {}",
                cert_path.display(),
                key_path.display()
            )
        })?;
        if let Some(t) = expiry_unix(&cert_pem) {
            metrics.certificate_expiry.set(t as f64);
        }
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(ck),
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            last: std::sync::Mutex::new((cert_pem, key_pem)),
        }))
    }

    /// Re-reads the files; swaps in a new pair if they changed and are valid. Returns whether
    /// the pair changed.
    pub fn reload(&self, metrics: &Metrics) -> anyhow::Result<bool> {
        let cert_pem = std::fs::read(&self.cert_path)
            .with_context(|| format!("cannot read {}", self.cert_path.display()))?;
        let key_pem = std::fs::read(&self.key_path)
            .with_context(|| format!("cannot read {}", self.key_path.display()))?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.0 == cert_pem && last.1 == key_pem {
            return Ok(false);
        }
        let ck = certified_key_from_pem(&cert_pem, &key_pem)?;
        self.current.store(Arc::new(ck));
        if let Some(t) = expiry_unix(&cert_pem) {
            metrics.certificate_expiry.set(t as f64);
        }
        *last = (cert_pem, key_pem);
        Ok(true)
    }

    /// Polls the files every `interval` until dropped.
    pub async fn watch(self: Arc<Self>, metrics: Arc<Metrics>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let this = self.clone();
            let m = metrics.clone();
            match tokio::task::spawn_blocking(move || this.reload(&m)).await {
                Ok(Ok(true)) => {
                    tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded")
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(
                    error = format!("{e:#}"),
                    "new serving certificate refused; keeping the current one"
                ),
                Err(e) => tracing::error!(error = %e, "certificate reload task failed"),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A rustls server configuration over the resolver: TLS 1.2+, ALPN h2 and http/1.1.
pub fn server_config(resolver: Arc<ReloadingResolver>) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Refuses a private key file that others can read; warns when its group can.
pub fn check_key_permissions(key_path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(key_path)
        .with_context(|| format!("cannot stat {}", key_path.display()))?
        .permissions()
        .mode();
    if mode & 0o004 != 0 {
        bail!(
            "{} is readable by every user (mode {:o}); run chmod 600 on it",
            key_path.display(),
            mode & 0o777
        );
    }
    if mode & 0o040 != 0 {
        tracing::warn!(key = %key_path.display(), mode = format!("{:o}", mode & 0o777), "private key is readable by its group");
    }
    Ok(())
}

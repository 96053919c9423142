//! Serving TLS: rustls (TLS 1.2 and 1.3, ring), with the certificate behind an `ArcSwap` so a
//! rotated cert.pem/key.pem is picked up by new connections without dropping open ones, and an
//! optional client CA (mutual TLS), also reloaded in place.
//!
//! A change is tried once two polls in a row read the same bytes. A reload applies the start-up
//! checks (the key not readable by every user, both files parse, the key matches the
//! certificate); a refused change keeps the current pair and is reported once per distinct
//! content (see [`crate::files::ReportOnce`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::files::ReportOnce;
use crate::metrics::Metrics;

/// Reads and checks a PEM certificate chain and its private key.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let pair = read_pair(cert_path, key_path).map_err(|(_, e)| e)?;
    check_pair(&pair, cert_path, key_path).map_err(|(_, e)| e)
}

/// Builds a signing pair from PEM text.
pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<CertifiedKey> {
    parse_pair(cert_pem, key_pem).map_err(|(_, e)| e)
}

/// Which file of the pair a problem is in (the `file` label of `file_errors_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Certificate,
    Key,
}

type PairError = (Which, anyhow::Error);

fn parse_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, PairError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            (
                Which::Certificate,
                anyhow::anyhow!("certificate file is not valid PEM: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err((
            Which::Certificate,
            anyhow::anyhow!("certificate file holds no certificate"),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        (
            Which::Key,
            anyhow::anyhow!("key file holds no usable private key: {e}"),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
        (
            Which::Key,
            anyhow::anyhow!("key does not match the certificate: {e}"),
        )
    })
}

/// What was read from disk: both files and the key's mode.
#[derive(Clone, PartialEq, Eq)]
struct PairFiles {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    key_mode: u32,
}

impl PairFiles {
    /// Bytes identifying this state, for once-per-content reporting.
    fn fingerprint(&self) -> Vec<u8> {
        let mut v = self.cert_pem.clone();
        v.push(0);
        v.extend_from_slice(&self.key_pem);
        v.extend_from_slice(&self.key_mode.to_be_bytes());
        v
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<PairFiles, PairError> {
    use std::os::unix::fs::PermissionsExt as _;
    let cert_pem = std::fs::read(cert_path).map_err(|e| {
        (
            Which::Certificate,
            anyhow::anyhow!("cannot read {}: {e}", cert_path.display()),
        )
    })?;
    let read_key = || -> std::io::Result<(Vec<u8>, u32)> {
        let f = std::fs::File::open(key_path)?;
        let mode = f.metadata()?.permissions().mode();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut &f, &mut data)?;
        Ok((data, mode))
    };
    let (key_pem, key_mode) = read_key().map_err(|e| {
        (
            Which::Key,
            anyhow::anyhow!("cannot read {}: {e}", key_path.display()),
        )
    })?;
    Ok(PairFiles {
        cert_pem,
        key_pem,
        key_mode,
    })
}

/// The start-up checks, applied on every reload too.
fn check_pair(
    pair: &PairFiles,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, PairError> {
    key_mode_ok(key_path, pair.key_mode).map_err(|e| (Which::Key, e))?;
    parse_pair(&pair.cert_pem, &pair.key_pem).map_err(|(w, e)| {
        (
            w,
            e.context(format!(
                "bad TLS pair {} / {}",
                cert_path.display(),
                key_path.display()
            )),
        )
    })
}

fn key_mode_ok(key_path: &Path, mode: u32) -> anyhow::Result<()> {
    if mode & 0o004 != 0 {
        bail!(
            "{} is readable by every user (mode {:o}); run chmod 600 on it",
            key_path.display(),
            mode & 0o777
        );
    }
    Ok(())
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
    last: std::sync::Mutex<Vec<u8>>,
    cert_report: ReportOnce,
    key_report: ReportOnce,
}

impl ReloadingResolver {
    /// Loads the pair now, with the start-up checks (an error here stops start-up).
    pub fn load(cert_path: &Path, key_path: &Path, metrics: &Metrics) -> anyhow::Result<Arc<Self>> {
        let pair = read_pair(cert_path, key_path).map_err(|(_, e)| e)?;
        let ck = check_pair(&pair, cert_path, key_path).map_err(|(_, e)| e)?;
        if pair.key_mode & 0o040 != 0 {
            tracing::warn!(key = %key_path.display(), mode = format!("{:o}", pair.key_mode & 0o777), "private key is readable by its group");
        }
        if let Some(t) = expiry_unix(&pair.cert_pem) {
            metrics.certificate_expiry.set(t as f64);
        }
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(ck),
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            last: std::sync::Mutex::new(pair.fingerprint()),
            cert_report: ReportOnce::new("certificate", "current one"),
            key_report: ReportOnce::new("key", "current one"),
        }))
    }

    /// Re-reads the files; swaps in a new pair if they changed and pass the start-up checks.
    /// Returns whether the pair changed. A refusal is logged and counted here, once per
    /// distinct content, and returned as an error.
    pub fn reload(&self, metrics: &Metrics) -> anyhow::Result<bool> {
        let checked = read_pair(&self.cert_path, &self.key_path).and_then(|pair| {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let fingerprint = pair.fingerprint();
            if *last == fingerprint {
                return Ok(None);
            }
            let ck = check_pair(&pair, &self.cert_path, &self.key_path)?;
            *last = fingerprint;
            Ok(Some((ck, pair)))
        });
        match checked {
            Ok(None) => {
                self.cert_report.accepted(&self.cert_path);
                self.key_report.accepted(&self.key_path);
                Ok(false)
            }
            Ok(Some((ck, pair))) => {
                self.current.store(Arc::new(ck));
                if let Some(t) = expiry_unix(&pair.cert_pem) {
                    metrics.certificate_expiry.set(t as f64);
                }
                self.cert_report.accepted(&self.cert_path);
                self.key_report.accepted(&self.key_path);
                if pair.key_mode & 0o040 != 0 {
                    tracing::warn!(key = %self.key_path.display(), mode = format!("{:o}", pair.key_mode & 0o777), "private key is readable by its group");
                }
                Ok(true)
            }
            Err((which, e)) => {
                let (report, path) = match which {
                    Which::Certificate => (&self.cert_report, &self.cert_path),
                    Which::Key => (&self.key_report, &self.key_path),
                };
                // The read error or the files themselves identify the content.
                let identity = read_pair(&self.cert_path, &self.key_path)
                    .map(|p| p.fingerprint())
                    .unwrap_or_else(|(_, err)| err.to_string().into_bytes());
                report.refused(&identity, path, &format!("{e:#}"), Some(metrics));
                Err(e)
            }
        }
    }

    /// Polls the files every `interval` until dropped.
    pub async fn watch(self: Arc<Self>, metrics: Arc<Metrics>, interval: Duration) {
        let path = self.cert_path.clone();
        poll(
            self,
            metrics,
            interval,
            |s| {
                read_pair(&s.cert_path, &s.key_path)
                    .map(|p| p.fingerprint())
                    .unwrap_or_else(|(_, e)| e.to_string().into_bytes())
            },
            Self::reload,
            &path,
            "serving certificate",
        )
        .await
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Builds a verifier that requires a client certificate issued by one of the CAs in `ca_pem`.
pub fn client_verifier_from_pem(ca_pem: &[u8]) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let certs = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("client CA file is not valid PEM")?;
    if certs.is_empty() {
        bail!("client CA file holds no certificate");
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .context("client CA file holds a certificate that cannot be used as a CA")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .context("cannot build the client certificate verifier")
}

/// The client CA of mutual TLS, swapped in place when its file changes. Every connection must
/// present a certificate it issued (with the clientAuth usage); a refused change of the file
/// keeps the current CA.
///
/// It sends no CA names in its certificate request (an empty hint list, which clients read as
/// "any certificate you have"), since the names would have to outlive a reload.
#[derive(Debug)]
pub struct ReloadingClientCa {
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
    path: PathBuf,
    last: std::sync::Mutex<Vec<u8>>,
    report: ReportOnce,
}

impl ReloadingClientCa {
    /// Loads the CA file now (an error here stops start-up).
    pub fn load(path: &Path) -> anyhow::Result<Arc<Self>> {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read client CA {}", path.display()))?;
        let verifier = client_verifier_from_pem(&pem)
            .with_context(|| format!("client CA {}", path.display()))?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(verifier),
            path: path.to_path_buf(),
            last: std::sync::Mutex::new(pem),
            report: ReportOnce::new("client_ca", "current one"),
        }))
    }

    /// The CA file in use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file; swaps in the new CA if it changed and is valid. Returns whether it
    /// changed; a refusal is reported once per content and returned as an error.
    pub fn reload(&self, metrics: &Metrics) -> anyhow::Result<bool> {
        let pem = match std::fs::read(&self.path) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("cannot read client CA {}: {e}", self.path.display());
                self.report
                    .refused(msg.as_bytes(), &self.path, &msg, Some(metrics));
                bail!(msg);
            }
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if *last == pem {
            self.report.accepted(&self.path);
            return Ok(false);
        }
        match client_verifier_from_pem(&pem) {
            Ok(v) => {
                self.current.store(Arc::new(v));
                *last = pem;
                self.report.accepted(&self.path);
                Ok(true)
            }
            Err(e) => {
                self.report
                    .refused(&pem, &self.path, &format!("{e:#}"), Some(metrics));
                Err(e)
            }
        }
    }

    /// Polls the file every `interval` until dropped.
    pub async fn watch(self: Arc<Self>, metrics: Arc<Metrics>, interval: Duration) {
        let path = self.path.clone();
        poll(
            self,
            metrics,
            interval,
            |s| std::fs::read(&s.path).unwrap_or_else(|e| e.to_string().into_bytes()),
            Self::reload,
            &path,
            "client CA",
        )
        .await
    }
}

/// Every `interval`, reads the files' bytes with `peek`; once two polls in a row read the same
/// bytes (so a file caught half-written is not even tried), calls `reload`, off the async
/// threads, and logs each applied change. Refusals are reported by `reload` itself, once per
/// content.
async fn poll<T: Send + Sync + 'static>(
    this: Arc<T>,
    metrics: Arc<Metrics>,
    interval: Duration,
    peek: fn(&T) -> Vec<u8>,
    reload: fn(&T, &Metrics) -> anyhow::Result<bool>,
    path: &Path,
    what: &'static str,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<Vec<u8>> = None;
    loop {
        ticker.tick().await;
        let (t, m, before) = (this.clone(), metrics.clone(), previous.take());
        let step = tokio::task::spawn_blocking(move || {
            let seen = peek(&t);
            let settled = before.as_ref() == Some(&seen);
            let result = settled.then(|| reload(&t, &m));
            (seen, result)
        })
        .await;
        match step {
            Ok((seen, result)) => {
                previous = Some(seen);
                if let Some(Ok(true)) = result {
                    tracing::info!(path = %path.display(), "{what} reloaded");
                }
            }
            Err(e) => tracing::error!(error = %e, "{what} reload task failed"),
        }
    }
}

impl ClientCertVerifier for ReloadingClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}

/// A rustls server configuration over the resolver: TLS 1.2+, ALPN h2 and http/1.1; with a
/// client CA, every client must present a certificate it issued.
pub fn server_config(
    resolver: Arc<ReloadingResolver>,
    client_ca: Option<Arc<ReloadingClientCa>>,
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?;
    let mut config = match client_ca {
        Some(ca) => builder
            .with_client_cert_verifier(ca)
            .with_cert_resolver(resolver),
        None => builder.with_no_client_auth().with_cert_resolver(resolver),
    };
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
    key_mode_ok(key_path, mode)?;
    if mode & 0o040 != 0 {
        tracing::warn!(key = %key_path.display(), mode = format!("{:o}", mode & 0o777), "private key is readable by its group");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn pair(dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = super::super::init::generate("localhost", "127.0.0.1").expect("gen");
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        crate::files::write_atomic(&c, cert.as_bytes(), 0o644).expect("cert");
        crate::files::write_atomic(&k, key.as_bytes(), 0o600).expect("key");
        (c, k)
    }

    fn errors(m: &Metrics, file: &str) -> String {
        let text = m.encode();
        let needle = format!("ack_ram_authenticator_file_errors_total{{file=\"{file}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .unwrap_or("missing")
            .to_string()
    }

    #[test]
    fn reload_applies_startup_checks_and_reports_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = pair(dir.path());
        let m = Metrics::new();
        let r = ReloadingResolver::load(&c, &k, &m).expect("load");
        assert_eq!(errors(&m, "key"), "0");
        assert_eq!(errors(&m, "certificate"), "0");
        assert!(!r.reload(&m).expect("unchanged"));

        // A new key readable by everyone is refused, as at start-up, and counted once.
        let (_, key2) = super::super::init::generate("localhost", "127.0.0.1").expect("gen");
        std::fs::write(&k, key2.as_bytes()).expect("key");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        for _ in 0..3 {
            let err = r.reload(&m).expect_err("world-readable key");
            assert!(
                format!("{err:#}").contains("readable by every user"),
                "{err:#}"
            );
        }
        assert_eq!(errors(&m, "key"), "1");
        // Private again, but it does not match the certificate.
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = r.reload(&m).expect_err("mismatch");
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");
        assert_eq!(errors(&m, "key"), "2");
        // A broken certificate, polled many times, counts once.
        pair(dir.path());
        std::fs::write(&c, "garbage").expect("garbage");
        for _ in 0..5 {
            assert!(r.reload(&m).is_err());
        }
        assert_eq!(errors(&m, "certificate"), "1");
        // A good new pair is applied.
        pair(dir.path());
        assert!(r.reload(&m).expect("good pair"));
    }

    #[test]
    fn client_ca_reload_keeps_old_on_bad_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = super::super::init::ClientCa::generate().expect("ca");
        let path = dir.path().join("client-ca.pem");
        std::fs::write(&path, &ca.cert_pem).expect("write");
        let m = Metrics::new();
        let v = ReloadingClientCa::load(&path).expect("load");
        assert!(v.client_auth_mandatory());
        std::fs::write(&path, "").expect("empty");
        assert!(v.reload(&m).is_err());
        assert!(v.reload(&m).is_err());
        assert_eq!(errors(&m, "client_ca"), "1");
        let other = super::super::init::ClientCa::generate().expect("ca");
        std::fs::write(&path, &other.cert_pem).expect("write");
        assert!(v.reload(&m).expect("new ca"));
        assert!(ReloadingClientCa::load(&dir.path().join("missing")).is_err());
    }
}

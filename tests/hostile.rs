//! The webhook under attack, on loopback, with the real binary: slow bodies, quiet connections,
//! floods of HTTP/2 control frames, paced resets, a reader that never reads, the connection cap
//! and the health listener. For each: while it runs a normal review is answered within 2 s, and
//! afterwards at least 90% of the attacker's connections are closed by the server within 40 s.
//! The server runs with short timeouts (flags) so that the file stays fast; the shapes are those
//! of the attacks, the counts scaled down. Tests run one at a time: they measure latency.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::*;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Short bounds so that each attack ends in seconds.
const FAST: &[&str] = &[
    "--tls-handshake-timeout-ms",
    "1000",
    "--header-timeout-ms",
    "1000",
    "--body-timeout-ms",
    "2000",
    "--write-timeout-ms",
    "2000",
    "--idle-timeout-ms",
    "3000",
    "--http2-keepalive-interval-ms",
    "1000",
    "--http2-keepalive-timeout-ms",
    "1000",
    "--health-timeout-ms",
    "1000",
    "--health-idle-timeout-ms",
    "2000",
];

/// For the floods: a first-request bound long enough that the control budget is what acts.
/// (The raw flooders do not answer PINGs: keep-alive is out of the way too.)
const FLOOD: &[&str] = &[
    "--header-timeout-ms",
    "20000",
    "--idle-timeout-ms",
    "20000",
    "--http2-keepalive-interval-ms",
    "60000",
];

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct Target {
    _dir: tempfile::TempDir,
    _emu: Emulator,
    server: Server,
    https: SocketAddr,
    health: SocketAddr,
    token: String,
}

fn addr_of(url: &str) -> SocketAddr {
    let rest = url
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    rest.split('/')
        .next()
        .expect("host")
        .parse()
        .expect("address")
}

async fn target(extra: &[&str]) -> Target {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(dir.path(), &[]);
    // FAST, less the flags `extra` sets.
    let mut args: Vec<&str> = FAST
        .chunks(2)
        .filter(|pair| !extra.contains(&pair[0]))
        .flatten()
        .copied()
        .collect();
    args.extend_from_slice(extra);
    let server = Server::start(dir.path(), &emu.url, &args);
    let token = v2_token("LTAI5tAlice", "AliceSecret", None, CLUSTER);
    let t = Target {
        https: addr_of(&server.url),
        health: addr_of(&server.health),
        _dir: dir,
        _emu: emu,
        server,
        token,
    };
    // Warm the identity cache: the reviews measured below are cache hits.
    t.review_within(Duration::from_secs(5)).await;
    t
}

impl Target {
    /// A normal review on a fresh connection, answered (allowed) within `limit`.
    async fn review_within(&self, limit: Duration) -> Duration {
        let client = self.server.client();
        let started = Instant::now();
        let v = tokio::time::timeout(
            limit,
            post_review(
                &client,
                &self.server.url,
                "authentication.k8s.io/v1",
                &self.token,
            ),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "a review took more than {limit:?}: {}",
                self.server.proc.stderr()
            )
        });
        assert_eq!(v["status"]["authenticated"], true, "{v}");
        started.elapsed()
    }

    async fn assert_reviews_answered(&self) {
        for _ in 0..3 {
            self.review_within(Duration::from_secs(2)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn tls(&self, alpn: &[u8]) -> TlsStream<TcpStream> {
        tls_to(&self.server, alpn).await
    }

    async fn metrics(&self) -> String {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!("{}/metrics", self.server.health))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Waits (up to 5 s) until the server counts at least `min` connections of `listener`
    /// closed for `reason`.
    async fn assert_closed_for(&self, listener: &str, reason: &str, min: u64) {
        let wanted = format!(
            "ack_ram_authenticator_connections_closed_total{{listener=\"{listener}\",reason=\"{reason}\"}} "
        );
        let started = Instant::now();
        loop {
            let text = self.metrics().await;
            let n: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix(&wanted))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if n >= min {
                // Attacks leave counts, not per-connection warnings.
                let stderr = self.server.proc.stderr();
                assert!(!stderr.contains("WARN"), "{stderr}");
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{n} {listener} connections closed for {reason}, not {min}: {}",
                text.lines()
                    .filter(|l| l.contains("connections_") && !l.starts_with('#'))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn healthz_within(&self, limit: Duration) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let r = tokio::time::timeout(
            limit,
            client.get(format!("{}/healthz", self.server.health)).send(),
        )
        .await
        .expect("/healthz answered in time")
        .expect("/healthz");
        assert_eq!(r.status(), 200);
    }

    fn rss_mb(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.server.proc.child.id()))
                .expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            / 1024
    }
}

/// A TLS connection to `server`'s HTTPS port offering only `alpn`, trusting only its CA.
async fn tls_to(server: &Server, alpn: &[u8]) -> TlsStream<TcpStream> {
    let (ca, _) = read_kubeconfig(&server.kubeconfig);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr_of(&server.url))
        .await
        .expect("connect");
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake")
}

/// Counts the attacker's connections the server has closed.
#[derive(Clone, Default)]
struct Closed(Arc<AtomicUsize>);

impl Closed {
    fn one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
    /// Waits until at least 90% of `total` are closed; panics after 40 s.
    async fn most_of(&self, total: usize) -> Duration {
        let started = Instant::now();
        while self.get() * 10 < total * 9 {
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "only {} of {total} attacker connections closed after 40 s",
                self.get()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started.elapsed()
    }
}

/// Reads until the server closes the stream (EOF or error).
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(mut s: S) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// `n` TLS connections that send `payload` (if any) and then nothing.
/// Opens `n` TCP connections to `addr` that send nothing; counts them as the server closes them.
async fn silent_connections(addr: SocketAddr, n: usize) -> Closed {
    let closed = Closed::default();
    for _ in 0..n {
        let s = TcpStream::connect(addr).await.expect("connect");
        let closed = closed.clone();
        tokio::spawn(async move {
            until_closed(s).await;
            closed.one();
        });
    }
    closed
}

async fn quiet_tls(t: &Target, n: usize, alpn: &[u8], payload: &'static [u8]) -> Closed {
    let closed = Closed::default();
    for _ in 0..n {
        let mut s = t.tls(alpn).await;
        s.write_all(payload).await.expect("write");
        let closed = closed.clone();
        tokio::spawn(async move {
            until_closed(s).await;
            closed.one();
        });
    }
    closed
}

/// An HTTP/2 client connection (h2 crate) whose end is counted in `closed`.
async fn h2_client(
    t: &Target,
    builder: &h2::client::Builder,
    closed: &Closed,
) -> h2::client::SendRequest<Bytes> {
    let tls = t.tls(b"h2").await;
    let (client, connection) = builder.handshake(tls).await.expect("h2 handshake");
    let closed = closed.clone();
    tokio::spawn(async move {
        let _ = connection.await;
        closed.one();
    });
    client
}

fn review_request(t: &Target, length: usize) -> axum::http::Request<()> {
    axum::http::Request::post(t.server.url.clone())
        .header("content-type", "application/json")
        .header("content-length", length.to_string())
        .body(())
        .expect("request")
}

fn review_body(t: &Target) -> Bytes {
    Bytes::from(
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": t.token}})
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_slow_bodies_do_not_block_reviews() {
    let _serial = SERIAL.lock().await;
    let t = target(&[]).await;
    let closed = Closed::default();
    let mut held = Vec::new();
    for _ in 0..5 {
        let client = h2_client(&t, &h2::client::Builder::new(), &closed).await;
        for _ in 0..256 {
            let mut c = client.clone().ready().await.expect("stream slot");
            let (response, mut body) = c
                .send_request(review_request(&t, 200), false)
                .expect("send");
            body.send_data(Bytes::from_static(b"{"), false)
                .expect("one byte");
            held.push((response, body));
        }
    }
    // 1,280 streams hold one byte of their body each: more than the review permits (1,024).
    t.assert_reviews_answered().await;
    let took = closed.most_of(5).await;
    t.assert_closed_for("https", "slow", 1).await;
    eprintln!("slow HTTP/2 bodies closed after {took:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_slow_bodies_do_not_block_reviews() {
    let _serial = SERIAL.lock().await;
    let t = target(&[]).await;
    let head = b"POST /authenticate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{";
    let closed = quiet_tls(&t, 300, b"http/1.1", head).await;
    t.assert_reviews_answered().await;
    closed.most_of(300).await;
    t.assert_closed_for("https", "slow", 270).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_at_the_handshake_deadline() {
    let _serial = SERIAL.lock().await;
    let t = target(&[]).await;
    let closed = silent_connections(t.https, 300).await;
    t.assert_reviews_answered().await;
    closed.most_of(300).await;
    t.assert_closed_for("https", "handshake_timeout", 270).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_connections_are_closed() {
    let _serial = SERIAL.lock().await;
    let t = target(&[]).await;
    let closed = quiet_tls(&t, 300, b"http/1.1", b"").await;
    t.assert_reviews_answered().await;
    closed.most_of(300).await;
    t.assert_closed_for("https", "header_timeout", 270).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_http2_prefaces_are_closed() {
    let _serial = SERIAL.lock().await;
    let t = target(&[]).await;
    let closed = quiet_tls(&t, 300, b"h2", &PREFACE[..23]).await;
    t.assert_reviews_answered().await;
    closed.most_of(300).await;
    t.assert_closed_for("https", "header_timeout", 270).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http1_headers_are_closed() {
    let _serial = SERIAL.lock().await;
    let t = target(&[]).await;
    let closed = Closed::default();
    for _ in 0..50 {
        let mut s = t.tls(b"http/1.1").await;
        let closed = closed.clone();
        tokio::spawn(async move {
            // One request served first, so only the header bound applies to the second.
            let ok = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
            if s.write_all(ok).await.is_ok() {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n").await;
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if s.write_all(b"X").await.is_err() {
                        break;
                    }
                    if let Ok(Ok(0) | Err(_)) =
                        tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await
                    {
                        break;
                    }
                }
            }
            closed.one();
        });
    }
    t.assert_reviews_answered().await;
    closed.most_of(50).await;
    t.assert_closed_for("https", "header_timeout", 45).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_that_only_ping_are_closed_when_idle() {
    let _serial = SERIAL.lock().await;
    let t = target(&[]).await;
    let closed = Closed::default();
    for _ in 0..20 {
        let tls = t.tls(b"h2").await;
        let (client, mut connection) = h2::client::handshake(tls).await.expect("h2");
        let mut ping_pong = connection.ping_pong().expect("ping pong");
        let closed_c = closed.clone();
        tokio::spawn(async move {
            let _ = connection.await;
            closed_c.one();
        });
        // One request, then PINGs only.
        let mut c = client.ready().await.expect("ready");
        let req = axum::http::Request::get(t.server.url.replace("/authenticate", "/healthz"))
            .body(())
            .expect("req");
        let (response, _) = c.send_request(req, true).expect("send");
        assert_eq!(response.await.expect("response").status(), 200);
        tokio::spawn(async move {
            let _keep = c;
            while ping_pong.ping(h2::Ping::opaque()).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
    }
    t.assert_reviews_answered().await;
    closed.most_of(20).await;
    t.assert_closed_for("https", "idle", 18).await;
}

/// Writes `frame` over and over on `n` HTTP/2 connections until the server closes them.
async fn flood(t: &Target, n: usize, frame: &'static [u8]) -> Closed {
    let closed = Closed::default();
    let batch: Arc<Vec<u8>> = Arc::new(frame.repeat(1000));
    for _ in 0..n {
        let s = t.tls(b"h2").await;
        let (mut rd, mut wr) = tokio::io::split(s);
        let batch = batch.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            let reader = tokio::spawn(async move { until_closed(&mut rd).await });
            // Preface and an empty SETTINGS frame.
            let mut start = PREFACE.to_vec();
            start.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
            let _ = wr.write_all(&start).await;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) && !reader.is_finished() {
                if wr.write_all(&batch).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let _ = reader.await;
            closed.one();
        });
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_is_cut_off() {
    let _serial = SERIAL.lock().await;
    let t = target(FLOOD).await;
    const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    let closed = flood(&t, 4, SETTINGS).await;
    t.assert_reviews_answered().await;
    let took = closed.most_of(4).await;
    eprintln!("closed after {took:?}");
    t.assert_closed_for("https", "control_frames", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_update_flood_is_cut_off() {
    let _serial = SERIAL.lock().await;
    let t = target(FLOOD).await;
    const WINDOW_UPDATE: &[u8] = &[0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let closed = flood(&t, 4, WINDOW_UPDATE).await;
    t.assert_reviews_answered().await;
    let took = closed.most_of(4).await;
    eprintln!("closed after {took:?}");
    t.assert_closed_for("https", "control_frames", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_resets_are_cut_off() {
    let _serial = SERIAL.lock().await;
    let t = target(FLOOD).await;
    let closed = Closed::default();
    for _ in 0..4 {
        let client = h2_client(&t, &h2::client::Builder::new(), &closed).await;
        let req = review_request(&t, 200);
        tokio::spawn(async move {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                let mut c = match client.clone().ready().await {
                    Ok(c) => c,
                    Err(_) => break,
                };
                let mut body = match c.send_request(req.clone(), false) {
                    Ok((_, b)) => b,
                    Err(_) => break,
                };
                tokio::time::sleep(Duration::from_millis(1)).await;
                body.send_reset(h2::Reason::CANCEL);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }
    t.assert_reviews_answered().await;
    let took = closed.most_of(4).await;
    eprintln!("closed after {took:?}");
    t.assert_closed_for("https", "control_frames", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_stop_reading_are_dropped() {
    let _serial = SERIAL.lock().await;
    let t = target(&[]).await;
    let closed = Closed::default();
    let mut held = Vec::new();
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    for _ in 0..4 {
        let client = h2_client(&t, &builder, &closed).await;
        for _ in 0..64 {
            let mut c = client.clone().ready().await.expect("slot");
            let body = review_body(&t);
            let (response, mut stream) = c
                .send_request(review_request(&t, body.len()), false)
                .expect("send");
            stream.send_data(body, true).expect("body");
            held.push(response);
        }
    }
    t.assert_reviews_answered().await;
    let took = closed.most_of(4).await;
    eprintln!("closed after {took:?}");
    t.assert_closed_for("https", "write_timeout", 4).await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_connection_cap_still_serves_a_new_client() {
    let _serial = SERIAL.lock().await;
    let t = target(&[
        "--max-connections",
        "100",
        "--header-timeout-ms",
        "5000",
        "--idle-timeout-ms",
        "5000",
    ])
    .await;
    let closed = quiet_tls(&t, 150, b"http/1.1", b"").await;
    t.assert_reviews_answered().await;
    closed.most_of(150).await;
    t.assert_closed_for("https", "shed", 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_header_flood_stays_small() {
    let _serial = SERIAL.lock().await;
    let t = target(&[]).await;
    let closed = Closed::default();
    let filler: Arc<Vec<u8>> = Arc::new(vec![b'a'; 16 * 1024]);
    let mut peak = t.rss_mb();
    for _ in 0..300 {
        let mut s = TcpStream::connect(t.health).await.expect("connect");
        let filler = filler.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            let _ = s
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: ")
                .await;
            // 400 KiB of one unfinished header.
            for _ in 0..25 {
                if s.write_all(&filler).await.is_err() {
                    break;
                }
            }
            until_closed(s).await;
            closed.one();
        });
        peak = peak.max(t.rss_mb());
    }
    t.healthz_within(Duration::from_secs(2)).await;
    t.assert_reviews_answered().await;
    peak = peak.max(t.rss_mb());
    closed.most_of(300).await;
    assert!(peak < 200, "RSS reached {peak} MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_idle_flood_is_bounded() {
    let _serial = SERIAL.lock().await;
    let t = target(&[]).await;
    let closed = silent_connections(t.health, 300).await;
    t.healthz_within(Duration::from_secs(2)).await;
    t.assert_reviews_answered().await;
    closed.most_of(300).await;
    t.assert_closed_for("health", "shed", 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_stops_exit_zero_quickly_even_with_a_slow_body_open() {
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(dir.path(), &[]);
    for round in 0..20 {
        let server = Server::start(dir.path(), &emu.url, &[]);
        // Every other round, a connection is sending a request body very slowly (HTTP/1.1 or
        // HTTP/2).
        let mut held_h1 = None;
        let mut held_h2 = None;
        if round % 4 == 1 {
            let mut s = tls_to(&server, b"http/1.1").await;
            s.write_all(b"POST /authenticate HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n{")
                .await
                .expect("write");
            held_h1 = Some(s);
        } else if round % 4 == 3 {
            let (client, connection) = h2::client::handshake(tls_to(&server, b"h2").await)
                .await
                .expect("h2");
            tokio::spawn(connection);
            let mut c = client.ready().await.expect("ready");
            let req = axum::http::Request::post(server.url.clone())
                .header("content-length", "200")
                .body(())
                .expect("request");
            let (response, mut body) = c.send_request(req, false).expect("send");
            body.send_data(Bytes::from_static(b"{"), false)
                .expect("data");
            held_h2 = Some((c, response, body));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop_within(server, Duration::from_secs(5), round).await;
        drop((held_h1, held_h2));
    }
}

async fn stop_within(mut server: Server, limit: Duration, round: usize) {
    server.proc.signal("TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = server.proc.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < limit,
            "round {round}: no exit within {limit:?}: {}",
            server.proc.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stderr = server.proc.stderr();
    assert_eq!(status.code(), Some(0), "round {round}: {stderr}");
    assert!(!stderr.contains("unexpectedly"), "round {round}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_reviews_are_answered_whatever_their_token() {
    let _serial = SERIAL.lock().await;
    let t = target(&[]).await;
    let client = t.server.client();
    for (token, reason) in [
        (String::new(), "no token"),
        (
            "k8s-ack-v2.".to_string() + &"A".repeat(600 * 1024),
            "bytes long",
        ),
    ] {
        let v = post_review(&client, &t.server.url, "authentication.k8s.io/v1", &token).await;
        assert_eq!(v["status"]["authenticated"], false, "{v}");
        let error = v["status"]["error"].as_str().expect("error");
        assert!(error.contains(reason), "{error}");
    }
    let missing = client
        .post(&t.server.url)
        .json(&serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}}))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 200);
    let huge = client
        .post(&t.server.url)
        .body(vec![b' '; 1024 * 1024 + 1])
        .send()
        .await
        .expect("send");
    assert_eq!(huge.status(), 413);
}

#[test]
fn numeric_flags_out_of_range_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for flag in [
        "--max-connections",
        "--max-concurrent-reviews",
        "--sts-max-concurrent",
        "--idle-timeout-ms",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ram-authenticator"))
            .args(["server", "--cluster-id", "c1", "--state-dir"])
            .arg(dir.path().join("state"))
            .args([flag, "18446744073709551615", "--port", "0"])
            .args([
                "--health-address",
                "127.0.0.1:0",
                "--kubeconfig-pregenerated",
            ])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("out of range"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "clusterID: c1\nserver:\n  maxConnections: 0\n").expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ram-authenticator"))
        .args(["server", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args([
            "--port",
            "0",
            "--health-address",
            "127.0.0.1:0",
            "--kubeconfig-pregenerated",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("server.maxConnections"), "{stderr}");
}

/// A TLS ClientHello whose SNI is an IP address (as Go clients send when the URL holds one).
fn client_hello_with_ip_sni() -> Vec<u8> {
    let name = b"127.0.0.1";
    let mut sni = vec![0u8];
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut list = (sni.len() as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&sni);
    let mut extensions = vec![0, 0];
    extensions.extend_from_slice(&(list.len() as u16).to_be_bytes());
    extensions.extend_from_slice(&list);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0xc0, 0x2b, 1, 0]);
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);
    let mut handshake = vec![1, 0];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_address_sni_is_not_logged_per_connection() {
    let _serial = SERIAL.lock().await;
    let t = target(&[]).await;
    for _ in 0..5 {
        let mut s = TcpStream::connect(t.https).await.expect("connect");
        s.write_all(&client_hello_with_ip_sni())
            .await
            .expect("hello");
        until_closed(s).await;
    }
    t.assert_closed_for("https", "tls_error", 5).await;
    let stderr = t.server.proc.stderr();
    assert!(!stderr.contains("WARN"), "{stderr}");
    assert!(!stderr.contains("SNI"), "{stderr}");
}

#[test]
fn every_connection_bound_is_documented_and_a_flag() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let security = readme
        .split("## Security")
        .nth(1)
        .expect("a Security section");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_ram-authenticator"))
        .args(["server", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    for r in ram_authenticator::server::limits::RANGES {
        let row = format!(
            "| `--{}` | `{}` | {} | {}-{} |",
            r.flag, r.key, r.default, r.min, r.max
        );
        assert!(
            security.contains(&row),
            "README Security lacks the row {row}"
        );
        let entry = help
            .split(&format!("--{} ", r.flag))
            .nth(1)
            .and_then(|rest| rest.split("\n      -").next())
            .unwrap_or_else(|| panic!("--{} is not in server --help", r.flag));
        let range = format!("({}-{}) [default: {}]", r.min, r.max, r.default);
        assert!(entry.contains(&range), "--{}: {entry}", r.flag);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_stalled_bodies_are_shed_at_the_body_buffer() {
    let _serial = SERIAL.lock().await;
    let t = target(&[
        "--max-body-buffer-bytes",
        "1048576",
        "--body-timeout-ms",
        "20000",
    ])
    .await;
    let closed = Closed::default();
    let chunk: Arc<Vec<u8>> = Arc::new(vec![b' '; 100 * 1024]);
    for _ in 0..4 {
        let mut s = t.tls(b"http/1.1").await;
        let chunk = chunk.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            let head = b"POST /authenticate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
            let _ = s.write_all(head).await;
            // 600 KiB of the body, then nothing.
            for _ in 0..6 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            until_closed(s).await;
            closed.one();
        });
    }
    t.assert_reviews_answered().await;
    // Four times 600 KiB do not fit 1 MiB: at least two are shed long before their deadline.
    let started = Instant::now();
    while closed.get() < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "nothing shed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.assert_closed_for("https", "shed", 2).await;
    t.assert_reviews_answered().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_sheds_instead_of_refusing() {
    let _serial = SERIAL.lock().await;
    // Connections stay quiet long enough that only shedding can free a descriptor.
    let t = target(&["--header-timeout-ms", "30000", "--idle-timeout-ms", "30000"]).await;
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", t.server.proc.child.id()))
        .arg("--nofile=150:150")
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success());
    let closed = tokio::time::timeout(
        Duration::from_secs(20),
        quiet_tls(&t, 200, b"http/1.1", b""),
    )
    .await
    .expect("200 connections accepted, older ones shed");
    t.assert_reviews_answered().await;
    t.assert_closed_for("https", "shed", 50).await;
    assert!(closed.get() >= 50, "{} closed", closed.get());
}

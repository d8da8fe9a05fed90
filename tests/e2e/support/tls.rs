//! TLS for the end-to-end suite: a throwaway PKI made with rcgen ([`TestCa`], [`Leaf`]), an HTTPS
//! client over a blocking socket ([`TlsConn`]), and an HTTPS origin ([`TlsFront`]) that
//! terminates TLS and forwards the plaintext to a scripted [`Origin`](super::origin::Origin).
//!
//! Why a front and not a second origin: every misbehaviour the plain origin can script (slow,
//! chunked, truncated, 5xx) then exists over TLS too, and its request log still says what the
//! node asked. The front is a byte pump: one TLS connection in, one plain connection out, opened
//! only once the handshake has succeeded, so a node that refused the origin's certificate leaves
//! no trace in the origin's log.
//!
//! The client is [`super::client::Conn`] over a rustls stream ([`TlsStream`]): the same strict
//! parser (a connection that ends before the announced end of a body is
//! [`ClientError::IncompleteBody`], never a short body) and the same [`Response`], so the
//! shared assertions (`assert_s3_error`, `source_of`) work on HTTPS answers.
//!
//! Every socket has read and write timeouts, and the front's threads poll a stop flag, so a
//! broken node fails a test instead of hanging it. The crypto provider is always named
//! explicitly (`ring`), like the node does, so no process-wide default is needed.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, ProtocolVersion, RootCertStore, ServerConfig, ServerConnection, StreamOwned,
    SupportedProtocolVersion,
};

use super::client::{ClientError, Conn, Response, Stream, DEFAULT_READ_TIMEOUT};
use super::STORED_SOURCES;

/// How long a front's pump waits in `poll(2)` before looking at the stop flag again.
const PUMP_POLL_MS: i32 = 50;

/// A front connection with no traffic either way for this long is closed (leaked pooled
/// connections of a node that is gone must not keep threads forever).
const PUMP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority that exists for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A server certificate (leaf only, signed by a [`TestCa`]) and its private key.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
}

impl TestCa {
    /// A fresh self-signed CA named `common_name` (ECDSA P-256, rcgen's default key).
    pub fn new(common_name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, common_name);
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa { cert, key }
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A server certificate for `names` (DNS names, or IP addresses such as `127.0.0.1`, which
    /// rcgen turns into IP SANs), signed by this CA. The first name is also the common name.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("generate leaf key");
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_pkcs8: key.serialize_der(),
        }
    }
}

impl Leaf {
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }
}

/// The `[tls]` section for `with_extra_toml`: the listener on `127.0.0.1:0` and one
/// `[[tls.certs]]` per `(cert, key)` path, in order (the first is the default certificate).
pub fn tls_section(certs: &[(&str, &str)]) -> String {
    let mut out = String::from("[tls]\nlisten = \"127.0.0.1:0\"\n");
    for (cert, key) in certs {
        out.push_str(&format!("[[tls.certs]]\ncert = {cert:?}\nkey = {key:?}\n"));
    }
    out
}

/// How a [`TlsConn`] checks the server and what it offers.
#[derive(Clone)]
pub struct ClientOptions {
    /// `None`: accept any certificate (for tests that only inspect which one was sent).
    trusted_ca: Option<CertificateDer<'static>>,
    versions: Vec<&'static SupportedProtocolVersion>,
    alpn: Vec<Vec<u8>>,
    send_sni: bool,
}

impl ClientOptions {
    /// Verifies the server against `ca` only (no public roots); TLS 1.2 and 1.3; ALPN
    /// `http/1.1`; SNI sent (rustls never sends it for an IP address, RFC 6066 §3).
    pub fn trusting(ca: &TestCa) -> ClientOptions {
        ClientOptions::with_trust(Some(ca.cert_der()))
    }

    /// Accepts any certificate (signatures are still checked): for looking at which
    /// certificate a server picks for a name it is not valid for.
    pub fn accepting_any_certificate() -> ClientOptions {
        ClientOptions::with_trust(None)
    }

    fn with_trust(trusted_ca: Option<CertificateDer<'static>>) -> ClientOptions {
        ClientOptions {
            trusted_ca,
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            alpn: vec![b"http/1.1".to_vec()],
            send_sni: true,
        }
    }

    /// Offers only these protocol versions.
    pub fn with_versions(mut self, versions: &[&'static SupportedProtocolVersion]) -> ClientOptions {
        self.versions = versions.to_vec();
        self
    }

    /// Offers these ALPN protocols, in preference order.
    pub fn with_alpn(mut self, protocols: &[&str]) -> ClientOptions {
        self.alpn = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    /// Sends no SNI extension whatever the server name.
    pub fn without_sni(mut self) -> ClientOptions {
        self.send_sni = false;
        self
    }

    fn config(&self) -> Arc<ClientConfig> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions)
            .expect("client protocol versions");
        let mut config = match &self.trusted_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.clone()).expect("trust the test CA");
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(edgemirror_node::tls::NoVerification::new(provider)))
                .with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        config.enable_sni = self.send_sni;
        Arc::new(config)
    }
}

/// The byte stream under a [`TlsConn`]: a rustls client session over a blocking socket.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

impl Stream for TlsStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }

    /// Sends close_notify, then half-closes the socket.
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        self.sock.shutdown(Shutdown::Write)
    }
}

/// One HTTPS client connection, handshake completed: a [`Conn`] over a [`TlsStream`] (same
/// strict parser, same [`Response`]), plus what the handshake negotiated.
pub struct TlsConn {
    conn: Conn<TlsStream>,
}

impl TlsConn {
    /// Connects to `addr` and completes the handshake for `server_name` (a DNS name or an IP
    /// address). A handshake failure (bad certificate, no common version) is `ClientError::Io`.
    pub fn connect(addr: SocketAddr, server_name: &str, options: &ClientOptions) -> Result<TlsConn, ClientError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| ClientError::Malformed(format!("server name {server_name:?}: {e}")))?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(ClientError::Io)?;
        tcp.set_read_timeout(Some(DEFAULT_READ_TIMEOUT)).map_err(ClientError::Io)?;
        tcp.set_write_timeout(Some(Duration::from_secs(10))).map_err(ClientError::Io)?;
        tcp.set_nodelay(true).map_err(ClientError::Io)?;
        let conn = ClientConnection::new(options.config(), name).map_err(|e| ClientError::Io(io::Error::other(e)))?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).map_err(ClientError::Io)?;
        }
        Ok(TlsConn { conn: Conn::over(stream) })
    }

    /// The certificate the server presented (the leaf).
    pub fn peer_leaf(&self) -> CertificateDer<'static> {
        self.session()
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("a completed handshake has a peer certificate")
            .clone()
    }

    /// The ALPN protocol the server selected, if any.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.session().alpn_protocol().map(<[u8]>::to_vec)
    }

    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.session().protocol_version()
    }

    fn session(&self) -> &ClientConnection {
        &self.conn.stream().conn
    }

    /// The HTTP connection inside, for everything beyond the shortcuts below (incremental
    /// bodies, pipelining, half-closing).
    pub fn http(&mut self) -> &mut Conn<TlsStream> {
        &mut self.conn
    }

    /// Writes raw bytes (one or several requests) as application data.
    pub fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.conn.send(raw)
    }

    /// Sends one raw request and reads its response (a `HEAD ` request has no body).
    pub fn request(&mut self, raw: &[u8]) -> Result<Response, ClientError> {
        self.conn.request(raw)
    }

    /// Reads the next response; `for_head_request` means no body whatever the headers say.
    pub fn read_response(&mut self, for_head_request: bool) -> Result<Response, ClientError> {
        if for_head_request {
            self.conn.read_head_response()
        } else {
            self.conn.read_response()
        }
    }

    /// Waits up to `timeout` for the server to end the connection (close_notify, FIN or reset).
    pub fn peer_closed_within(&mut self, timeout: Duration) -> bool {
        self.conn.peer_closed_within(timeout)
    }
}

/// One GET over a fresh HTTPS connection to `addr`, verified as `server_name`.
pub fn https_get(
    addr: SocketAddr,
    server_name: &str,
    options: &ClientOptions,
    path: &str,
) -> Result<Response, ClientError> {
    let mut conn = TlsConn::connect(addr, server_name, options)?;
    conn.request(&super::client::request_bytes("GET", addr, path, &[]))
}

/// The HTTPS twin of [`super::get_stored`]: GETs `path` over fresh HTTPS connections until the
/// answer comes from the store or a cache tier, checking each answer is a 200 with `body`.
pub fn https_get_stored(
    addr: SocketAddr,
    server_name: &str,
    options: &ClientOptions,
    path: &str,
    body: &[u8],
) -> Response {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = https_get(addr, server_name, options, path).unwrap_or_else(|e| panic!("HTTPS GET {path}: {e:?}"));
        assert_eq!(resp.status, 200, "HTTPS GET {path}: {resp:?}");
        assert!(resp.body == body, "HTTPS GET {path}: body differs from the origin's ({resp:?})");
        let source = super::source_of(&resp).to_string();
        if STORED_SOURCES.contains(&source.as_str()) {
            return resp;
        }
        assert!(Instant::now() < deadline, "HTTPS GET {path}: source stayed {source:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTPS origin: terminates TLS with one certificate and forwards each connection's plaintext
/// to `backend` (a plain [`Origin`](super::origin::Origin)) over its own connection. Dropping it
/// stops it.
pub struct TlsFront {
    addr: SocketAddr,
    shared: Arc<FrontShared>,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
}

struct FrontShared {
    config: Arc<ServerConfig>,
    backend: SocketAddr,
    stopped: AtomicBool,
    handshakes_done: AtomicU64,
    /// Why handshakes failed, as rustls saw it (e.g. the node's alert after rejecting our
    /// certificate); shown when a test fails.
    handshake_errors: Mutex<Vec<String>>,
}

impl TlsFront {
    /// Binds `127.0.0.1:0` and serves `leaf` to every client (TLS 1.2 and 1.3, ALPN
    /// `http/1.1`), forwarding to `backend`.
    pub fn start(backend: SocketAddr, leaf: &Leaf) -> TlsFront {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("front protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert_der.clone()], leaf.private_key())
            .expect("front certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = TcpListener::bind("127.0.0.1:0").expect("front: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("front: local_addr");
        let shared = Arc::new(FrontShared {
            config: Arc::new(config),
            backend,
            stopped: AtomicBool::new(false),
            handshakes_done: AtomicU64::new(0),
            handshake_errors: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("tls-front-{}", addr.port()))
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let conn_shared = Arc::clone(&accept_shared);
                    let _ = thread::Builder::new().name("tls-front-conn".into()).spawn(move || {
                        // An I/O error means one side went away; nothing to report.
                        let _ = pump(stream, &conn_shared);
                    });
                }
            })
            .expect("front: spawn accept thread");
        TlsFront { addr, shared, accept_thread: Mutex::new(Some(accept_thread)) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`, no trailing slash (the leaf must carry the IP SAN 127.0.0.1).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// How many TLS handshakes completed.
    pub fn handshakes_done(&self) -> u64 {
        self.shared.handshakes_done.load(Ordering::SeqCst)
    }

    /// Failed handshakes, as rustls described them.
    pub fn handshake_errors(&self) -> Vec<String> {
        self.shared.handshake_errors.lock().unwrap().clone()
    }

    /// Refuses new connections; open ones end within one poll interval (idempotent).
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        if let Some(handle) = self.accept_thread.lock().unwrap().take() {
            // Wake the blocking accept() so it sees the flag (same trick as the plain origin).
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = handle.join();
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits up to `timeout_ms` for any of `fds` to have something to read (data, EOF or an
/// error); [`is_ready`] then says which. A negative fd is ignored by poll(2).
fn poll_readable(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<()> {
    for fd in fds.iter_mut() {
        fd.revents = 0;
    }
    let nfds = libc::nfds_t::try_from(fds.len()).expect("a few fds");
    // SAFETY: `fds` is a valid, exclusively borrowed slice of `pollfd` of length `nfds`; poll(2)
    // only writes the `revents` fields within it.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

fn is_ready(fd: &libc::pollfd) -> bool {
    fd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}

/// Serves one front connection: TLS handshake with the client, then plaintext both ways
/// between the TLS session and a fresh plain connection to the backend. Both sockets stay
/// blocking (with timeouts); `poll(2)` says which one to read so neither read blocks.
fn pump(mut tcp: TcpStream, shared: &FrontShared) -> io::Result<()> {
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_nodelay(true)?;
    let mut tls = ServerConnection::new(Arc::clone(&shared.config)).map_err(io::Error::other)?;
    let mut plain: Option<TcpStream> = None;
    let mut buf = vec![0u8; 32 * 1024];
    let mut last_traffic = Instant::now();
    loop {
        while tls.wants_write() {
            tls.write_tls(&mut tcp)?;
        }
        if shared.stopped.load(Ordering::SeqCst) || last_traffic.elapsed() > PUMP_IDLE_TIMEOUT {
            return Ok(());
        }
        let mut fds = [
            libc::pollfd { fd: tcp.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: plain.as_ref().map_or(-1, AsRawFd::as_raw_fd), events: libc::POLLIN, revents: 0 },
        ];
        poll_readable(&mut fds, PUMP_POLL_MS)?;

        if is_ready(&fds[0]) {
            last_traffic = Instant::now();
            if tls.read_tls(&mut tcp)? == 0 {
                // The client went away; the backend connection closes with us.
                return Ok(());
            }
            let was_handshaking = tls.is_handshaking();
            if let Err(e) = tls.process_new_packets() {
                // Send our alert, if any, before giving up.
                let _ = tls.write_tls(&mut tcp);
                shared.handshake_errors.lock().unwrap().push(e.to_string());
                return Err(io::Error::other(e));
            }
            if was_handshaking && !tls.is_handshaking() {
                shared.handshakes_done.fetch_add(1, Ordering::SeqCst);
            }
            if plain.is_none() && !tls.is_handshaking() {
                let backend = TcpStream::connect_timeout(&shared.backend, Duration::from_secs(5))?;
                backend.set_write_timeout(Some(Duration::from_secs(10)))?;
                backend.set_nodelay(true)?;
                plain = Some(backend);
            }
            loop {
                match tls.reader().read(&mut buf) {
                    // close_notify: no more requests; let the backend see EOF too.
                    Ok(0) => {
                        if let Some(p) = &plain {
                            let _ = p.shutdown(std::net::Shutdown::Write);
                        }
                        break;
                    }
                    Ok(n) => {
                        let p = plain.as_mut().expect("plaintext only flows after the handshake");
                        p.write_all(&buf[..n])?;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }

        if let Some(p) = plain.as_mut() {
            if is_ready(&fds[1]) {
                last_traffic = Instant::now();
                let n = match p.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    // A reset from the backend is a cut, like a FIN: end the TLS session.
                    Err(_) => 0,
                };
                if n == 0 {
                    // The backend closed (close-delimited body, a cut, or it stopped): close
                    // the TLS session cleanly after what it sent.
                    tls.send_close_notify();
                    while tls.wants_write() {
                        tls.write_tls(&mut tcp)?;
                    }
                    let _ = tcp.shutdown(std::net::Shutdown::Write);
                    return Ok(());
                }
                tls.writer().write_all(&buf[..n])?;
            }
        }
    }
}

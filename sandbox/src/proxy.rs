//! An HTTP-aware fault-injection proxy in front of one loopback endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

use crate::error::{Result, SandboxError};
use crate::http::error_chain;
use crate::sqs_proxy::SqsFaults;
use crate::util::{bind_reuse, loopback_addr, BackgroundRuntime, LOOPBACK};

/// The body of the throttling answer, exactly as DynamoDB sends it.
pub const THROTTLE_BODY: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"Rate exceeded"}"#;

/// What the proxy does with traffic. Switch at any time with [`FaultProxy::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum FaultMode {
    /// Forward everything.
    #[default]
    Pass,
    /// Close new connections at once (with a reset) and drop every open one.
    Refuse,
    /// Accept connections and requests but never answer. Requests held this way are cut (their
    /// connection closed) when the mode changes.
    Blackhole,
    /// Forward, waiting this long before sending each request upstream and again before
    /// returning each response (the round trip grows by twice the delay).
    Delay(Duration),
    /// Answer that fraction (0.0–1.0) of requests with DynamoDB's HTTP 400
    /// `ProvisionedThroughputExceededException` ([`THROTTLE_BODY`]) without forwarding them;
    /// forward the rest.
    Throttle {
        /// Fraction of requests throttled.
        fraction: f64,
    },
    /// SQS's own faults, in front of moto: per-entry batch failures, invalid receipt handles,
    /// SQS throttling, slow answers ([`SqsFaults`]).
    Sqs(SqsFaults),
}

/// Request and connection counts of a [`FaultProxy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Requests forwarded upstream (whatever the upstream answered).
    pub forwarded: u64,
    /// Requests answered with a throttling error.
    pub throttled: u64,
    /// Requests held without an answer in `Blackhole` mode.
    pub blackholed: u64,
    /// Connections closed because of `Refuse` mode (new ones refused plus open ones dropped).
    pub refused: u64,
    /// Requests that could not be forwarded because the upstream failed (connection closed
    /// without an answer, as a network failure would).
    pub upstream_failures: u64,
    /// Entries of SQS batch requests answered as failed without reaching SQS.
    pub failed_entries: u64,
    /// Requests held back by [`SqsFaults::slow`].
    pub held: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub forwarded: AtomicU64,
    pub throttled: AtomicU64,
    blackholed: AtomicU64,
    refused: AtomicU64,
    upstream_failures: AtomicU64,
    pub failed_entries: AtomicU64,
    pub held: AtomicU64,
}

pub(crate) struct Shared {
    mode: watch::Sender<FaultMode>,
    pub counters: Counters,
    upstream: SocketAddr,
}

/// The proxy's HTTP client to the upstream.
pub(crate) type Upstream = Client<HttpConnector, Full<Bytes>>;

/// A response the proxy sends back.
pub(crate) type Answer = hyper::Response<Full<Bytes>>;

/// A tokio HTTP/1.1 proxy on `127.0.0.1:<free port>` in front of an upstream loopback endpoint,
/// with runtime-switchable [`FaultMode`]s. Runs on its own thread and runtime; dropping it closes
/// the listener and every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: BackgroundRuntime,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("mode", &self.mode())
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy in [`FaultMode::Pass`] in front of `upstream` (an `http://127.0.0.1:PORT`
    /// endpoint; anything but loopback is refused).
    pub fn start(upstream: &str) -> Result<Self> {
        let upstream = loopback_addr(upstream)?;
        let (mode, _) = watch::channel(FaultMode::Pass);
        let shared = Arc::new(Shared {
            mode,
            counters: Counters::default(),
            upstream,
        });
        let for_loop = shared.clone();
        let (runtime, addr) = BackgroundRuntime::start("fault-proxy", move || {
            let addr = SocketAddr::from((LOOPBACK, 0));
            let listener =
                bind_reuse(addr).map_err(|e| SandboxError::io(format!("binding {addr}"), e))?;
            let bound = listener
                .local_addr()
                .map_err(|e| SandboxError::io("reading the bound address", e))?;
            Ok((bound, accept_loop(listener, for_loop)))
        })?;
        tracing::info!(%addr, %upstream, "fault proxy started");
        Ok(FaultProxy {
            addr,
            shared,
            runtime,
        })
    }

    /// `http://127.0.0.1:PORT` of the proxy: point clients here.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream address.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The current mode.
    pub fn mode(&self) -> FaultMode {
        *self.shared.mode.borrow()
    }

    /// Switches the mode; takes effect for every connection at once.
    pub fn set_mode(&self, mode: FaultMode) {
        self.shared.mode.send_replace(mode);
        tracing::debug!(addr = %self.addr, ?mode, "fault proxy mode");
    }

    /// Counts so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            forwarded: c.forwarded.load(Ordering::SeqCst),
            throttled: c.throttled.load(Ordering::SeqCst),
            blackholed: c.blackholed.load(Ordering::SeqCst),
            refused: c.refused.load(Ordering::SeqCst),
            upstream_failures: c.upstream_failures.load(Ordering::SeqCst),
            failed_entries: c.failed_entries.load(Ordering::SeqCst),
            held: c.held.load(Ordering::SeqCst),
        }
    }

    /// Stops the proxy now (also done on drop).
    pub fn shutdown(mut self) {
        self.runtime.shutdown();
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(2))
        .build(connector);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("fault proxy accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if *shared.mode.borrow() == FaultMode::Refuse {
            shared.counters.refused.fetch_add(1, Ordering::SeqCst);
            reset(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, shared.clone(), client.clone()));
    }
}

/// Closes a connection with a reset rather than an orderly shutdown.
fn reset(stream: tokio::net::TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    client: Client<HttpConnector, Full<Bytes>>,
) {
    let _ = stream.set_zero_linger();
    let mut mode_rx = shared.mode.subscribe();
    let service_shared = shared.clone();
    let service =
        hyper::service::service_fn(move |req| handle(req, service_shared.clone(), client.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let refused = tokio::select! {
        result = conn => match result {
            // A request that met `Refuse` made hyper close the connection.
            Err(e) => {
                tracing::trace!("fault proxy connection ended: {e}");
                *shared.mode.borrow() == FaultMode::Refuse
            }
            Ok(()) => false,
        },
        // Dropping the connection future closes the socket (with a reset: linger 0).
        _ = mode_rx.wait_for(|m| *m == FaultMode::Refuse) => true,
    };
    if refused {
        shared.counters.refused.fetch_add(1, Ordering::SeqCst);
    }
}

/// Why a request got no answer; makes hyper close the connection.
#[derive(Debug)]
pub(crate) struct Dropped(pub &'static str);

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    req: hyper::Request<Incoming>,
    shared: Arc<Shared>,
    client: Client<HttpConnector, Full<Bytes>>,
) -> std::result::Result<hyper::Response<Full<Bytes>>, Dropped> {
    let mode = *shared.mode.borrow();
    match mode {
        FaultMode::Refuse => Err(Dropped("refused")),
        FaultMode::Blackhole => {
            shared.counters.blackholed.fetch_add(1, Ordering::SeqCst);
            let mut rx = shared.mode.subscribe();
            let _ = rx.wait_for(|m| *m != FaultMode::Blackhole).await;
            Err(Dropped("black-holed"))
        }
        FaultMode::Throttle { fraction } if rand::random::<f64>() < fraction => {
            // Read the request so the connection stays usable.
            let _ = req.into_body().collect().await;
            shared.counters.throttled.fetch_add(1, Ordering::SeqCst);
            Ok(throttle_response())
        }
        FaultMode::Delay(delay) => {
            tokio::time::sleep(delay).await;
            let response = forward(req, &shared, &client).await?;
            tokio::time::sleep(delay).await;
            Ok(response)
        }
        FaultMode::Sqs(faults) => crate::sqs_proxy::handle(req, faults, &shared, &client).await,
        FaultMode::Pass | FaultMode::Throttle { .. } => forward(req, &shared, &client).await,
    }
}

/// Waits `delay`, or less if the mode changes meanwhile; whether the whole delay passed.
pub(crate) async fn hold(shared: &Shared, delay: Duration) -> bool {
    let mut rx = shared.mode.subscribe();
    let current = *rx.borrow_and_update();
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = rx.wait_for(|m| *m != current) => false,
    }
}

fn throttle_response() -> hyper::Response<Full<Bytes>> {
    let mut response =
        hyper::Response::new(Full::new(Bytes::from_static(THROTTLE_BODY.as_bytes())));
    *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    headers.insert(
        "x-amzn-requestid",
        hyper::header::HeaderValue::from_static("FERRYSANDBOXTHROTTLE"),
    );
    response
}

async fn forward(
    req: hyper::Request<Incoming>,
    shared: &Shared,
    client: &Upstream,
) -> std::result::Result<Answer, Dropped> {
    let (parts, body) = read_request(req).await?;
    send_upstream(parts, body, shared, client).await
}

/// A request's head and whole body.
pub(crate) async fn read_request(
    req: hyper::Request<Incoming>,
) -> std::result::Result<(hyper::http::request::Parts, Bytes), Dropped> {
    let (parts, body) = req.into_parts();
    match body.collect().await {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(_) => Err(Dropped("request body unreadable")),
    }
}

/// Sends a request (head and body) upstream and reads the whole answer.
pub(crate) async fn send_upstream(
    mut parts: hyper::http::request::Parts,
    body: Bytes,
    shared: &Shared,
    client: &Upstream,
) -> std::result::Result<Answer, Dropped> {
    // The body may have been rewritten: hyper sets the length from the new one.
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: hyper::Uri = match format!("http://{}{}", shared.upstream, path).parse() {
        Ok(uri) => uri,
        Err(_) => return Err(Dropped("bad request URI")),
    };
    parts.uri = uri;
    let upstream_req = hyper::Request::from_parts(parts, Full::new(body));
    let response = match client.request(upstream_req).await {
        Ok(r) => r,
        Err(e) => {
            shared
                .counters
                .upstream_failures
                .fetch_add(1, Ordering::SeqCst);
            tracing::debug!("fault proxy upstream failure: {}", error_chain(&e));
            return Err(Dropped("upstream failed"));
        }
    };
    let (mut parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            shared
                .counters
                .upstream_failures
                .fetch_add(1, Ordering::SeqCst);
            return Err(Dropped("upstream body unreadable"));
        }
    };
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    shared.counters.forwarded.fetch_add(1, Ordering::SeqCst);
    Ok(hyper::Response::from_parts(parts, Full::new(body)))
}

//! The store's HTTP transport: hyper's pooled HTTP/1.1 client, one per thread
//! (`thread_client.rs`), with the store's fixed headers built once and a timeout over the
//! whole exchange.
//!
//! Why not `reqwest`, which the model client uses: on every response reqwest 0.12 formats
//! the request's URI and parses it back into a `Url` (its redirect layer records where the
//! answer came from, redirect or not), and clones its service stack per request; on the
//! 2-core bench bed that was about 6 % of a cache hit's CPU (bench/RESULTS.md). The
//! behaviour kept from it: a connection pool per node with an idle limit and timeout,
//! `TCP_NODELAY`, rustls with the webpki roots for `https` nodes, one timeout per
//! attempt, gzip answers only when asked for.

use std::io::Read as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, HeaderMap, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::thread_client::ThreadClient;

/// Sent as `user-agent`, so the node's logs and slow logs name the caller.
const USER_AGENT: &str = concat!("inference-gateway/", env!("CARGO_PKG_VERSION"));

/// How long an idle pooled connection is kept (reqwest's default, which this replaced).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why an exchange with a node gave no complete answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The request was not sent, or its answer's head not received: the connection was
    /// refused or reset, the name did not resolve, the TLS handshake failed.
    #[error("the request could not be sent or its answer received")]
    Request(#[source] hyper_util::client::legacy::Error),
    /// The answer's body broke off.
    #[error("the answer's body broke off")]
    Body(#[source] hyper::Error),
    /// No complete answer within the store timeout.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// A gzip answer could not be inflated.
    #[error("the gzip answer could not be inflated")]
    Inflate(#[source] std::io::Error),
}

/// A complete answer: status and body (inflated if it came gzip-encoded).
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// What every request to the store is sent with.
pub struct Transport {
    clients: ThreadClient<HttpClient, std::convert::Infallible>,
    /// `user-agent`, `authorization` if configured, `accept-encoding: gzip` if asked for.
    headers: HeaderMap,
    timeout: Duration,
}

impl Transport {
    /// A transport that sends `authorization` (sensitive) on every request, waits
    /// `timeout` for each whole exchange, asks for gzip answers if `compression`, and keeps
    /// at most `max_idle_per_node` idle connections to each node, per thread.
    pub fn new(
        authorization: Option<HeaderValue>,
        timeout: Duration,
        compression: bool,
        max_idle_per_node: usize,
    ) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        if let Some(authorization) = authorization {
            headers.insert(AUTHORIZATION, authorization);
        }
        if compression {
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let clients = ThreadClient::new(move || {
            let mut http = HttpConnector::new();
            http.set_nodelay(true);
            // The TLS layer below takes `https` URIs; plain ones pass through.
            http.enforce_http(false);
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            Ok(Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .pool_max_idle_per_host(max_idle_per_node)
                .build(connector))
        })
        .unwrap_or_else(|never| match never {});
        Self {
            clients,
            headers,
            timeout,
        }
    }

    /// Sends one request with `headers` (beside the fixed ones) and `body`, and reads the
    /// whole answer, within the timeout.
    ///
    /// Errors: [`TransportError`], when no complete answer came.
    pub async fn send(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Answer, TransportError> {
        let mut request = Request::new(Full::new(body.unwrap_or_default()));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let all = request.headers_mut();
        all.reserve(self.headers.len() + headers.len());
        all.extend(
            self.headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        all.extend(headers);
        let exchange = async {
            let response = self
                .clients
                .with(|client| client.request(request))
                .await
                .map_err(TransportError::Request)?;
            let status = response.status().as_u16();
            let gzip = response
                .headers()
                .get(CONTENT_ENCODING)
                .is_some_and(|encoding| encoding.as_bytes().eq_ignore_ascii_case(b"gzip"));
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(TransportError::Body)?
                .to_bytes();
            let body = if gzip { inflate(&body)? } else { body };
            Ok(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(TransportError::Timeout(self.timeout)))
    }
}

fn inflate(body: &[u8]) -> Result<Bytes, TransportError> {
    let mut inflated = Vec::with_capacity(body.len() * 4);
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut inflated)
        .map_err(TransportError::Inflate)?;
    Ok(inflated.into())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use tokio::io::AsyncReadExt as _;

    use super::*;

    #[tokio::test]
    async fn an_https_node_is_spoken_to_in_tls() {
        // STAND-IN for an https node: only the first byte the client sends matters.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("https://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let first_byte = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.read_u8().await.unwrap()
        });
        let transport = Transport::new(None, Duration::from_secs(5), false, 1);

        let sent = transport
            .send(Method::GET, uri, HeaderMap::new(), None)
            .await;

        let first_byte = tokio::time::timeout(Duration::from_secs(5), first_byte)
            .await
            .expect("the client connected");
        assert_eq!(
            first_byte.unwrap(),
            0x16,
            "a TLS handshake record (RFC 8446 section 5.1) opened the connection"
        );
        assert!(
            matches!(sent, Err(TransportError::Request(_))),
            "no TLS answer: no HTTP answer"
        );
    }

    #[test]
    fn a_gzip_body_is_inflated_and_a_broken_one_is_an_error() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(br#"{"found":false}"#).unwrap();
        let gzipped = encoder.finish().unwrap();

        assert_eq!(&inflate(&gzipped).unwrap()[..], br#"{"found":false}"#);
        assert!(matches!(
            inflate(&gzipped[..gzipped.len() / 2]),
            Err(TransportError::Inflate(_))
        ));
    }
}

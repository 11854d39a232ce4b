//! The server side of a WebSocket upgrade over hyper (HTTP/1.1 `Upgrade: websocket`).

use std::future::Future;

use bytes::Bytes;
use http_body_util::Full;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket on an upgraded hyper connection.
pub type ServerSocket = WebSocketStream<TokioIo<Upgraded>>;

/// WebSocket buffers sized for small signaling messages, on every socket the bench tools open
/// or accept. tungstenite's default read buffer is 128 KiB per socket, which would bury the
/// lane's share of a memory-per-socket figure in the client's and the service's.
pub fn small_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Whether `req` asks for a WebSocket upgrade.
pub fn is_upgrade<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers a WebSocket upgrade with `101 Switching Protocols` and spawns `handler` on the
/// socket once hyper hands the connection over. Without a `sec-websocket-key` the answer is a
/// 400.
pub fn accept<B, F, Fut>(req: &mut http::Request<B>, handler: F) -> http::Response<Full<Bytes>>
where
    B: hyper::body::Body + Send + 'static,
    F: FnOnce(ServerSocket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut resp = http::Response::new(Full::new(Bytes::from_static(
            b"WebSocket upgrade without sec-websocket-key\n",
        )));
        *resp.status_mut() = http::StatusCode::BAD_REQUEST;
        return resp;
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(io) = upgrade.await {
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(io),
                Role::Server,
                Some(small_config()),
            )
            .await;
            handler(ws).await;
        }
    });
    let mut resp = http::Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

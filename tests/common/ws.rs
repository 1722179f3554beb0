//! A test-only WebSocket front for a TCP MQTT broker (Debian's Mosquitto is
//! not built with WebSocket support): each `ws://` or `wss://` connection is
//! bridged to the broker's TCP listener, binary frame by frame, so the
//! node's own WebSocket client (rumqttc's) is exercised for real.

use async_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as WsRequest, Response as WsResponse,
};
use async_tungstenite::tungstenite::Message;
use futures_util::{SinkExt, StreamExt};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub struct WsProxy {
    pub port: u16,
    _rt: tokio::runtime::Runtime,
}

impl WsProxy {
    /// Listens on a free port and bridges to `127.0.0.1:broker_port`; with
    /// `tls` (certificate chain and key, PEM) it speaks `wss://`.
    pub fn start(broker_port: u16, tls: Option<(&Path, &Path)>) -> WsProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let acceptor = tls.map(|(cert, key)| {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::{CertificateDer, PrivateKeyDer};
            let _ = rustls::crypto::ring::default_provider().install_default();
            let certs: Vec<_> = CertificateDer::pem_file_iter(cert)
                .expect("cert")
                .map(|c| c.expect("cert"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).expect("key");
            let config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(s) = a.accept(stream).await {
                                bridge(s, broker_port).await
                            }
                        }
                        None => bridge(stream, broker_port).await,
                    }
                });
            }
        });
        WsProxy { port, _rt: rt }
    }
}

async fn bridge<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, broker_port: u16) {
    // MQTT over WebSocket: the server names the subprotocol "mqtt".
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    let callback = |_: &WsRequest, mut rsp: WsResponse| -> Result<WsResponse, ErrorResponse> {
        rsp.headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("header"));
        Ok(rsp)
    };
    let Ok(ws) = async_tungstenite::tokio::accept_hdr_async(stream, callback).await else {
        return;
    };
    let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await else {
        return;
    };
    let (mut tcp_rx, mut tcp_tx) = tcp.into_split();
    let (mut ws_tx, mut ws_rx) = ws.split();
    let up = async move {
        while let Some(Ok(m)) = ws_rx.next().await {
            let gone = match m {
                Message::Binary(b) => tcp_tx.write_all(&b).await.is_err(),
                Message::Close(_) => true,
                _ => false,
            };
            if gone {
                break;
            }
        }
        let _ = tcp_tx.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tcp_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

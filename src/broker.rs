//! A small in-process MQTT 3.1.1 broker, only for `m2mnode demo`, so that the
//! demo needs nothing installed. It speaks what oneM2M nodes use (CONNECT,
//! SUBSCRIBE with `+`/`#`, PUBLISH at QoS 0/1, PING, DISCONNECT) and keeps
//! no sessions. Production deployments and the tests use Mosquitto.

use bytes::BytesMut;
use rumqttc::{
    ConnAck, ConnectReturnCode, Packet, PubAck, QoS, SubAck, SubscribeReasonCode, UnsubAck,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

const MAX_PACKET: usize = 1 << 20;

struct Client {
    filters: Vec<(String, QoS)>,
    tx: mpsc::UnboundedSender<Packet>,
}

#[derive(Default)]
struct Registry {
    clients: HashMap<u64, Client>,
    next: u64,
}

type Shared = Arc<Mutex<Registry>>;

/// Binds `addr` and serves until the returned task is aborted.
pub async fn start(addr: SocketAddr) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let shared: Shared = Arc::default();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream, shared.clone()));
        }
    });
    Ok((local, task))
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// MQTT topic filter matching (`+` one level, `#` the rest).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

async fn serve(stream: TcpStream, shared: Shared) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Packet>();
    let id = {
        let mut r = lock(&shared);
        r.next += 1;
        let id = r.next;
        r.clients.insert(
            id,
            Client {
                filters: Vec::new(),
                tx: tx.clone(),
            },
        );
        id
    };
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        let mut pkid: u16 = 0;
        while let Some(mut p) = rx.recv().await {
            if let Packet::Publish(publish) = &mut p {
                if publish.qos != QoS::AtMostOnce {
                    pkid = pkid.wrapping_add(1).max(1);
                    publish.pkid = pkid;
                }
            }
            buf.clear();
            if p.write(&mut buf, MAX_PACKET).is_err() || wr.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(4096);
    'conn: loop {
        loop {
            match Packet::read(&mut buf, MAX_PACKET) {
                Ok(packet) => {
                    if !handle(packet, id, &tx, &shared) {
                        break 'conn;
                    }
                }
                Err(rumqttc::Error::InsufficientBytes(_)) => break,
                Err(e) => {
                    debug!(error = %e, "demo broker: bad packet; closing");
                    break 'conn;
                }
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    lock(&shared).clients.remove(&id);
    drop(tx);
    writer.abort();
}

/// Handles one packet; false closes the connection.
fn handle(packet: Packet, id: u64, tx: &mpsc::UnboundedSender<Packet>, shared: &Shared) -> bool {
    match packet {
        Packet::Connect(_) => {
            let _ = tx.send(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                false,
            )));
        }
        Packet::Subscribe(s) => {
            let mut codes = Vec::new();
            let mut r = lock(shared);
            if let Some(c) = r.clients.get_mut(&id) {
                for f in s.filters {
                    let qos = if f.qos == QoS::AtMostOnce {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    c.filters.push((f.path, qos));
                    codes.push(SubscribeReasonCode::Success(qos));
                }
            }
            let _ = tx.send(Packet::SubAck(SubAck::new(s.pkid, codes)));
        }
        Packet::Unsubscribe(u) => {
            if let Some(c) = lock(shared).clients.get_mut(&id) {
                c.filters.retain(|(f, _)| !u.topics.contains(f));
            }
            let _ = tx.send(Packet::UnsubAck(UnsubAck::new(u.pkid)));
        }
        Packet::Publish(p) => {
            if p.qos == QoS::AtLeastOnce {
                let _ = tx.send(Packet::PubAck(PubAck::new(p.pkid)));
            }
            for c in lock(shared).clients.values() {
                let best = c
                    .filters
                    .iter()
                    .filter(|(f, _)| matches(f, &p.topic))
                    .map(|(_, q)| *q)
                    .max_by_key(|q| *q as u8);
                if let Some(q) = best {
                    let mut out = p.clone();
                    out.dup = false;
                    out.retain = false;
                    out.qos = if p.qos == QoS::AtMostOnce {
                        QoS::AtMostOnce
                    } else {
                        q
                    };
                    let _ = c.tx.send(Packet::Publish(out));
                }
            }
        }
        Packet::PingReq => {
            let _ = tx.send(Packet::PingResp);
        }
        Packet::Disconnect => return false,
        _ => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn topic_filters() {
        assert!(matches(
            "/oneM2M/req/+/id-in/#",
            "/oneM2M/req/id-mn/id-in/json"
        ));
        assert!(matches(
            "/oneM2M/resp/id-mn/+/#",
            "/oneM2M/resp/id-mn/id-in/cbor"
        ));
        assert!(!matches(
            "/oneM2M/req/+/id-in/#",
            "/oneM2M/req/id-mn/id-x/json"
        ));
        assert!(!matches("/a/+", "/a/b/c"));
        assert!(matches("#", "/x"));
    }
}

//! A stand-in peer on the broker: one rumqttc client at QoS 0 (as tinyIoT
//! and Mobius speak) that subscribes to its topics and hands every publish
//! to a closure, publishing whatever that returns. The stand-in registrars
//! (tests/tinyiot_standin.rs, tests/mobius_standin.rs) and the bystanders
//! that watch the wire are made of it.

use rumqttc::{Event, MqttOptions, Outgoing, Packet, QoS};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct StandIn {
    client: rumqttc::Client,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Connects as `client_id` (a clean session when `clean`), subscribes
    /// to `topics` and returns once every subscription is acknowledged.
    /// `on_publish(topic, payload)` returns the (topic, payload)s to publish.
    pub fn start(
        port: u16,
        client_id: &str,
        clean: bool,
        topics: &[&str],
        mut on_publish: impl FnMut(&str, &[u8]) -> Vec<(String, Vec<u8>)> + Send + 'static,
    ) -> StandIn {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_clean_session(clean);
        let (client, mut connection) = rumqttc::Client::new(opts, 64);
        for t in topics {
            client.subscribe(*t, QoS::AtMostOnce).expect("subscribe");
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = {
            let client = client.clone();
            std::thread::spawn(move || {
                for ev in connection.iter() {
                    match ev {
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            let _ = tx.send(());
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            for (topic, payload) in on_publish(&p.topic, &p.payload) {
                                let _ = client.publish(topic, QoS::AtMostOnce, false, payload);
                            }
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })
        };
        for _ in topics {
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{client_id} subscribed"));
        }
        StandIn {
            client,
            thread: Some(thread),
        }
    }
}

impl StandIn {
    /// Publishes on its own, as the peer does (at QoS 0).
    pub fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtMostOnce, false, payload)
            .expect("publish");
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

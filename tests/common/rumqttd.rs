//! A second broker implementation for the core tests: rumqttd, embedded
//! (MQTT 3.1.1 on a free port), so that nothing depends on Mosquitto's
//! quirks.

use crate::common::{free_port, wait_until};
use std::net::TcpStream;
use std::time::Duration;

pub struct Rumqttd {
    pub port: u16,
}

impl Rumqttd {
    /// Starts a broker on a thread of its own; it lives until the test
    /// process ends (rumqttd has no stop).
    pub fn start() -> Rumqttd {
        let port = free_port();
        let text = format!(
            r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 2097152
    max_inflight_count = 100
    dynamic_filters = true
"#
        );
        let config: rumqttd::Config = toml::from_str(&text).expect("rumqttd config");
        std::thread::Builder::new()
            .name(format!("rumqttd-{port}"))
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                let _ = broker.start();
            })
            .expect("rumqttd thread");
        wait_until(Duration::from_secs(10), "rumqttd to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Rumqttd { port }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

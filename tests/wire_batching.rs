//! Issue "The wire path": the vendored rumqttc (vendor/rumqttc/PATCHES.md)
//! writes what its client has queued in one flush. The node relies on it to
//! send an answer and the PUBACK of its request in one write.
//!
//! Counted where it happens: the write system calls of the one thread that
//! runs the event loop (`syscw` in /proc/thread-self/io), around the poll
//! that writes. The published rumqttc makes two writes here. The test has a
//! binary of its own, so no other test's thread shares the count.

mod common;

use common::Mosquitto;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS};
use std::time::Duration;

/// Write system calls (write, writev, send...) made by this thread so far.
fn writes_of_this_thread() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io")
        .expect("/proc/thread-self/io (Linux with task I/O accounting)");
    io.lines()
        .find_map(|l| l.strip_prefix("syscw: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a syscw line in /proc/thread-self/io")
}

/// Polls until `done` says so, for at most 5 s.
async fn poll_until(eventloop: &mut EventLoop, mut done: impl FnMut(&Event) -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = eventloop.poll().await.expect("the broker connection");
            if done(&event) {
                return;
            }
        }
    })
    .await
    .expect("the expected event within 5 s");
}

fn client(broker: &Mosquitto, id: &str) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_manual_acks(true);
    AsyncClient::new(opts, 16)
}

#[test]
fn an_answer_and_the_puback_of_its_request_leave_in_one_write() {
    let broker = Mosquitto::start();
    // One thread: the event loop's writes are this thread's.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (node, mut node_loop) = client(&broker, "batching-node");
        node.subscribe("/oneM2M/req/+/id-in/json", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        poll_until(&mut node_loop, |e| {
            matches!(e, Event::Incoming(Packet::SubAck(_)))
        })
        .await;

        // A requester on a connection of its own (its event loop on a
        // task of its own, so its writes are not counted below).
        let (asker, mut asker_loop) = client(&broker, "batching-asker");
        let asker_task = tokio::spawn(async move {
            loop {
                if asker_loop.poll().await.is_err() {
                    return;
                }
            }
        });
        asker
            .publish(
                "/oneM2M/req/Casker/id-in/json",
                QoS::AtLeastOnce,
                false,
                br#"{"op":2,"to":"/id-in/cse-in","fr":"Casker","rqi":"r1","rvi":"3"}"#.to_vec(),
            )
            .await
            .expect("publish the request");
        let mut request: Option<Publish> = None;
        poll_until(&mut node_loop, |e| match e {
            Event::Incoming(Packet::Publish(p)) => {
                request = Some(p.clone());
                true
            }
            _ => false,
        })
        .await;
        let request = request.expect("the request");

        // What the node does with an answered request: the answer, then
        // the PUBACK, queued in the client before its loop runs again.
        node.try_publish(
            "/oneM2M/resp/Casker/id-in/json",
            QoS::AtLeastOnce,
            false,
            br#"{"rsc":2000,"rqi":"r1","rvi":"3"}"#.to_vec(),
        )
        .expect("queue the answer");
        node.try_ack(&request).expect("queue the PUBACK");

        let before = writes_of_this_thread();
        let (mut answer_out, mut puback_out) = (false, false);
        poll_until(&mut node_loop, |e| {
            match e {
                Event::Outgoing(Outgoing::Publish(_)) => answer_out = true,
                Event::Outgoing(Outgoing::PubAck(pkid)) if *pkid == request.pkid => {
                    assert!(answer_out, "the PUBACK went out before the answer");
                    puback_out = true;
                }
                _ => {}
            }
            answer_out && puback_out
        })
        .await;
        let writes = writes_of_this_thread() - before;
        assert_eq!(
            writes, 1,
            "the answer and the PUBACK took {writes} writes (vendor/rumqttc/PATCHES.md)"
        );
        asker_task.abort();
    });
}

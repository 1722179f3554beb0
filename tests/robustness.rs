//! Issue "One sans-IO engine that scales": the node over a real Mosquitto
//! under load, crashes, a full disk, an old store and a second instance.
//! Everything is asserted on the wire (answers by rqi) and on the state the
//! node serves afterwards, never on log text.
//!
//! The load tests use a raw MQTT client (the "swarm") that publishes on the
//! request topics of many originators and listens on all of their response
//! topics at once, so thousands of requests can be in flight.

mod common;

use common::*;
use m2mnode::primitive::{Format, Operation, Request, ResourceType, Response, Rsc};
use m2mnode::time::Timestamp;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODE: &str = "/id-in";
const BASE: &str = "/id-in/cse-in";
/// Long enough that no registree is probed (and removed) during a test.
const NO_PROBES: &str = "3600s";

type Answers = Arc<Mutex<HashMap<String, Vec<Response>>>>;

/// A raw MQTT client that speaks for any originator: it publishes requests
/// on `/oneM2M/req/<fr>/id-in/json` and takes every answer the node
/// publishes on `/oneM2M/resp/+/id-in/json`, keyed by rqi.
struct Swarm {
    rt: tokio::runtime::Runtime,
    client: AsyncClient,
    answers: Answers,
    /// PUBACKs from the broker: how many publishes it has taken.
    acked: Arc<AtomicUsize>,
    n: AtomicUsize,
    prefix: String,
}

impl Swarm {
    fn connect(broker: &Mosquitto, name: &str, persistent: bool) -> Swarm {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut opts = MqttOptions::new(
            format!("robust-{name}-{}-{}", std::process::id(), free_port()),
            "127.0.0.1",
            broker.port,
        );
        opts.set_clean_session(!persistent)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(100)
            .set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        let answers: Answers = Arc::default();
        let ready = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        {
            let (client, answers, ready, acked) = (
                client.clone(),
                answers.clone(),
                ready.clone(),
                acked.clone(),
            );
            let _g = rt.enter();
            tokio::spawn(async move {
                let filter = format!("/oneM2M/resp/+/{}/json", NODE.trim_start_matches('/'));
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            ready.store(true, Ordering::Release);
                        }
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            acked.fetch_add(1, Ordering::AcqRel);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            if let Ok(rsp) = Format::Json.decode_response(&p.payload) {
                                answers
                                    .lock()
                                    .unwrap()
                                    .entry(rsp.rqi.clone())
                                    .or_default()
                                    .push(rsp);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
        }
        let s = Swarm {
            rt,
            client,
            answers,
            acked,
            n: AtomicUsize::new(0),
            prefix: name.to_owned(),
        };
        wait_until(Duration::from_secs(10), "the swarm to subscribe", || {
            ready.load(Ordering::Acquire)
        });
        s
    }

    fn rqi(&self) -> String {
        format!("{}-{}", self.prefix, self.n.fetch_add(1, Ordering::Relaxed))
    }

    fn req(&self, op: Operation, to: &str, fr: &str) -> Request {
        let mut r = Request::new(op, to, fr, self.rqi());
        r.rvi = Some("3".into());
        r
    }

    fn create_csr(&self, csi: &str) -> Request {
        let mut r = self.req(Operation::Create, BASE, csi);
        r.ty = Some(ResourceType::REMOTE_CSE);
        r.pc = Some(csr_body(csi, json!({})));
        r
    }

    fn retrieve(&self, to: &str, fr: &str) -> Request {
        self.req(Operation::Retrieve, to, fr)
    }

    /// The request on the topic of its originator (`fr`).
    fn message(req: &Request) -> (String, Vec<u8>) {
        let fr = req.fr.as_deref().expect("fr");
        let topic = m2mnode::topic::request_topic(fr, NODE, Format::Json);
        (topic, Format::Json.encode(req).expect("encode"))
    }

    /// Publishes every request, as fast as the client takes them (QoS 1);
    /// at most 120 s (the client's queue stops taking them without a broker).
    fn publish_all(&self, reqs: &[Request]) {
        let msgs: Vec<_> = reqs.iter().map(Swarm::message).collect();
        let n = msgs.len();
        let publish = async {
            for (topic, payload) in msgs {
                self.client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .expect("publish");
            }
        };
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(120), publish).await })
            .unwrap_or_else(|_| panic!("the swarm could not publish {n} requests within 120 s"));
    }

    /// Publishes in the background; returns at once.
    fn publish_in_background(&self, reqs: &[Request]) {
        let msgs: Vec<_> = reqs.iter().map(Swarm::message).collect();
        let client = self.client.clone();
        self.rt.spawn(async move {
            for (topic, payload) in msgs {
                if client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }

    fn answers(&self) -> HashMap<String, Vec<Response>> {
        self.answers.lock().unwrap().clone()
    }

    fn answered(&self, rqis: &[String]) -> usize {
        let a = self.answers.lock().unwrap();
        rqis.iter().filter(|r| a.contains_key(*r)).count()
    }

    /// Waits until every rqi has an answer; returns all answers of each.
    fn wait_answers(&self, rqis: &[String], timeout: Duration) -> HashMap<String, Vec<Response>> {
        let end = Instant::now() + timeout;
        loop {
            let done = self.answered(rqis);
            if done == rqis.len() {
                let a = self.answers.lock().unwrap();
                return rqis.iter().map(|r| (r.clone(), a[r].clone())).collect();
            }
            if Instant::now() >= end {
                let a = self.answers.lock().unwrap();
                let missing: Vec<&String> = rqis
                    .iter()
                    .filter(|r| !a.contains_key(*r))
                    .take(10)
                    .collect();
                panic!(
                    "{} of {} requests unanswered after {timeout:?}; e.g. {missing:?}",
                    rqis.len() - done,
                    rqis.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `reqs` and returns the first answer to each.
    fn exchange_all(&self, reqs: &[Request], timeout: Duration) -> HashMap<String, Response> {
        self.publish_all(reqs);
        let rqis: Vec<String> = reqs.iter().map(|r| r.rqi.clone()).collect();
        self.wait_answers(&rqis, timeout)
            .into_iter()
            .map(|(k, mut v)| (k, v.remove(0)))
            .collect()
    }

    fn exchange(&self, req: &Request, timeout: Duration) -> Response {
        self.exchange_all(std::slice::from_ref(req), timeout)
            .remove(&req.rqi)
            .expect("answer")
    }

    /// Until the node answers: a RETRIEVE of its <CSEBase> every 500 ms (the
    /// ones sent before it subscribed are lost, so each gets a new rqi).
    fn ping(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        let mut sent = Vec::new();
        while Instant::now() < end {
            let r = self.retrieve(BASE, "/id-ping");
            sent.push(r.rqi.clone());
            self.publish_all(std::slice::from_ref(&r));
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                if self.answered(&sent) > 0 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("the node did not answer a RETRIEVE within {timeout:?}");
    }
}

fn in_config(broker: &Mosquitto, data_dir: Option<&Path>) -> String {
    node_config(
        NODE,
        "cse-in",
        "IN",
        &broker.url(),
        data_dir,
        None,
        NO_PROBES,
    )
}

fn csr_path(csi: &str) -> String {
    format!("{BASE}/{}", csi.trim_start_matches('/'))
}

/// Every answer to one rqi says the same (a repeat is a replay).
fn assert_consistent(all: &HashMap<String, Vec<Response>>) {
    for (rqi, answers) in all {
        let first = answers[0].rsc;
        assert!(
            answers.iter().all(|a| a.rsc == first),
            "{rqi} was answered differently: {:?}",
            answers.iter().map(|a| a.rsc).collect::<Vec<_>>()
        );
    }
}

fn histogram<'a>(rscs: impl Iterator<Item = &'a Rsc>) -> BTreeMap<u16, usize> {
    let mut h = BTreeMap::new();
    for r in rscs {
        *h.entry(r.code()).or_default() += 1;
    }
    h
}

// ---------------------------------------------------------------------------
// 1. A backlog queued at the broker while the node is down.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Retrieve,
    RetrievePast,
    RetrieveSoon,
    Create,
    CreatePast,
    CreateSoon,
}

#[test]
fn ten_thousand_requests_queued_while_down_are_all_answered() {
    const TOTAL: usize = 10_000;
    let broker = Mosquitto::start();
    let data = scratch("backlog-data");
    let mut node = Node::start("backlog", &in_config(&broker, Some(&data)));
    let swarm = Swarm::connect(&broker, "backlog", true);
    // The node's persistent session and subscriptions now exist.
    swarm.ping(Duration::from_secs(30));
    assert!(node.terminate(Duration::from_secs(15)), "SIGTERM: no exit");

    // Per 20: 14 plain RETRIEVEs, 2 expired, 2 expiring in 1 s; 1 CREATE, and
    // (every other 20) one expired CREATE or one expiring in 1 s.
    let past = "20200101T000000".to_string();
    let mut reqs = Vec::with_capacity(TOTAL);
    let mut kinds = HashMap::new();
    let mut csis: HashMap<String, String> = HashMap::new();
    let mut latest_soon = Timestamp::now();
    for i in 0..TOTAL {
        let kind = match i % 20 {
            0..=13 => Kind::Retrieve,
            14 | 15 => Kind::RetrievePast,
            16 | 17 => Kind::RetrieveSoon,
            18 => Kind::Create,
            _ if (i / 20) % 2 == 0 => Kind::CreatePast,
            _ => Kind::CreateSoon,
        };
        let soon = Timestamp::now().plus(Duration::from_secs(1));
        let mut r = match kind {
            Kind::Retrieve | Kind::RetrievePast | Kind::RetrieveSoon => {
                swarm.retrieve(BASE, &format!("/id-r{}", i % 50))
            }
            _ => {
                let csi = format!("/id-q{i}");
                let r = swarm.create_csr(&csi);
                csis.insert(r.rqi.clone(), csi);
                r
            }
        };
        match kind {
            Kind::RetrievePast | Kind::CreatePast => r.rqet = Some(past.clone()),
            Kind::RetrieveSoon | Kind::CreateSoon => {
                r.rqet = Some(soon.to_onem2m());
                latest_soon = soon;
            }
            _ => {}
        }
        kinds.insert(r.rqi.clone(), kind);
        reqs.push(r);
    }
    swarm.publish_all(&reqs);
    wait_until(
        Duration::from_secs(60),
        "the broker to take every request",
        || swarm.acked.load(Ordering::Acquire) >= TOTAL,
    );
    assert_eq!(
        swarm.answered(&reqs.iter().map(|r| r.rqi.clone()).collect::<Vec<_>>()),
        0,
        "answered while the node was down"
    );
    // Let the 1 s deadlines pass (with room to spare) before the node is back.
    while Timestamp::now() <= latest_soon.plus(Duration::from_millis(500)) {
        std::thread::sleep(Duration::from_millis(100));
    }

    node.restart();
    let rqis: Vec<String> = reqs.iter().map(|r| r.rqi.clone()).collect();
    let all = swarm.wait_answers(&rqis, Duration::from_secs(120));
    assert_eq!(all.len(), TOTAL);
    assert_consistent(&all);
    let mut wrong = Vec::new();
    for (rqi, answers) in &all {
        let want = match kinds[rqi] {
            Kind::Retrieve => Rsc::OK,
            Kind::Create => Rsc::CREATED,
            _ => Rsc::REQUEST_TIMEOUT,
        };
        if answers[0].rsc != want {
            wrong.push((rqi.clone(), kinds[rqi], answers[0].rsc));
        }
    }
    let got = histogram(all.values().map(|a| &a[0].rsc));
    assert!(
        wrong.is_empty(),
        "{} wrong answers (histogram {got:?}), e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    let n = |k| kinds.values().filter(|v| **v == k).count();
    assert_eq!(got.get(&2000), Some(&n(Kind::Retrieve)));
    assert_eq!(got.get(&2001), Some(&n(Kind::Create)));
    assert_eq!(
        got.get(&4008),
        Some(
            &(n(Kind::RetrievePast)
                + n(Kind::RetrieveSoon)
                + n(Kind::CreatePast)
                + n(Kind::CreateSoon))
        )
    );

    // The expired CREATEs were not executed; the others were.
    let checks: Vec<(Request, Rsc)> = csis
        .iter()
        .map(|(rqi, csi)| {
            let want = if kinds[rqi] == Kind::Create {
                Rsc::OK
            } else {
                Rsc::NOT_FOUND
            };
            (swarm.retrieve(&csr_path(csi), "/id-check"), want)
        })
        .collect();
    let reqs: Vec<Request> = checks.iter().map(|(r, _)| r.clone()).collect();
    let got = swarm.exchange_all(&reqs, Duration::from_secs(60));
    for (r, want) in &checks {
        assert_eq!(got[&r.rqi].rsc, *want, "RETRIEVE {}", r.to);
    }
}

// ---------------------------------------------------------------------------
// 2. A burst against a running node.

#[test]
fn a_burst_of_three_thousand_requests_is_all_answered() {
    const TOTAL: usize = 3_000;
    let broker = Mosquitto::start();
    let _node = Node::start("burst", &in_config(&broker, Some(&scratch("burst-data"))));
    let swarm = Swarm::connect(&broker, "burst", false);
    swarm.ping(Duration::from_secs(30));

    let mut want = HashMap::new();
    let reqs: Vec<Request> = (0..TOTAL)
        .map(|i| {
            let (r, rsc) = match i % 10 {
                0 => (swarm.create_csr(&format!("/id-b{i}")), Rsc::CREATED),
                1 => (
                    swarm.retrieve(&csr_path("/id-nobody"), "/id-x"),
                    Rsc::NOT_FOUND,
                ),
                _ => (swarm.retrieve(BASE, &format!("/id-r{}", i % 7)), Rsc::OK),
            };
            want.insert(r.rqi.clone(), rsc);
            r
        })
        .collect();
    swarm.publish_all(&reqs);
    let rqis: Vec<String> = reqs.iter().map(|r| r.rqi.clone()).collect();
    let all = swarm.wait_answers(&rqis, Duration::from_secs(120));
    assert_consistent(&all);
    let wrong: Vec<_> = all
        .iter()
        .filter(|(rqi, a)| a[0].rsc != want[*rqi])
        .map(|(rqi, a)| (rqi.clone(), want[rqi], a[0].rsc))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} wrong answers, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

// ---------------------------------------------------------------------------
// 3. SIGKILL in a CREATE storm.

/// A CREATE storm cut short by SIGKILL, then the node back on the same
/// data_dir and broker session until every request has an answer.
struct Storm {
    swarm: Swarm,
    rqis: Vec<String>,
    /// rqi -> (CSE-ID, expired: rqet in the past)
    csis: HashMap<String, (String, bool)>,
    /// Answers from the killed node.
    before: HashMap<String, Vec<Response>>,
    /// Every answer, before the kill and after the restart.
    all: HashMap<String, Vec<Response>>,
    _node: Node,
    _broker: Mosquitto,
}

fn create_storm_with_sigkill(name: &str) -> Storm {
    const TOTAL: usize = 5_000;
    let broker = Mosquitto::start();
    let data = scratch(&format!("{name}-data"));
    let mut node = Node::start(name, &in_config(&broker, Some(&data)));
    let swarm = Swarm::connect(&broker, name, false);
    swarm.ping(Duration::from_secs(30));

    // Every 10th has an rqet in the past: refused (4008), never created.
    let mut csis = HashMap::new();
    let reqs: Vec<Request> = (0..TOTAL)
        .map(|i| {
            let csi = format!("/id-s{i}");
            let mut r = swarm.create_csr(&csi);
            if i % 10 == 5 {
                r.rqet = Some("20200101T000000".into());
            }
            csis.insert(r.rqi.clone(), (csi, i % 10 == 5));
            r
        })
        .collect();
    let rqis: Vec<String> = reqs.iter().map(|r| r.rqi.clone()).collect();
    swarm.publish_in_background(&reqs);
    let created = |a: &HashMap<String, Vec<Response>>| {
        a.values()
            .filter(|v| v[0].rsc == Rsc::CREATED && csis.contains_key(&v[0].rqi))
            .count()
    };
    // Kill as soon as some are acknowledged: most of the storm is still
    // queued or in the node's hands.
    let end = Instant::now() + Duration::from_secs(60);
    while created(&swarm.answers.lock().unwrap()) < 100 {
        assert!(Instant::now() < end, "no 100 CSRs created within 60 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    node.kill();
    // What the killed node published before it died has arrived by now.
    std::thread::sleep(Duration::from_secs(1));
    let before = swarm.answers();
    let answered_before = rqis.iter().filter(|r| before.contains_key(*r)).count();
    eprintln!(
        "killed after {answered_before} of {TOTAL} answers ({} created)",
        created(&before)
    );
    if answered_before == TOTAL {
        eprintln!("note: the storm was over before the kill; this run proves less");
    }

    // Back on the same data_dir and session: the broker redelivers what the
    // killed node had not acknowledged, and every request gets an answer.
    node.restart();
    let all = swarm.wait_answers(&rqis, Duration::from_secs(120));
    Storm {
        swarm,
        rqis,
        csis,
        before,
        all,
        _node: node,
        _broker: broker,
    }
}

#[test]
fn sigkill_in_a_create_storm_keeps_exactly_what_was_acknowledged() {
    // Bound by name: the node and the broker must live to the end.
    let Storm {
        swarm,
        rqis,
        csis,
        before,
        all,
        _node,
        _broker,
    } = create_storm_with_sigkill("storm");
    let mut checks: Vec<(Request, Rsc, String)> = Vec::new();
    let mut unacknowledged = 0;
    for rqi in &rqis {
        let (csi, expired) = &csis[rqi];
        // What the killed node said: 2001 only once durable, 4008 for the
        // expired ones, nothing else.
        let pre = before.get(rqi).map(Vec::as_slice).unwrap_or_default();
        for a in pre {
            let ok = if *expired {
                a.rsc == Rsc::REQUEST_TIMEOUT
            } else {
                a.rsc == Rsc::CREATED
            };
            assert!(
                ok,
                "{csi} (expired: {expired}) answered {} before the kill: {a:?}",
                a.rsc
            );
        }
        let answers = &all[rqi];
        let want = if answers.iter().any(|a| a.rsc == Rsc::CREATED) {
            // Acknowledged: it must be there.
            Rsc::OK
        } else if *expired {
            assert!(
                answers.iter().all(|a| a.rsc == Rsc::REQUEST_TIMEOUT),
                "{csi}: {answers:?}"
            );
            Rsc::NOT_FOUND
        } else {
            // Created by the killed node but not answered before it died:
            // the redelivery finds it there (see the test below).
            assert!(
                answers.iter().all(|a| a.rsc == Rsc::CONFLICT),
                "{csi}: {answers:?}"
            );
            unacknowledged += 1;
            Rsc::OK
        };
        checks.push((
            swarm.retrieve(&csr_path(csi), "/id-check"),
            want,
            rqi.clone(),
        ));
    }
    eprintln!("{unacknowledged} created by the killed node without an answer (4105 on redelivery)");
    let reqs: Vec<Request> = checks.iter().map(|(r, _, _)| r.clone()).collect();
    let got = swarm.exchange_all(&reqs, Duration::from_secs(60));
    let wrong: Vec<_> = checks
        .iter()
        .filter(|(r, want, _)| got[&r.rqi].rsc != *want)
        .map(|(r, want, rqi)| (r.to.clone(), *want, got[&r.rqi].rsc, all[rqi].clone()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} CSRs in the wrong state, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// The strict reading of "nothing answered 4xxx/5xxx was created": a CREATE
/// whose batch was committed just before the SIGKILL, but whose 2001 never
/// left, is redelivered by the broker after the restart; the node must
/// answer it as the first execution would have (2001), not 4105 for the CSR
/// that very request created. The duplicate cache (engine::dedupe) lives in
/// memory only, so a crash forgets it.
#[test]
fn a_create_redelivered_after_sigkill_gets_its_original_answer() {
    let storm = create_storm_with_sigkill("storm-strict");
    let (rqis, csis, all) = (&storm.rqis, &storm.csis, &storm.all);
    let wrong: Vec<_> = rqis
        .iter()
        .filter(|rqi| !csis[*rqi].1)
        .filter(|rqi| all[*rqi].iter().any(|a| a.rsc != Rsc::CREATED))
        .map(|rqi| {
            (
                csis[rqi].0.clone(),
                all[rqi].iter().map(|a| a.rsc).collect::<Vec<_>>(),
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} CREATEs were answered other than 2001, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

// ---------------------------------------------------------------------------
// 4. A full disk.

#[test]
fn a_full_disk_refuses_changes_with_5000_and_keeps_the_acknowledged_state() {
    let fs = Tmpfs::mount("4m").unwrap_or_else(|reason| {
        panic!("cannot mount a tmpfs ({reason}): this test needs root (CI runs as root)")
    });
    let data = fs.0.join("data");
    let filler = fs.0.join("filler");
    let broker = Mosquitto::start();
    let mut node = Node::start("fulldisk", &in_config(&broker, Some(&data)));
    let swarm = Swarm::connect(&broker, "fulldisk", false);
    swarm.ping(Duration::from_secs(30));
    let t = Duration::from_secs(30);

    for i in 0..5 {
        let rsp = swarm.exchange(&swarm.create_csr(&format!("/id-f{i}")), t);
        assert_eq!(rsp.rsc, Rsc::CREATED, "{rsp:?}");
    }

    fill(&filler);
    let rsp = swarm.exchange(&swarm.create_csr("/id-refused"), t);
    assert_eq!(
        rsp.rsc,
        Rsc::INTERNAL_SERVER_ERROR,
        "CREATE on a full disk: {rsp:?}"
    );
    let why = rsp.debug_text().unwrap_or_default();
    assert!(why.contains("full"), "the m2m:dbg says why: {why:?}");
    let rsp = swarm.exchange(
        &swarm.req(Operation::Delete, &csr_path("/id-f0"), "/id-f0"),
        t,
    );
    assert_eq!(
        rsp.rsc,
        Rsc::INTERNAL_SERVER_ERROR,
        "DELETE on a full disk: {rsp:?}"
    );
    assert!(
        rsp.debug_text().unwrap_or_default().contains("full"),
        "{rsp:?}"
    );
    // Memory agrees with the disk while it is still full.
    let rsp = swarm.exchange(&swarm.retrieve(&csr_path("/id-refused"), "/id-x"), t);
    assert_eq!(rsp.rsc, Rsc::NOT_FOUND, "{rsp:?}");
    let rsp = swarm.exchange(&swarm.retrieve(&csr_path("/id-f0"), "/id-x"), t);
    assert_eq!(rsp.rsc, Rsc::OK, "{rsp:?}");

    std::fs::remove_file(&filler).expect("free space");
    assert!(node.terminate(Duration::from_secs(15)), "SIGTERM: no exit");
    node.restart();
    swarm.ping(Duration::from_secs(30));
    for i in 0..5 {
        let rsp = swarm.exchange(&swarm.retrieve(&csr_path(&format!("/id-f{i}")), "/id-x"), t);
        assert_eq!(rsp.rsc, Rsc::OK, "/id-f{i} after the restart: {rsp:?}");
    }
    let rsp = swarm.exchange(&swarm.retrieve(&csr_path("/id-refused"), "/id-x"), t);
    assert_eq!(rsp.rsc, Rsc::NOT_FOUND, "the refused CREATE: {rsp:?}");

    // With space again, changes go through.
    let rsp = swarm.exchange(&swarm.create_csr("/id-refused"), t);
    assert_eq!(rsp.rsc, Rsc::CREATED, "{rsp:?}");
    let rsp = swarm.exchange(
        &swarm.req(Operation::Delete, &csr_path("/id-f0"), "/id-f0"),
        t,
    );
    assert_eq!(rsp.rsc, Rsc::DELETED, "{rsp:?}");
    let rsp = swarm.exchange(&swarm.retrieve(&csr_path("/id-f0"), "/id-x"), t);
    assert_eq!(rsp.rsc, Rsc::NOT_FOUND, "{rsp:?}");
    drop(node);
}

// ---------------------------------------------------------------------------
// 5. The store of earlier versions.

#[test]
fn a_legacy_json_store_is_imported_once() {
    let broker = Mosquitto::start();
    let data = scratch("legacy-data");
    let old = json!({
        "version": 1,
        "csrs": {
            "id-mn": {
                "ty": 16, "ri": "id-mn", "rn": "id-mn", "pi": "id-in",
                "ct": "20240101T000000", "lt": "20240101T000000",
                "csi": "/id-mn", "cb": "/id-mn/cse-mn", "rr": true, "srv": ["3"],
                "poa": ["mqtt://127.0.0.1:1883"]
            }
        },
        "own_csr_rn": null
    });
    let json_file = data.join("m2mnode-store.json");
    let imported = data.join("m2mnode-store.json.imported");
    std::fs::write(&json_file, serde_json::to_vec_pretty(&old).unwrap()).expect("write");

    let mut node = Node::start("legacy", &in_config(&broker, Some(&data)));
    let swarm = Swarm::connect(&broker, "legacy", false);
    swarm.ping(Duration::from_secs(30));
    let t = Duration::from_secs(30);
    let rsp = swarm.exchange(&swarm.retrieve(&csr_path("/id-mn"), "/id-x"), t);
    assert_eq!(rsp.rsc, Rsc::OK, "{rsp:?}");
    let csr = &rsp.pc.as_ref().expect("pc")["m2m:csr"];
    assert_eq!(csr["csi"], "/id-mn");
    assert_eq!(csr["cb"], "/id-mn/cse-mn");
    assert_eq!(csr["poa"], json!(["mqtt://127.0.0.1:1883"]));
    assert!(!json_file.exists(), "the old file is still there");
    assert!(imported.exists(), "no {}", imported.display());

    // Once: delete the CSR, put the old file back (as if a stop came between
    // the import and the rename), restart: it is not imported again.
    let rsp = swarm.exchange(
        &swarm.req(Operation::Delete, &csr_path("/id-mn"), "/id-mn"),
        t,
    );
    assert_eq!(rsp.rsc, Rsc::DELETED, "{rsp:?}");
    assert!(node.terminate(Duration::from_secs(15)), "SIGTERM: no exit");
    std::fs::copy(&imported, &json_file).expect("copy back");
    node.restart();
    swarm.ping(Duration::from_secs(30));
    let rsp = swarm.exchange(&swarm.retrieve(&csr_path("/id-mn"), "/id-x"), t);
    assert_eq!(rsp.rsc, Rsc::NOT_FOUND, "imported twice: {rsp:?}");
}

// ---------------------------------------------------------------------------
// 6. Two nodes on one data_dir.

#[test]
fn a_second_node_on_the_same_data_dir_refuses_to_start() {
    let broker = Mosquitto::start();
    let data = scratch("lock-data");
    let config = in_config(&broker, Some(&data));
    let node = Node::start("lock", &config);
    let swarm = Swarm::connect(&broker, "lock", false);
    swarm.ping(Duration::from_secs(30));
    let t = Duration::from_secs(30);
    let rsp = swarm.exchange(&swarm.create_csr("/id-one"), t);
    assert_eq!(rsp.rsc, Rsc::CREATED, "{rsp:?}");

    let cfg = node.dir.join("second.toml");
    std::fs::write(&cfg, &config).expect("config");
    let mut second = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second node");
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = second.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= end {
            let _ = second.kill();
            let _ = second.wait();
            panic!("the second node did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "the second node exited with {status}");
    let lock = data.join("m2mnode.lock");
    assert!(
        stderr.contains(&*lock.to_string_lossy()) && stderr.contains("in use"),
        "stderr names the lock: {stderr:?}"
    );

    // The first one keeps answering, with its state.
    let rsp = swarm.exchange(&swarm.retrieve(&csr_path("/id-one"), "/id-x"), t);
    assert_eq!(rsp.rsc, Rsc::OK, "{rsp:?}");
    let rsp = swarm.exchange(&swarm.create_csr("/id-two"), t);
    assert_eq!(rsp.rsc, Rsc::CREATED, "{rsp:?}");
}

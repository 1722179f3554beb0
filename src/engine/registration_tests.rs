//! Simulated-time tests of the registration machine. The peer is the real
//! registrar core (also pure), so these runs exercise both halves of a
//! registration without a broker or a clock.

use super::*;
use crate::engine::registrar::{Outcome, Registrar};
use crate::time::Timestamp;
use proptest::prelude::*;
use serde_json::Value;

const CHECK: Duration = Duration::from_secs(60);

fn cfg(seed: u64) -> RegistreeConfig {
    RegistreeConfig {
        own: CseId::new("/id-mn").expect("id"),
        registrar: CseId::new("/id-in").expect("id"),
        registrar_rn: "cse-in".into(),
        check_interval: CHECK,
        request_timeout: Duration::from_secs(10),
        seed,
    }
}

fn want(dcse: &[&str]) -> OwnCsr {
    OwnCsr {
        cb: "/id-mn/cse-mn".into(),
        cst: 2,
        srv: vec!["3".into(), "4".into()],
        poa: vec!["mqtt://127.0.0.1:1883".into()],
        csz: vec!["application/json".into()],
        dcse: dcse.iter().map(|s| s.to_string()).collect(),
        lbl: vec![],
        nl: None,
    }
}

fn registrar() -> Registrar {
    let cfg = crate::config::Config::from_str(
        "[cse]\nid = \"/id-in\"\nname = \"cse-in\"\ntype = \"IN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n",
        std::path::Path::new("test.toml"),
    )
    .expect("config");
    Registrar::new(cfg.registrar_settings(Timestamp::from_secs(1_700_000_000)))
}

/// How the registrar differs from the real registrar core.
#[derive(Default)]
struct Quirks {
    /// A CREATE or UPDATE carrying any of these is refused with 4000 and
    /// no name (Mobius as shipped with `csz`, `dcse`).
    refuse: Vec<&'static str>,
    /// Taken but not stored (Mobius edited to accept `csz`, `dcse`).
    unkept: Vec<&'static str>,
    /// Every UPDATE is refused with this.
    refuse_updates: Option<Rsc>,
    /// Every DELETE is refused with this.
    refuse_deletes: Option<Rsc>,
    /// Stored as this, whatever was sent (a registrar that rewrites it).
    rewrite: Option<(&'static str, Value)>,
}

/// The world: the machine, its registrar, the local registrar CSR, a clock.
struct World {
    m: Registration,
    peer: Registrar,
    now: Now,
    /// The registrar answers; false: every request times out (4008).
    peer_up: bool,
    local_csr: Option<RemoteCse>,
    quirks: Quirks,
    creates: usize,
    sent: Vec<Request>,
    events: Vec<Action>,
    stopped: bool,
}

impl World {
    fn new(seed: u64) -> World {
        World {
            m: Registration::new(cfg(seed), want(&[])),
            peer: registrar(),
            now: Now::at(Timestamp::from_secs(1_700_000_000)),
            peer_up: true,
            local_csr: None,
            quirks: Quirks::default(),
            creates: 0,
            sent: vec![],
            events: vec![],
            stopped: false,
        }
    }

    fn input(&mut self, i: Input) {
        self.m.handle(i, self.now);
        self.drain();
    }

    /// Carries out actions; requests are answered at once (or time out).
    fn drain(&mut self) {
        let mut budget = 64;
        while let Some(a) = self.m.poll_action() {
            budget -= 1;
            assert!(
                budget > 0,
                "request storm: {:?}",
                self.sent
                    .iter()
                    .rev()
                    .take(6)
                    .map(|r| (r.op, &r.to))
                    .collect::<Vec<_>>()
            );
            match a {
                Action::Send(req) => {
                    self.sent.push(req.clone());
                    let rsp = if self.peer_up {
                        if req.op == Operation::Create {
                            self.creates += 1;
                        }
                        match self.quirk(&req) {
                            Ok(req) => match self.peer.handle(&req, "/id-mn", self.now.wall) {
                                Outcome::Respond { response, .. } => response,
                                Outcome::Forward { .. } => {
                                    panic!("registrar forwarded a registration request")
                                }
                            },
                            Err(refusal) => *refusal,
                        }
                    } else {
                        self.now = self.now.plus(Duration::from_secs(10));
                        Response::error(Rsc::REQUEST_TIMEOUT, &req.rqi, "timeout")
                    };
                    self.m.handle(Input::Response(rsp), self.now);
                }
                Action::StoreRegistrarCsr(c) => self.local_csr = Some(c),
                Action::RemoveRegistrarCsr => self.local_csr = None,
                Action::Stopped => self.stopped = true,
                other => self.events.push(other),
            }
        }
    }

    /// The request as the quirky registrar takes it, or its refusal.
    fn quirk(&self, req: &Request) -> Result<Request, Box<Response>> {
        let q = &self.quirks;
        let mut req = req.clone();
        let refused = match req.op {
            Operation::Update => q.refuse_updates,
            Operation::Delete => q.refuse_deletes,
            _ => None,
        };
        if let Some(rsc) = refused {
            return Err(Box::new(Response::error(rsc, &req.rqi, "no")));
        }
        if let Some(Value::Object(csr)) = req.pc.as_mut().and_then(|pc| pc.get_mut("m2m:csr")) {
            if q.refuse.iter().any(|k| csr.contains_key(*k)) {
                return Err(Box::new(Response::error(
                    Rsc::BAD_REQUEST,
                    &req.rqi,
                    "BAD REQUEST: attribute is not defined",
                )));
            }
            csr.retain(|k, _| !q.unkept.contains(&k.as_str()));
            if let Some((k, v)) = &q.rewrite {
                csr.insert((*k).into(), v.clone());
            }
        }
        Ok(req)
    }

    fn updates(&self) -> usize {
        self.sent
            .iter()
            .filter(|r| r.op == Operation::Update)
            .count()
    }

    /// Advances the clock to the next timer and fires it.
    fn tick(&mut self) {
        let t = self.m.poll_timeout().expect("a timer is armed");
        self.now = self.now.advance_to(t);
        self.input(Input::Timer);
    }

    fn own_csrs_at_peer(&self) -> usize {
        self.peer
            .store()
            .iter()
            .filter(|(_, c)| c.csi() == Some("/id-mn"))
            .count()
    }

    fn ops(&self) -> Vec<Operation> {
        self.sent.iter().map(|r| r.op).collect()
    }
}

#[test]
fn fresh_start_cleans_stale_then_creates_then_fetches_the_registrar_base() {
    let mut w = World::new(1);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    assert_eq!(
        w.ops(),
        [Operation::Delete, Operation::Create, Operation::Retrieve]
    );
    assert_eq!(w.sent[0].to, "/id-in/cse-in/id-mn");
    assert_eq!(w.sent[1].to, "/id-in/cse-in");
    assert_eq!(w.sent[1].ty, Some(ResourceType::REMOTE_CSE));
    let body = &w.sent[1].pc.as_ref().expect("pc")["m2m:csr"];
    for k in ["cb", "csi", "rr", "srv", "cst", "poa", "csz", "dcse"] {
        assert!(body.get(k).is_some(), "CREATE lacks {k}");
    }
    assert_eq!(w.sent[2].to, "/id-in/cse-in");
    assert!(w.m.is_registered());
    assert_eq!(w.m.phase(), &Phase::Registered);
    let local = w.local_csr.as_ref().expect("local registrar CSR");
    assert_eq!(local.csi.as_deref(), Some("/id-in"));
    assert_eq!(local.cb.as_deref(), Some("/id-in/cse-in"));
    assert!(w.events.contains(&Action::Registered));
    assert_eq!(w.m.poll_timeout(), Some(w.now.mono + CHECK));
}

#[test]
fn every_request_carries_fr_rvi_and_an_expiry() {
    let mut w = World::new(2);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    for r in &w.sent {
        assert_eq!(r.fr.as_deref(), Some("/id-mn"));
        assert_eq!(r.rvi.as_deref(), Some(OWN_RVI));
        assert!(r.rqet.is_some());
    }
    let rqis: std::collections::HashSet<_> = w.sent.iter().map(|r| &r.rqi).collect();
    assert_eq!(rqis.len(), w.sent.len(), "rqis are unique");
}

#[test]
fn a_check_that_finds_the_csr_keeps_the_registration() {
    let mut w = World::new(3);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    w.sent.clear();
    w.tick();
    assert_eq!(w.ops(), [Operation::Retrieve]);
    assert_eq!(w.sent[0].to, "/id-in/cse-in/id-mn");
    assert!(w.m.is_registered());
}

#[test]
fn a_check_without_answer_keeps_state_and_tries_next_interval() {
    let mut w = World::new(4);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    w.peer_up = false;
    w.tick();
    assert!(w.m.is_registered());
    assert!(w.local_csr.is_some());
    assert_eq!(w.m.phase(), &Phase::Registered);
}

#[test]
fn target_not_reachable_keeps_state_too() {
    let mut w = World::new(5);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    w.now = w.now.advance_to(w.m.poll_timeout().expect("timer"));
    w.m.handle(Input::Timer, w.now);
    let Some(Action::Send(req)) = w.m.poll_action() else {
        panic!("no check sent")
    };
    w.m.handle(
        Input::Response(Response::new(Rsc::TARGET_NOT_REACHABLE, req.rqi)),
        w.now,
    );
    assert!(w.m.is_registered());
    assert_eq!(
        w.m.poll_action(),
        Some(Action::CheckUnanswered { times: 1 }),
        "said, not acted on"
    );
    assert_eq!(w.m.poll_action(), None);
}

#[test]
fn a_registrar_reset_means_register_again() {
    let mut w = World::new(6);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    w.peer = registrar();
    w.events.clear();
    w.sent.clear();
    w.tick();
    // 4004 on the check: drop the local CSR, CREATE again, fetch the base.
    assert_eq!(
        w.ops(),
        [Operation::Retrieve, Operation::Create, Operation::Retrieve]
    );
    assert!(w.events.iter().any(|a| matches!(
        a,
        Action::Lost {
            answer: Some((Rsc::NOT_FOUND, _))
        }
    )));
    assert!(w.events.contains(&Action::Registered));
    assert!(w.m.is_registered());
    assert_eq!(w.own_csrs_at_peer(), 1);
    assert!(w.local_csr.is_some());
}

#[test]
fn an_existing_csr_is_adopted_not_recreated() {
    let mut w = World::new(7);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    // A second run of the node that lost its data but kept its CSE-ID: its
    // stale CSR is cleared first (ACME), so exactly one CREATE follows.
    let mut again = World::new(8);
    again.peer = std::mem::replace(&mut w.peer, registrar());
    again.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    assert_eq!(
        again.ops(),
        [Operation::Delete, Operation::Create, Operation::Retrieve]
    );
    assert_eq!(again.own_csrs_at_peer(), 1);

    // A node restarted with its data adopts: RETRIEVE, UPDATE, no CREATE.
    let mut kept = World::new(9);
    kept.peer = std::mem::replace(&mut again.peer, registrar());
    kept.input(Input::Start {
        adopt: true,
        remote_rn: Some("id-mn".into()),
    });
    assert_eq!(
        kept.ops(),
        [Operation::Retrieve, Operation::Update, Operation::Retrieve]
    );
    assert_eq!(kept.creates, 0);
    assert!(kept.m.is_registered());
}

#[test]
fn conflict_on_create_adopts_the_existing_csr() {
    let mut w = World::new(10);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    // Pretend the stale-cleanup DELETE was refused so CREATE meets 4105.
    let mut w2 = World::new(11);
    w2.peer = std::mem::replace(&mut w.peer, registrar());
    w2.m.handle(
        Input::Start {
            adopt: false,
            remote_rn: None,
        },
        w2.now,
    );
    let Some(Action::Send(del)) = w2.m.poll_action() else {
        panic!()
    };
    assert_eq!(del.op, Operation::Delete);
    w2.m.handle(
        Input::Response(Response::new(Rsc::ORIGINATOR_HAS_NO_PRIVILEGE, del.rqi)),
        w2.now,
    );
    w2.drain();
    assert_eq!(
        w2.ops(),
        [
            Operation::Create,
            Operation::Retrieve,
            Operation::Update,
            Operation::Retrieve
        ]
    );
    assert_eq!(w2.own_csrs_at_peer(), 1);
    assert!(w2.m.is_registered());
}

#[test]
fn an_unreachable_registrar_is_retried_with_bounded_backoff() {
    let mut w = World::new(12);
    w.peer_up = false;
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    let mut last_gap = Duration::ZERO;
    for _ in 0..20 {
        let before = w.now;
        let t = w.m.poll_timeout().expect("retry armed");
        let gap = t.saturating_duration_since(before.mono);
        assert!(gap <= CHECK, "backoff {gap:?} exceeds the check interval");
        last_gap = gap;
        w.tick();
    }
    assert!(
        last_gap >= CHECK.mul_f64(0.75),
        "backoff grows to the interval: {last_gap:?}"
    );
    assert_eq!(w.creates, 0);
    w.peer_up = true;
    w.tick();
    assert!(w.m.is_registered());
}

#[test]
fn descendants_changes_update_the_remote_csr() {
    let mut w = World::new(13);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    w.sent.clear();
    w.input(Input::OwnCsrChanged(want(&["/id-asn"])));
    assert_eq!(w.ops(), [Operation::Update]);
    let csr = w.peer.store().by_csi("/id-mn").expect("csr").1;
    assert_eq!(csr.dcse(), ["/id-asn"]);
    // The same again changes nothing.
    w.input(Input::OwnCsrChanged(want(&["/id-asn"])));
    assert_eq!(w.sent.len(), 1);
}

#[test]
fn a_change_during_a_request_is_not_lost() {
    let mut w = World::new(14);
    w.m.handle(
        Input::Start {
            adopt: false,
            remote_rn: None,
        },
        w.now,
    );
    // The DELETE is in flight when a registree appears below us.
    w.m.handle(Input::OwnCsrChanged(want(&["/id-asn"])), w.now);
    w.drain();
    let csr = w.peer.store().by_csi("/id-mn").expect("csr").1;
    assert_eq!(csr.dcse(), ["/id-asn"]);
}

#[test]
fn a_check_that_finds_a_stale_csr_updates_it() {
    let mut w = World::new(15);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    if let Some((ri, _)) = w
        .peer
        .store()
        .by_csi("/id-mn")
        .map(|(r, c)| (r.clone(), c.clone()))
    {
        if let Some(mut c) = w.peer.store().get(&ri).cloned() {
            c.poa = Some(vec!["mqtt://elsewhere".into()]);
            w.peer.store_mut().insert(ri, c);
        }
    }
    w.sent.clear();
    w.tick();
    assert_eq!(w.ops(), [Operation::Retrieve, Operation::Update]);
    let csr = w.peer.store().by_csi("/id-mn").expect("csr").1;
    assert_eq!(
        csr.poa.as_deref(),
        Some(&["mqtt://127.0.0.1:1883".to_string()][..])
    );
}

#[test]
fn shutdown_deletes_remote_then_local() {
    let mut w = World::new(16);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    w.sent.clear();
    w.input(Input::Shutdown);
    assert_eq!(w.ops(), [Operation::Delete]);
    assert_eq!(w.own_csrs_at_peer(), 0);
    assert!(w.local_csr.is_none());
    assert!(w.stopped);
    assert!(w.events.contains(&Action::Deregistered { confirmed: true }));
    assert!(!w.m.is_registered());
}

#[test]
fn shutdown_with_an_unreachable_registrar_still_stops() {
    let mut w = World::new(17);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    w.peer_up = false;
    w.input(Input::Shutdown);
    assert!(w.stopped);
    assert!(w.local_csr.is_none());
}

#[test]
fn shutdown_while_a_create_is_unanswered_still_deletes() {
    let mut w = World::new(20);
    w.m.handle(
        Input::Start {
            adopt: false,
            remote_rn: None,
        },
        w.now,
    );
    let Some(Action::Send(del)) = w.m.poll_action() else {
        panic!("no cleanup sent")
    };
    w.m.handle(
        Input::Response(Response::new(Rsc::NOT_FOUND, del.rqi)),
        w.now,
    );
    let Some(Action::Send(create)) = w.m.poll_action() else {
        panic!("no CREATE sent")
    };
    assert_eq!(create.op, Operation::Create);
    // The registrar executes the CREATE, but the node stops before the answer.
    let _ = w.peer.handle(&create, "/id-mn", w.now.wall);
    w.input(Input::Shutdown);
    assert_eq!(w.ops(), [Operation::Delete]);
    assert_eq!(
        w.own_csrs_at_peer(),
        0,
        "no orphan CSR left at the registrar"
    );
    assert!(w.stopped);
}

#[test]
fn shutdown_before_start_stops_at_once() {
    let mut w = World::new(18);
    w.input(Input::Shutdown);
    assert!(w.stopped);
    assert!(w.sent.is_empty());
}

#[test]
fn late_answers_are_ignored() {
    let mut w = World::new(19);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    let before = w.m.phase().clone();
    w.input(Input::Response(Response::new(
        Rsc::NOT_FOUND,
        "someone-else",
    )));
    assert_eq!(w.m.phase(), &before);
    assert!(w.m.is_registered());
}

#[derive(Clone, Debug)]
enum Fault {
    Nothing,
    RegistrarDown,
    RegistrarUp,
    RegistrarReset,
    Registree(bool),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::Nothing),
        1 => Just(Fault::RegistrarDown),
        2 => Just(Fault::RegistrarUp),
        1 => Just(Fault::RegistrarReset),
        1 => any::<bool>().prop_map(Fault::Registree),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A week of checks with random faults: never two CSRs at the registrar,
    /// at most one local registrar CSR, no CREATE while the CSR exists, and
    /// registered again within one interval (plus one answer timeout) once
    /// the registrar answers again.
    #[test]
    fn a_week_of_faults(seed in any::<u64>(), faults in prop::collection::vec(fault(), 10_080)) {
        let mut w = World::new(seed);
        w.input(Input::Start { adopt: false, remote_rn: None });
        let mut up_since: Option<Now> = Some(w.now);
        for f in faults {
            match f {
                Fault::Nothing => {}
                Fault::RegistrarDown => { w.peer_up = false; up_since = None; }
                Fault::RegistrarUp => { if !w.peer_up { up_since = Some(w.now); } w.peer_up = true; }
                Fault::RegistrarReset => { w.peer = registrar(); up_since = Some(w.now); }
                Fault::Registree(on) => {
                    w.input(Input::OwnCsrChanged(want(if on { &["/id-asn"] } else { &[] })));
                }
            }
            w.sent.clear();
            w.events.clear();
            let creates_before = w.creates;
            let existed = w.own_csrs_at_peer() == 1;
            w.tick();
            prop_assert!(w.own_csrs_at_peer() <= 1);
            if existed && w.peer_up {
                prop_assert_eq!(w.creates, creates_before, "CREATE while the CSR existed");
            }
            if let (true, Some(since)) = (w.peer_up, up_since) {
                if w.now.mono.saturating_duration_since(since.mono) > CHECK + Duration::from_secs(21) {
                    prop_assert!(w.m.is_registered(), "not registered {:?} after the registrar came back", w.now.mono.saturating_duration_since(since.mono));
                    prop_assert_eq!(w.own_csrs_at_peer(), 1);
                    prop_assert!(w.local_csr.is_some());
                }
            }
        }
        w.peer_up = true;
        w.input(Input::Shutdown);
        prop_assert!(w.stopped);
    }
}

#[test]
fn a_squatted_name_is_reported_and_retried_with_backoff() {
    let mut w = World::new(31);
    // Another CSE registered first under our rn.
    let mut squat = Request::new(Operation::Create, "/id-in/cse-in", "/id-sq", "sq");
    squat.ty = Some(ResourceType::REMOTE_CSE);
    squat.rvi = Some("3".into());
    squat.pc = Some(serde_json::json!({"m2m:csr": {
        "rn": "id-mn", "csi": "/id-sq", "cb": "/id-sq/cb", "rr": true, "srv": ["3"]}}));
    let Outcome::Respond { response, .. } = w.peer.handle(&squat, "/id-sq", w.now.wall) else {
        panic!("forwarded")
    };
    assert_eq!(response.rsc, Rsc::CREATED);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    for _ in 0..200 {
        w.tick();
    }
    let start = w.sent.len();
    let t = w.now;
    for _ in 0..100 {
        w.tick();
    }
    let intervals =
        w.now.mono.saturating_duration_since(t.mono).as_secs_f64() / CHECK.as_secs_f64();
    let per_interval = (w.sent.len() - start) as f64 / intervals;
    assert!(
        per_interval <= 3.0,
        "{per_interval} requests per check interval"
    );
    assert!(!w.m.is_registered());
    assert!(
        !w.sent.iter().any(|r| r.op == Operation::Update),
        "never updates the squatter's CSR"
    );
    let said = w
        .events
        .iter()
        .filter(|a| matches!(a, Action::Squatted { csi, .. } if csi == "/id-sq"))
        .count();
    assert_eq!(said, 1, "said once, not on every retry");
}

fn refusal() -> impl Strategy<Value = Rsc> {
    prop_oneof![
        Just(Rsc::NOT_FOUND),
        Just(Rsc::ORIGINATOR_HAS_NO_PRIVILEGE),
        Just(Rsc::CONFLICT),
        Just(Rsc::BAD_REQUEST),
        Just(Rsc::INTERNAL_SERVER_ERROR),
        Just(Rsc::SECURITY_ASSOCIATION_REQUIRED),
        Just(Rsc::OPERATION_NOT_ALLOWED),
        Just(Rsc::REQUEST_TIMEOUT),
        Just(Rsc::TARGET_NOT_REACHABLE),
        // "Found", but it is somebody else's CSR.
        Just(Rsc::OK),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A registrar that refuses everything, in any order, gets a few
    /// requests per check interval, never a storm.
    #[test]
    fn any_sequence_of_refusals_is_paced(seed in any::<u64>(), answers in prop::collection::vec(refusal(), 400)) {
        let mut m = Registration::new(cfg(seed), want(&[]));
        let t0 = Now::at(Timestamp::from_secs(1_700_000_000));
        let mut now = t0;
        m.handle(Input::Start { adopt: false, remote_rn: None }, now);
        let mut sent_at: Vec<Duration> = Vec::new();
        let mut answers = answers.into_iter().cycle();
        for _ in 0..2_000 {
            while let Some(a) = m.poll_action() {
                if let Action::Send(req) = a {
                    sent_at.push(now.mono - t0.mono);
                    let rsc = answers.next().unwrap_or(Rsc::NOT_FOUND);
                    let mut rsp = Response::new(rsc, req.rqi.clone());
                    if rsc == Rsc::OK {
                        rsp.pc = Some(serde_json::json!({"m2m:csr": {"rn": "id-mn", "csi": "/id-squatter"}}));
                    }
                    m.handle(Input::Response(rsp), now);
                }
            }
            prop_assert!(!m.is_registered());
            let Some(t) = m.poll_timeout() else { break };
            now = now.advance_to(t);
            m.handle(Input::Timer, now);
        }
        // After the first two intervals (the exponential part of the
        // backoff), no interval sees more than two retries of three steps.
        let end = now.mono - t0.mono;
        let mut k = 2;
        while CHECK * (k + 1) <= end {
            let n = sent_at.iter().filter(|t| **t >= CHECK * k && **t < CHECK * (k + 1)).count();
            prop_assert!(n <= 6, "{n} requests in interval {k}");
            k += 1;
        }
        prop_assert!(k > 20, "ran {k} intervals");
        let first = sent_at.iter().filter(|t| **t < CHECK * 2).count();
        prop_assert!(first <= 30, "{first} requests in the first two intervals");
    }
}

fn csr_keys(req: &Request) -> Vec<String> {
    req.pc
        .as_ref()
        .and_then(|pc| pc["m2m:csr"].as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn mobius_world(seed: u64) -> World {
    let mut w = World::new(seed);
    w.quirks.refuse = vec!["csz", "dcse"];
    w
}

#[test]
fn a_registrar_that_refuses_optional_attributes_takes_the_csr_without_them_and_that_is_kept() {
    let mut w = mobius_world(40);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    assert_eq!(
        w.ops(),
        [
            Operation::Delete,
            Operation::Create,
            Operation::Create,
            Operation::Retrieve
        ]
    );
    assert!(csr_keys(&w.sent[1]).contains(&"csz".to_string()));
    let second = csr_keys(&w.sent[2]);
    for k in ["cb", "csi", "rr", "srv", "poa", "cst"] {
        assert!(second.contains(&k.to_string()), "the trial lacks {k}");
    }
    assert!(!second.contains(&"csz".into()) && !second.contains(&"dcse".into()));
    assert!(w.m.is_registered());
    let memo = RegistrarMemo {
        refused: vec!["csz".into(), "dcse".into()],
    };
    assert!(w.events.contains(&Action::AttributesRefused {
        attributes: vec!["csz".into(), "dcse".into()],
        answer: Some((
            Rsc::BAD_REQUEST,
            "BAD REQUEST: attribute is not defined".into()
        )),
        memo: memo.clone(),
    }));
    assert_eq!(w.m.memo(), memo);

    // A change of a left-out attribute only is not sent; a real one once.
    w.sent.clear();
    w.input(Input::OwnCsrChanged(want(&["/id-asn"])));
    assert!(w.sent.is_empty(), "{:?}", w.ops());
    let mut moved = want(&["/id-asn"]);
    moved.poa = vec!["mqtt://elsewhere:1883".into()];
    w.input(Input::OwnCsrChanged(moved));
    assert_eq!(w.ops(), [Operation::Update]);
    assert!(!csr_keys(&w.sent[0]).contains(&"csz".into()));
    assert!(w.m.is_registered());

    // The next run knows: one CREATE, without them, straight away.
    let mut next = mobius_world(41);
    next.peer = std::mem::replace(&mut w.peer, registrar());
    next.m.restore(&memo);
    next.input(Input::Start {
        adopt: false,
        remote_rn: Some("id-mn".into()),
    });
    assert_eq!(
        next.ops(),
        [Operation::Delete, Operation::Create, Operation::Retrieve]
    );
    assert!(!csr_keys(&next.sent[1]).contains(&"csz".into()));
    assert!(!next
        .events
        .iter()
        .any(|a| matches!(a, Action::AttributesRefused { .. } | Action::Retry { .. })));
}

#[test]
fn a_refusal_that_names_a_required_attribute_is_not_tried_without_optional_ones() {
    let mut w = World::new(42);
    w.m.handle(
        Input::Start {
            adopt: false,
            remote_rn: None,
        },
        w.now,
    );
    let Some(Action::Send(del)) = w.m.poll_action() else {
        panic!("no cleanup")
    };
    w.m.handle(
        Input::Response(Response::new(Rsc::NOT_FOUND, del.rqi)),
        w.now,
    );
    let Some(Action::Send(create)) = w.m.poll_action() else {
        panic!("no CREATE")
    };
    w.m.handle(
        Input::Response(Response::error(
            Rsc::BAD_REQUEST,
            &create.rqi,
            "attribute poa: not a list",
        )),
        w.now,
    );
    assert!(matches!(
        w.m.poll_action(),
        Some(Action::Retry {
            step: Step::Create,
            answer: Some((Rsc::BAD_REQUEST, _)),
            ..
        })
    ));
    assert_eq!(w.m.poll_action(), None, "no second CREATE now");
}

#[test]
fn a_registrar_that_refuses_even_the_required_attributes_sees_one_trial_per_attempt() {
    let mut w = World::new(43);
    w.quirks.refuse = vec!["csi"];
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    for _ in 0..30 {
        w.tick();
    }
    let creates = w.ops().iter().filter(|o| **o == Operation::Create).count();
    let attempts = w
        .events
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Retry {
                    step: Step::Create,
                    ..
                }
            )
        })
        .count();
    assert_eq!(creates, 2 * attempts, "one trial per attempt, no more");
    assert!(!w.m.is_registered());
    assert_eq!(w.m.memo(), RegistrarMemo::default(), "nothing learned");
}

#[test]
fn five_checks_at_a_registrar_that_does_not_keep_csz_and_dcse_make_no_update() {
    let mut w = World::new(44);
    w.quirks.unkept = vec!["csz", "dcse"];
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    assert!(w.m.is_registered());
    w.sent.clear();
    for _ in 0..5 {
        w.tick();
    }
    assert_eq!(w.ops(), [Operation::Retrieve; 5]);
    // A real change: one UPDATE, then quiet again.
    w.sent.clear();
    w.input(Input::OwnCsrChanged(want(&["/id-asn"])));
    for _ in 0..5 {
        w.tick();
    }
    assert_eq!(w.updates(), 1, "{:?}", w.ops());
    assert!(w.m.is_registered());
}

#[test]
fn a_registrar_that_keeps_something_else_is_updated_once_not_on_every_check() {
    let mut w = World::new(45);
    w.quirks.rewrite = Some(("srv", serde_json::json!(["3"])));
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    w.sent.clear();
    for _ in 0..5 {
        w.tick();
    }
    assert!(w.updates() <= 1, "{:?}", w.ops());
    assert!(w.m.is_registered());
}

#[test]
fn an_adopted_csr_at_mobius_is_updated_without_what_it_refuses() {
    let mut w = World::new(46);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    let mut kept = mobius_world(47);
    kept.peer = std::mem::replace(&mut w.peer, registrar());
    kept.input(Input::Start {
        adopt: true,
        remote_rn: Some("id-mn".into()),
    });
    assert_eq!(
        kept.ops(),
        [
            Operation::Retrieve,
            Operation::Update,
            Operation::Update,
            Operation::Retrieve
        ]
    );
    assert!(kept.m.is_registered());
    assert_eq!(kept.creates, 0);
    assert!(kept
        .events
        .iter()
        .any(|a| matches!(a, Action::AttributesRefused { attributes, .. } if attributes == &["csz", "dcse"])));
}

#[test]
fn an_adopted_csr_that_cannot_be_updated_is_replaced_once_with_the_step_named() {
    let mut w = World::new(48);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    let mut kept = World::new(49);
    kept.peer = std::mem::replace(&mut w.peer, registrar());
    kept.quirks.refuse_updates = Some(Rsc::ORIGINATOR_HAS_NO_PRIVILEGE);
    kept.input(Input::Start {
        adopt: true,
        remote_rn: Some("id-mn".into()),
    });
    assert_eq!(kept.ops(), [Operation::Retrieve, Operation::Update]);
    assert!(
        matches!(
            kept.events.last(),
            Some(Action::Retry {
                step: Step::Update,
                answer: Some((Rsc::ORIGINATOR_HAS_NO_PRIVILEGE, _)),
                ..
            })
        ),
        "{:?}",
        kept.events
    );
    assert!(!kept.m.is_registered());
    // After the backoff: DELETE, CREATE, the registrar's base. Registered.
    kept.tick();
    assert_eq!(
        kept.ops()[2..],
        [Operation::Delete, Operation::Create, Operation::Retrieve]
    );
    assert!(kept.m.is_registered());
    assert_eq!(kept.own_csrs_at_peer(), 1);
    // Checks do not UPDATE (nothing differs), so nothing is refused again.
    kept.sent.clear();
    for _ in 0..5 {
        kept.tick();
    }
    assert_eq!(kept.ops(), [Operation::Retrieve; 5]);
}

#[test]
fn an_adopted_csr_refused_again_after_the_replacement_backs_off_without_a_create_loop() {
    let mut w = World::new(50);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    let mut kept = World::new(51);
    kept.peer = std::mem::replace(&mut w.peer, registrar());
    // The registrar takes no UPDATE and no DELETE: the replacement cannot
    // delete the CSR, and every CREATE meets it (4105).
    kept.quirks.refuse_updates = Some(Rsc::ORIGINATOR_HAS_NO_PRIVILEGE);
    kept.quirks.refuse_deletes = Some(Rsc::ORIGINATOR_HAS_NO_PRIVILEGE);
    kept.input(Input::Start {
        adopt: true,
        remote_rn: Some("id-mn".into()),
    });
    let t0 = kept.now;
    for _ in 0..60 {
        kept.tick();
    }
    assert!(!kept.m.is_registered());
    assert_eq!(kept.creates, 1, "one CREATE (the replacement), no loop");
    let hours = kept
        .now
        .mono
        .saturating_duration_since(t0.mono)
        .as_secs_f64()
        / 3600.0;
    let per_interval = kept.sent.len() as f64 / (hours * 3600.0 / CHECK.as_secs_f64());
    assert!(per_interval <= 6.0, "{per_interval} requests per interval");
    assert!(kept.events.iter().all(|a| !matches!(
        a,
        Action::Retry {
            step: Step::Create,
            ..
        }
    )));
    assert!(kept.events.iter().any(|a| matches!(
        a,
        Action::Retry {
            step: Step::Update,
            ..
        }
    )));
    // SIGTERM in that state still tries the DELETE.
    kept.sent.clear();
    kept.input(Input::Shutdown);
    assert_eq!(kept.ops(), [Operation::Delete]);
}

#[test]
fn shutdown_in_a_backoff_after_a_refused_update_deletes_the_held_csr() {
    let mut w = World::new(52);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    let mut kept = World::new(53);
    kept.peer = std::mem::replace(&mut w.peer, registrar());
    kept.quirks.refuse_updates = Some(Rsc::BAD_REQUEST);
    kept.input(Input::Start {
        adopt: true,
        remote_rn: Some("id-mn".into()),
    });
    assert!(matches!(kept.m.phase(), Phase::Backoff { .. }));
    assert!(!kept.m.is_registered());
    kept.sent.clear();
    kept.input(Input::Shutdown);
    assert_eq!(kept.ops(), [Operation::Delete]);
    assert_eq!(kept.sent[0].to, "/id-in/cse-in/id-mn");
    assert_eq!(kept.own_csrs_at_peer(), 0, "nothing left behind");
    assert!(kept.stopped);
}

#[test]
fn an_unconfirmed_deregistration_keeps_the_name_and_the_next_start_deletes_first() {
    let mut w = World::new(54);
    w.input(Input::Start {
        adopt: false,
        remote_rn: None,
    });
    w.peer_up = false;
    w.events.clear();
    w.input(Input::Shutdown);
    assert!(w.stopped);
    assert!(w
        .events
        .contains(&Action::Deregistered { confirmed: false }));
    assert!(
        !w.events.contains(&Action::RemoteCsrName(None)),
        "the name stays in the store"
    );
    assert!(w.local_csr.is_none());
    assert_eq!(w.own_csrs_at_peer(), 1, "left behind while it was down");

    // The next start (the store kept the name, not the local registrar
    // CSR): the DELETE comes before anything else, then a fresh CREATE.
    let mut next = World::new(55);
    next.peer = std::mem::replace(&mut w.peer, registrar());
    next.input(Input::Start {
        adopt: false,
        remote_rn: Some("id-mn".into()),
    });
    assert_eq!(next.sent[0].op, Operation::Delete);
    assert_eq!(next.sent[0].to, "/id-in/cse-in/id-mn");
    assert_eq!(
        next.ops(),
        [Operation::Delete, Operation::Create, Operation::Retrieve]
    );
    assert_eq!(next.own_csrs_at_peer(), 1);
    assert!(next.m.is_registered());
}

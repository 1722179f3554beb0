//! Other service providers (Mcc', docs/protocol.md §13): one registration
//! machine per peer SP's IN-CSE (the same machine as for the own registrar,
//! registration.rs), the IDs made absolute on the way out and mapped back
//! on the way in (TS-0001 7.2, 7.3), and the gate every request passes that
//! decides which SP its hop speaks for (the hop is the identity: a peer
//! SP's IN vouches only for its own SP, a local hop never for another SP).

use super::forwards::Purpose;
use super::registration::{Action, Input, Phase};
use super::upstream::Upstream;
use super::{Engine, Event, Transmit, UpstreamSettings};
use crate::id::{foreign_rn, split_absolute, CseId};
use crate::primitive::{Format, Request, Response, Rsc};
use crate::time::Now;
use crate::topic::{Link, Route};
use serde_json::{json, Value};
use std::time::Duration;

/// How the IDs of this CSE and a peer SP's IN appear in the topics between
/// them (TS-0010 6.4.2/6.4.3; docs/protocol.md §13.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TopicIds {
    /// `:sp-a.example:id-in-a`, the TS-0010 form of an absolute CSE-ID.
    #[default]
    Absolute,
    /// The bare CSE-ID (`id-in-b`): what ACME listens on.
    SpRelative,
}

/// The IDs a request topic names: `/oneM2M/req/<from>/<to>/<type>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HopIds {
    pub from: String,
    pub to: String,
}

/// One `[sp_registrar.<name>]`, typed.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerSettings {
    pub name: String,
    /// The peer's SP-ID without slashes.
    pub sp_id: String,
    /// The peer IN-CSE's SP-relative CSE-ID.
    pub id: CseId,
    /// Its CSEBase resourceName.
    pub rn: String,
    pub check_interval: Duration,
    pub topic_ids: TopicIds,
    /// The link it is reached on: [`Link::LOCAL`], or one of its own.
    pub link: Link,
    /// The own `<remoteCSE>`'s `poa` there, when not the CSEBase's.
    pub poa: Option<Vec<String>>,
}

impl PeerSettings {
    /// `//sp-b.example/id-in-b`.
    pub fn absolute(&self) -> String {
        format!("//{}{}", self.sp_id, self.id)
    }
}

/// A peer SP and the registration there.
pub(crate) struct Peer {
    pub(crate) settings: PeerSettings,
    pub(crate) up: Upstream,
    pub(crate) stopped: bool,
    /// Removed or changed by a reload: deregistering, then gone.
    pub(crate) retiring: bool,
}

impl Peer {
    /// The IDs in the topics toward it.
    pub(crate) fn hop_ids(&self, own: &CseId, own_sp: &str) -> HopIds {
        match self.settings.topic_ids {
            TopicIds::Absolute => HopIds {
                from: format!("//{own_sp}{own}"),
                to: self.settings.absolute(),
            },
            TopicIds::SpRelative => HopIds {
                from: own.to_string(),
                to: self.settings.id.to_string(),
            },
        }
    }
}

impl Engine {
    /// The machines of the peers, not started yet; `adopt` when the store
    /// still holds the local `<remoteCSE>` of a peer.
    pub(super) fn peer_machines(
        peers: &[PeerSettings],
        base: &crate::resource::CseBase,
        store: &super::store::Store,
        timeout: Duration,
        seed: u64,
        own_sp: &str,
    ) -> Vec<Peer> {
        peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let abs = p.absolute();
                let settings = UpstreamSettings {
                    registrar_rn: p.rn.clone(),
                    check_interval: p.check_interval,
                    poa: p.poa.clone(),
                    link: p.link,
                    serialization: None,
                };
                let adopt = store.by_csi(&abs).is_some();
                // Its name there is derived (ACME's), so it is known even
                // without a store: a stale one is deleted before the CREATE.
                let up = Upstream::new(
                    &settings,
                    p.id.clone(),
                    base,
                    Vec::new(),
                    timeout,
                    seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9),
                    adopt,
                    Some(foreign_rn(own_sp, &base.csi)),
                    &store.registrar_memo(&abs),
                );
                Peer {
                    settings: p.clone(),
                    up,
                    stopped: false,
                    retiring: false,
                }
            })
            .collect()
    }

    /// Other peer SPs (config reload): a peer no longer configured, or
    /// configured otherwise, is deregistered from; a new one registered at.
    /// Links stay as they are (a broker of its own needs a restart).
    pub fn set_peers(&mut self, peers: Vec<PeerSettings>, now: Now) {
        let Some(own_sp) = self.sp_id.clone() else {
            return;
        };
        for p in &mut self.peers {
            if !p.retiring && !peers.contains(&p.settings) {
                p.retiring = true;
                p.up.machine.handle(Input::Shutdown, now);
            }
        }
        let added: Vec<PeerSettings> = peers
            .iter()
            .filter(|s| !self.peers.iter().any(|p| !p.retiring && &p.settings == *s))
            .cloned()
            .collect();
        let fresh = Engine::peer_machines(
            &added,
            self.registrar.cse_base(),
            self.registrar.store(),
            self.forwards.timeout(),
            self.seed ^ now.wall.0,
            &own_sp,
        );
        self.peers.extend(fresh);
        self.registrar.set_peers(
            peers
                .iter()
                .map(|p| (p.sp_id.clone(), p.id.clone()))
                .collect(),
        );
        self.sync_store_peers();
        if !self.stopping {
            for p in &mut self.peers {
                if self.links.is_up(p.settings.link) {
                    if let Some(start) = p.up.start.take() {
                        p.up.machine.handle(start, now);
                    }
                }
            }
        }
        self.flush(now);
    }

    /// The store knows the CSRs of every peer (retiring ones too, until
    /// they are gone) as no registrees.
    fn sync_store_peers(&mut self) {
        let ids = self.peers.iter().map(|p| p.settings.absolute()).collect();
        self.registrar.store_mut().set_peers(ids);
    }

    /// The own SP-ID, when this CSE has peers (or knows its SP).
    pub(super) fn own_sp(&self) -> Option<&str> {
        self.sp_id.as_deref()
    }

    /// `//sp-a.example/id-in-a`.
    fn own_absolute(&self) -> String {
        format!("//{}{}", self.own_sp().unwrap_or_default(), self.own)
    }

    /// Starts the machines of the peers on `link` (`None`: every link).
    pub(super) fn peers_link_changed(&mut self, link: Option<Link>, up: bool, now: Now) {
        if !up || self.stopping {
            return;
        }
        for p in &mut self.peers {
            if link.is_none_or(|l| l == p.settings.link) {
                if let Some(start) = p.up.start.take() {
                    p.up.machine.handle(start, now);
                }
            }
        }
    }

    /// Carries out what the peers' machines want; true if anything was.
    pub(super) fn flush_peers(&mut self, now: Now) -> bool {
        let mut any = false;
        for i in 0..self.peers.len() {
            while let Some(a) = self.peers[i].up.machine.poll_action() {
                any = true;
                self.carry_out_peer(i, a, now);
            }
        }
        // Peers removed by a reload go once deregistered (not while the
        // node stops: shutdown counts them).
        if !self.stopping && self.peers.iter().any(|p| p.retiring && p.stopped) {
            self.peers.retain(|p| !(p.retiring && p.stopped));
            self.sync_store_peers();
        }
        any
    }

    /// Deregisters from every peer; false when none needs to.
    pub(super) fn peers_shutdown(&mut self, now: Now) -> bool {
        for p in &mut self.peers {
            p.up.machine.handle(Input::Shutdown, now);
        }
        self.peers.iter().any(|p| !p.stopped)
    }

    /// Every peer's machine has stopped.
    pub(super) fn peers_stopped(&self) -> bool {
        self.peers.iter().all(|p| p.stopped)
    }

    /// The peer whose topic receiver ID is `hop` (an answer to a request
    /// sent to it comes from there).
    pub(super) fn peer_by_hop(&self, hop: &str) -> Option<usize> {
        self.peers_by_hop(hop).first().copied()
    }

    /// Every peer machine reached as `hop` (a reload may have replaced a
    /// peer while the old machine deregisters): each takes only its rqis.
    pub(super) fn peers_by_hop(&self, hop: &str) -> Vec<usize> {
        let Some(own_sp) = self.own_sp() else {
            return Vec::new();
        };
        (0..self.peers.len())
            .filter(|&i| {
                let p = &self.peers[i];
                !p.stopped && p.hop_ids(&self.own, own_sp).to == hop
            })
            .collect()
    }

    /// An answer to a registration request sent to peer `i`.
    pub(super) fn peer_response(&mut self, i: usize, mut rsp: Response, now: Now) {
        // The machine knows itself by its SP-relative ID: the CSR there
        // names it absolute (TS-0001 7.2).
        let own_abs = self.own_absolute();
        if let Some(csr) = rsp
            .pc
            .as_mut()
            .and_then(|pc| pc.get_mut("m2m:csr"))
            .and_then(Value::as_object_mut)
        {
            if csr.get("csi").and_then(Value::as_str) == Some(own_abs.as_str()) {
                csr.insert("csi".into(), json!(self.own.as_str()));
            }
        }
        // Its CSEBase, which a peer names absolute to another SP (ACME).
        let peer_abs = self.peers[i].settings.absolute();
        if let Some(cb) = rsp
            .pc
            .as_mut()
            .and_then(|pc| pc.get_mut("m2m:cb"))
            .and_then(Value::as_object_mut)
        {
            if cb.get("csi").and_then(Value::as_str) == Some(peer_abs.as_str()) {
                cb.insert("csi".into(), json!(self.peers[i].settings.id.as_str()));
            }
        }
        self.peers[i].up.machine.handle(Input::Response(rsp), now);
        self.flush_peers(now);
    }

    /// A request of peer `i`'s machine as it goes on the wire: `fr`, `to`,
    /// `csi`, `cb` absolute, `rn` as ACME derives it, `spi`/`ici` set.
    fn to_peer_wire(&self, i: usize, mut req: Request) -> Request {
        let p = &self.peers[i].settings;
        let own_sp = self.own_sp().unwrap_or_default().to_owned();
        req.fr = Some(self.own_absolute());
        if req.to.starts_with('/') && !req.to.starts_with("//") {
            req.to = format!("//{}{}", p.sp_id, req.to);
        }
        if let Some(csr) = req
            .pc
            .as_mut()
            .and_then(|pc| pc.get_mut("m2m:csr"))
            .and_then(Value::as_object_mut)
        {
            if csr.contains_key("csi") {
                csr.insert("rn".into(), json!(foreign_rn(&own_sp, &self.own)));
                csr.insert("csi".into(), json!(self.own_absolute()));
                csr.insert("spi".into(), json!(format!("//{own_sp}")));
                csr.insert("ici".into(), json!(self.own.as_str()));
                if let Some(cb) = csr.get("cb").and_then(Value::as_str) {
                    if !cb.starts_with("//") && cb.starts_with('/') {
                        let abs = format!("//{own_sp}{cb}");
                        csr.insert("cb".into(), json!(abs));
                    }
                }
            }
        }
        req
    }

    fn peer_event(&mut self, i: usize, event: Event) {
        let sp = self.peers[i].settings.sp_id.clone();
        self.events.push_back(Event::PeerSp {
            sp,
            event: Box::new(event),
        });
    }

    fn carry_out_peer(&mut self, i: usize, action: Action, now: Now) {
        let registrar = self.peers[i].up.registrar.clone();
        let abs = self.peers[i].settings.absolute();
        match action {
            Action::Send(req) => {
                let link = self.peers[i].settings.link;
                let rqi = req.rqi.clone();
                let fail = |why: &str| Response::error(Rsc::TARGET_NOT_REACHABLE, &rqi, why);
                if !self.links.is_up(link) {
                    let rsp = fail("not connected to the peer SP's MQTT broker");
                    return self.peers[i].up.machine.handle(Input::Response(rsp), now);
                }
                let own_sp = self.own_sp().unwrap_or_default().to_owned();
                let hop = self.peers[i].hop_ids(&self.own, &own_sp);
                let wire = self.to_peer_wire(i, req);
                match Format::Json.encode(&wire) {
                    Ok(payload) if payload.len() <= self.max_payload => {
                        self.forwards
                            .add(rqi, &hop.to, now.mono, Purpose::Registration);
                        self.transmits.push_back(Transmit::Request {
                            to: registrar,
                            link,
                            format: Format::Json,
                            payload,
                            ack: None,
                            hop: Some(hop),
                        });
                    }
                    _ => {
                        let rsp = fail("the request cannot be encoded within mqtt.max_payload");
                        self.peers[i].up.machine.handle(Input::Response(rsp), now);
                    }
                }
            }
            Action::StoreRegistrarCsr(mut csr) => {
                let rn = foreign_rn(&self.peers[i].settings.sp_id, &registrar);
                csr.cb = Some(format!("{abs}/{}", self.peers[i].settings.rn));
                csr.csi = Some(abs);
                csr.rn = Some(rn.clone());
                csr.ri = Some(rn.clone());
                let base_ri = self.registrar.cse_base().ri.clone();
                self.registrar.store_mut().put_registrar_csr(
                    &rn,
                    &base_ri,
                    csr,
                    now.wall.to_onem2m(),
                );
                self.take_internal_undo();
            }
            Action::RemoveRegistrarCsr => {
                self.registrar.store_mut().remove_csi(&abs);
                self.take_internal_undo();
            }
            // Derived from the SP-ID and CSE-ID: nothing to keep.
            Action::RemoteCsrName(_) => {}
            Action::Registered => self.peer_event(i, Event::Registered { registrar }),
            Action::Deregistered { confirmed } => {
                let m = &self.peers[i].up.machine;
                let e = Event::Deregistered {
                    registrar,
                    confirmed,
                    csr: m.own_csr(),
                    retried_at_start: !confirmed,
                };
                self.peer_event(i, e)
            }
            Action::AttributesRefused {
                attributes,
                answer,
                memo,
            } => {
                self.registrar.store_mut().set_registrar_memo(&abs, memo);
                self.take_internal_undo();
                self.peer_event(
                    i,
                    Event::AttributesRefused {
                        registrar,
                        attributes,
                        answer,
                    },
                )
            }
            Action::Retry {
                step,
                retry_in,
                answer,
            } => self.peer_event(
                i,
                Event::RegistrationRetry {
                    step,
                    retry_in,
                    answer,
                },
            ),
            Action::Squatted { rn, csi } => self.peer_event(i, Event::Squatted { rn, csi }),
            Action::Lost { answer } => {
                self.peer_event(i, Event::RegistrationLost { registrar, answer })
            }
            Action::CheckUnanswered { times } => {
                self.peer_event(i, Event::CheckUnanswered { registrar, times })
            }
            Action::UpdateRefused { answer } => self.peer_event(
                i,
                Event::OwnUpdateRefused {
                    registrar,
                    dcse: 0,
                    answer,
                },
            ),
            Action::Stopped => {
                self.peers[i].stopped = true;
                if self.stopping && self.upstream.is_none() && self.peers_stopped() && !self.stopped
                {
                    self.stopped = true;
                    self.events.push_back(Event::Stopped);
                }
            }
        }
    }

    /// The link and topic IDs of a forward of `req` to `next_hop`, when
    /// that is a peer SP's IN and the target lies in its SP.
    pub(super) fn peer_hop(&self, next_hop: &CseId, req: &Request) -> Option<(Link, HopIds)> {
        let own_sp = self.own_sp()?;
        let (sp, _) = split_absolute(&req.to)?;
        let p = self
            .peers
            .iter()
            .find(|p| !p.retiring && p.settings.sp_id == sp && &p.settings.id == next_hop)?;
        Some((p.settings.link, p.hop_ids(&self.own, own_sp)))
    }

    /// An answer relayed back from peer `hop` to the originator `fr` (as it
    /// asked): `to` as the originator knows itself, `fr` absolute (the
    /// answering CSE is in another SP; ACME sends it SP-relative).
    pub(super) fn map_back(&self, hop: &str, rsp: &mut Response, original_fr: &str) {
        let Some(i) = self.peer_by_hop(hop) else {
            return;
        };
        let sp = &self.peers[i].settings.sp_id;
        if rsp.to.is_some() && !original_fr.is_empty() {
            rsp.to = Some(original_fr.to_owned());
        }
        if let Some(fr) = &rsp.fr {
            if fr.starts_with('/') && !fr.starts_with("//") {
                rsp.fr = Some(format!("//{sp}{fr}"));
            }
        }
    }

    /// Which SP the hop of `route` speaks for, and whether it may speak for
    /// `req.fr` (docs/protocol.md §13.3). Rewrites the hop to its absolute
    /// ID when it is of another SP (ACME names itself SP-relative in the
    /// topic), and IDs of the own SP to the SP-relative form. `Some(why)`:
    /// refused (4103).
    pub(super) fn cross_sp_gate(&self, route: &mut Route, req: &mut Request) -> Option<String> {
        let own_sp = self.own_sp()?.to_owned();
        let peer_link = self
            .peers
            .iter()
            .find(|p| p.settings.link != Link::LOCAL && p.settings.link == route.link);
        let hop = route.originator.clone();
        let fr = req.fr.clone().unwrap_or_default();
        // The hop's SP, when it is not ours.
        let foreign: Option<(String, String)> = match split_absolute(&hop) {
            Some((sp, rest)) if sp == own_sp => {
                if let Some(p) = peer_link {
                    return Some(format!(
                        "{hop} names a CSE of this SP on the broker of //{}",
                        p.settings.sp_id
                    ));
                }
                route.originator = rest.to_owned();
                None
            }
            Some((sp, _)) => Some((sp.to_owned(), hop.clone())),
            None => match peer_link {
                // A bare ID on a peer's own link is of that SP (ACME).
                Some(p) => Some((p.settings.sp_id.clone(), format!("//{}{hop}", p.settings.sp_id))),
                // A bare ID on the local broker is of another SP when `fr`
                // names that SP's CSE of this ID, or the hop is that SP's
                // peer IN (ACME names itself SP-relative in topics, and puts
                // the SP-ID where the receiver belongs).
                None => match split_absolute(&fr) {
                    Some((sp, rest)) if sp != own_sp && self.bare_is_foreign(route, &hop, sp, rest) => {
                        Some((sp.to_owned(), format!("//{sp}{hop}")))
                    }
                    _ if route.receiver == format!("/{own_sp}") => {
                        return Some(format!(
                            "{hop} sent to the SP-ID //{own_sp} but does not speak for a CSE of another SP ({fr})"
                        ))
                    }
                    _ => None,
                },
            },
        };
        match foreign {
            Some((sp, abs)) => {
                let known_peer = self.peers.iter().find(|p| p.settings.sp_id == sp);
                if let Some(p) = known_peer {
                    if p.settings.link != route.link {
                        return Some(format!(
                            "{abs} speaks on the broker of //{sp}, not on this one"
                        ));
                    }
                } else if !self.registrar.allows_foreign(&abs)
                    && self.registrar.store().by_csi(&abs).is_none()
                {
                    return Some(format!("//{sp} is not a peer SP of this one"));
                }
                if !fr.starts_with(&format!("//{sp}/")) {
                    return Some(format!(
                        "a hop of //{sp} may speak only for originators of that SP, not for {fr:?}"
                    ));
                }
                route.originator = abs;
                None
            }
            None => {
                // The own registrar relays requests from outside this
                // subtree, other SPs' too (§12.1).
                let from_registrar = self
                    .upstream
                    .as_ref()
                    .is_some_and(|u| u.registrar.as_str() == hop);
                if let Some((sp, rest)) = split_absolute(&fr) {
                    if sp != own_sp && from_registrar {
                        return None;
                    }
                    if sp != own_sp {
                        return Some(format!(
                            "{hop} is in this SP and cannot speak for {fr} of //{sp}"
                        ));
                    }
                    req.fr = Some(rest.to_owned());
                }
                None
            }
        }
    }

    /// Whether the bare hop `hop` on the local broker is SP `sp`'s CSE
    /// (ACME names itself SP-relative in topics), `fr` being `//sp{rest}`:
    /// never a CSE of this tree; on ACME's SP-ID receiver topic, the CSE
    /// `fr` names (or the peer's IN); on the ordinary topic only a peer IN
    /// configured here or a CSE of that SP registered here (docs/protocol.md
    /// §13.3: the local broker's ACL must reserve these IDs).
    fn bare_is_foreign(&self, route: &Route, hop: &str, sp: &str, rest: &str) -> bool {
        let store = self.registrar.store();
        if hop == self.own.as_str() || store.descendant(hop).is_some() {
            return false;
        }
        let peer_in = self
            .peers
            .iter()
            .any(|p| !p.retiring && p.settings.sp_id == sp && p.settings.id.as_str() == hop);
        let speaks_for_itself = crate::id::speaker_cse(rest) == Some(hop);
        let sp_id_topic = self
            .own_sp()
            .is_some_and(|own| route.receiver.strip_prefix('/') == Some(own));
        if sp_id_topic {
            speaks_for_itself || peer_in
        } else {
            peer_in || (speaks_for_itself && store.by_csi(&format!("//{sp}{hop}")).is_some())
        }
    }

    /// (absolute CSE-ID, registered) of each peer SP's IN-CSE, for metrics.
    pub fn peer_registrations(&self) -> Vec<(String, bool)> {
        self.peers
            .iter()
            .filter(|p| !p.retiring)
            .map(|p| (p.settings.absolute(), p.up.machine.is_registered()))
            .collect()
    }

    /// What `status` shows of each peer registration.
    pub(super) fn peer_status(&self) -> Value {
        Value::Array(
            self.peers
                .iter()
                .map(|p| {
                    let m = &p.up.machine;
                    json!({
                        "name": p.settings.name,
                        "sp": format!("//{}", p.settings.sp_id),
                        "id": p.settings.absolute(),
                        "link": p.settings.link.to_string(),
                        "connected": self.links.is_up(p.settings.link),
                        "registered": m.is_registered(),
                        "since": m.registered_since().map(|t| t.to_onem2m()),
                        "last_check": m.last_check().map(|t| t.to_onem2m()),
                        "waiting": matches!(m.phase(), Phase::Waiting { .. }),
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
#[path = "intersp_tests.rs"]
mod tests;

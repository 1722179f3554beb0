//! The hosting side of the node: requests addressed to it or passing through
//! it, handled as a pure function of (request, store, now).
//!
//! It serves the `<CSEBase>`, the C/R/U/D of registrees' `<remoteCSE>`s with
//! the checks of docs/protocol.md §5.2 in the spec's order, and decides where a request
//! for another CSE goes next (docs/protocol.md §4.3). It does no I/O: the
//! store records every change, and the engine carries out forwards.

use super::store::{valid_name, Store};
use crate::error::{bad, Refusal};
use crate::id::{glob_match, is_ae_id, resolve, speaker_cse, CseId, Target};
use crate::primitive::{release_supported, Operation, Request, ResourceType, Response, Rsc};
use crate::resource::{
    CseBase, CseType, RemoteCse, CSR_ATTRIBUTES, CSR_NOT_CREATABLE, CSR_NOT_UPDATABLE,
};
use crate::time::Timestamp;
use serde::Deserialize;
use serde_json::Value;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answer it. What it changed, the store has recorded (for the
    /// persister and the undo of a failed write).
    Respond { response: Response },
    /// Send it on to the CSE `next_hop` and relay its answer.
    Forward { next_hop: CseId, request: Request },
}

/// What the hosting side is told at start (and may be told again on reload).
#[derive(Clone, Debug)]
pub struct RegistrarSettings {
    pub cse_base: CseBase,
    pub cse_type: CseType,
    pub sp_id: Option<String>,
    /// Glob patterns of CSE-IDs allowed to register here.
    pub allowed: Vec<String>,
    /// This node's own registrar, if any: requests for unknown CSEs go there.
    pub upstream: Option<CseId>,
    /// An originator that may do anything (as ACME's admin), when it speaks
    /// for itself; `None`: nobody.
    pub admin: Option<String>,
    pub limits: Limits,
    /// The IN-CSEs of other SPs, by SP-ID (`[sp_registrar.*]`): requests
    /// for a target in one of those SPs go there (docs/protocol.md §13).
    pub peers: Vec<(String, CseId)>,
}

/// What one registree may make this node hold (issue: every resource has a
/// limit). Defaults in [`Limits::default`]; docs/protocol.md §12.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Registrees at most (`[registrees] max`).
    pub max_registrees: usize,
    /// Entries in `lbl`, `poa`, `srv`, `csz` of a CSR.
    pub list_entries: usize,
    /// Entries in a CSR's `dcse`.
    pub dcse_entries: usize,
    /// Characters in any one string attribute or list entry.
    pub value_length: usize,
    /// Characters in a resource name or a CSE-ID.
    pub name_length: usize,
    /// Bytes of answers kept for duplicate deliveries.
    pub answer_cache_bytes: usize,
    /// Requests forwarded and not yet answered.
    pub forwards_in_flight: usize,
    /// Of those, at most this many to one next hop or from one
    /// originating hop (docs/protocol.md §4.3, "Fair forwarding").
    pub forwards_per_hop: usize,
    /// What registrees can make the node hold in all, in the store's own
    /// accounting ([`Store::bytes`]) plus the answer cache and forwards
    /// at their bounds (docs/operations.md, "Limits and memory").
    pub memory_bytes: usize,
}

/// What one forward in flight is counted as against `memory_bytes` (its
/// routing, keys and rqis; the request itself is sent, not kept).
pub const FORWARD_BYTES: usize = 1024;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_registrees: 50_000,
            list_entries: 64,
            // An MN with 100,000 descendants can register (its dcse is about
            // 1.6 MB at 16 bytes a CSE-ID: `mqtt.max_payload` allows it).
            dcse_entries: 100_000,
            value_length: 512,
            name_length: 64,
            answer_cache_bytes: 1 << 20,
            forwards_in_flight: 256,
            forwards_per_hop: 64,
            // With the in-flight window at max_payload and the rest of the
            // node this keeps RSS under 1 GB (docs/operations.md "Limits
            // and memory").
            memory_bytes: 192 << 20,
        }
    }
}

pub struct Registrar {
    cfg: RegistrarSettings,
    store: Store,
    /// Bytes a listing in an answer may take ([`Registrar::set_answer_budget`]).
    answer_budget: usize,
}

/// The originator `m2mnode status` asks as (an AE-ID: it is not a CSE).
pub const STATUS_ORIGINATOR: &str = "Cm2mnode-status";

/// What an answer needs beside its listing (rsc, rqi, rvi, to, fr, ot, the
/// CSEBase of `rcn` 4), kept free of the budget.
const ANSWER_ENVELOPE: usize = 4096;

/// `cnst` of an answer cut short: partial content (TS-0004 7.2.1.2,
/// docs/protocol.md §2.2), with `cnot` the `ofst` that continues it.
pub const CONTENT_PARTIAL: u64 = 2;

/// A page of a listing (TS-0001 8.1.2 filter criteria `lim`, `ofst`):
/// from the `ofst`-th item (1-based), at most `lim` items and at most
/// `budget` bytes of JSON. Items are made one at a time and the listing
/// stops when full, so an answer is never built whole.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Page {
    skip: usize,
    lim: usize,
    budget: usize,
}

impl Page {
    /// The page `req`'s `fc` asks for, within `budget` bytes.
    pub(crate) fn of(req: &Request, budget: usize) -> Page {
        let fc = req.other.get("fc");
        let get = |k: &str| {
            fc.and_then(|f| f.get(k))
                .and_then(number)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        Page {
            skip: get("ofst").unwrap_or(1).saturating_sub(1),
            lim: get("lim").unwrap_or(usize::MAX),
            budget,
        }
    }

    /// At most `lim` items when the request set no `lim`.
    pub(crate) fn or_lim(mut self, lim: usize) -> Page {
        if self.lim == usize::MAX {
            self.lim = lim;
        }
        self
    }

    /// The items of this page, and the `ofst` of the next page when there
    /// are more (`lim` or the budget cut the listing).
    pub(crate) fn collect(
        &self,
        items: impl Iterator<Item = Value>,
    ) -> (Vec<Value>, Option<usize>) {
        let mut out = Vec::new();
        let mut used: usize = 2;
        for (i, v) in items.skip(self.skip).enumerate() {
            let size = serde_json::to_vec(&v).map_or(usize::MAX, |b| b.len() + 1);
            // A page holds at least one item, so that paging moves on (one
            // alone over `max_payload` becomes a 5000 that says so).
            let full = used.saturating_add(size) > self.budget && !out.is_empty();
            if i >= self.lim || full {
                return (out, Some(self.skip + i + 1));
            }
            used += size;
            out.push(v);
        }
        (out, None)
    }
}

/// Marks `rsp` partial when its listing was cut (`next`: the `ofst` to ask
/// for next).
pub(crate) fn mark_partial(rsp: &mut Response, next: Option<usize>) {
    if let Some(next) = next {
        rsp.other
            .insert("cnst".into(), Value::from(CONTENT_PARTIAL));
        rsp.other.insert("cnot".into(), Value::from(next));
    }
}

/// What a local `to` addresses.
enum Addressed {
    CseBase,
    Csr(String),
}

impl Registrar {
    /// A registrar with an empty in-memory store.
    pub fn new(cfg: RegistrarSettings) -> Registrar {
        let store = Store::new(
            cfg.cse_base.csi.as_str(),
            cfg.upstream.as_ref().map(CseId::as_str),
            false,
        );
        Registrar::with_store(cfg, store)
    }

    /// The registrar over `store`.
    pub(crate) fn with_store(cfg: RegistrarSettings, store: Store) -> Registrar {
        Registrar {
            cfg,
            store,
            answer_budget: usize::MAX,
        }
    }

    pub fn own(&self) -> &CseId {
        &self.cfg.cse_base.csi
    }

    pub fn cse_base(&self) -> &CseBase {
        &self.cfg.cse_base
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    pub(crate) fn set_allowed(&mut self, allowed: Vec<String>) {
        self.cfg.allowed = allowed;
    }

    /// The registrar this CSE registers at (config reload): requests for
    /// targets outside the tree go there, and its CSR is not a registree's.
    pub(crate) fn set_upstream(&mut self, upstream: Option<CseId>) {
        self.store
            .set_upstream(upstream.as_ref().map(CseId::as_str));
        self.cfg.upstream = upstream;
    }

    /// The SP this CSE is in and the root IN-CSE, as learned from the
    /// registrar (docs/protocol.md §13.4): shown in the CSEBase.
    pub(crate) fn set_sp_identity(&mut self, spi: String, ici: Option<String>) {
        self.cfg.cse_base.spi = Some(spi);
        self.cfg.cse_base.ici = ici;
    }

    /// The peer SPs' IN-CSEs (config reload).
    pub(crate) fn set_peers(&mut self, peers: Vec<(String, CseId)>) {
        self.cfg.peers = peers;
    }

    /// The registrees `[registrees] allowed` does not match (any more).
    pub(crate) fn not_allowed(&self) -> Vec<String> {
        self.store
            .registrees()
            .filter_map(|(_, c)| c.csi())
            .filter(|csi| !self.cfg.allowed.iter().any(|p| glob_match(p, csi)))
            .map(str::to_owned)
            .collect()
    }

    pub fn limits(&self) -> &Limits {
        &self.cfg.limits
    }

    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.cfg.limits = limits;
    }

    /// Handles one request that arrived from the hop `hop` (the topic's
    /// originator level).
    pub fn handle(&mut self, req: &Request, hop: &str, now: Timestamp) -> Outcome {
        match self.dispatch(req, hop, now) {
            Ok(outcome) => outcome,
            Err(refusal) => Outcome::Respond {
                response: self.answer(
                    req,
                    Response::error(refusal.rsc(), &req.rqi, refusal.to_string()),
                    now,
                ),
            },
        }
    }

    /// The answer to `req`: echo `rqi`/`rvi`, add `ot`, `to`, `fr` as ACME does.
    pub fn answer(&self, req: &Request, mut response: Response, now: Timestamp) -> Response {
        response.rqi.clone_from(&req.rqi);
        response.rvi.clone_from(&req.rvi);
        response.ot = Some(now.to_onem2m());
        response.to.clone_from(&req.fr);
        response.fr = Some(self.own().to_string());
        response
    }

    fn dispatch(&mut self, req: &Request, hop: &str, now: Timestamp) -> Result<Outcome, Refusal> {
        let fr = match req.fr.as_deref() {
            Some(f) if !f.is_empty() => f,
            _ => return Err(bad("missing originator (fr)")),
        };
        if req.op == Operation::Create && req.ty.is_none() {
            return Err(bad("missing resource type (ty) in CREATE"));
        }
        let admin = self.is_admin(fr, hop);
        if !admin {
            self.check_speaker(fr, hop)?;
        }
        if let Some(rqet) = &req.rqet {
            let t = Timestamp::parse_abs_rel(rqet, now)
                .ok_or_else(|| bad(format!("rqet {rqet:?} is not a timestamp")))?;
            if t <= now {
                return Err(Refusal::Expired(format!("request expired at {rqet}")));
            }
        }
        let target = resolve(&req.to, self.own(), self.cfg.sp_id.as_deref())
            .map_err(|e| bad(e.to_string()))?;
        let path = match target {
            Target::Local(path) => path,
            Target::Remote { csi } => return self.forward(req, fr, &csi, hop),
            Target::OtherSp { sp } => return self.forward_across(req, fr, sp, hop),
        };
        match req.rvi.as_deref() {
            Some(r) if release_supported(r) => {}
            Some(r) => return Err(Refusal::ReleaseNotSupported(r.to_owned())),
            None => return Err(Refusal::ReleaseNotSupported("1".into())),
        }
        let respond = |response| Ok(Outcome::Respond { response });
        match (self.address(path, &req.to)?, req.op) {
            (Addressed::CseBase, Operation::Retrieve) => {
                let (pc, next) = self.retrieve_base(req, hop, admin, now)?;
                let mut rsp = Response::new(Rsc::OK, "").with_pc(pc);
                mark_partial(&mut rsp, next);
                respond(self.answer(req, rsp, now))
            }
            (Addressed::CseBase, Operation::Create) => {
                let r = self.create_csr(req, fr, hop, now)?;
                respond(r)
            }
            (Addressed::CseBase, Operation::Update | Operation::Delete) => Err(
                Refusal::NotAllowed(format!("the <CSEBase> cannot be {}d", req.op.name())),
            ),
            (Addressed::CseBase, Operation::Notify) => {
                Err(Refusal::NotImplemented("NOTIFY is not supported".into()))
            }
            (Addressed::Csr(ri), Operation::Retrieve) => {
                check_rcn(req, &[1])?;
                let csr = self
                    .store
                    .get(&ri)
                    .ok_or_else(|| Refusal::NotFound(req.to.clone()))?;
                let pc = csr.to_content();
                respond(self.answer(req, Response::new(Rsc::OK, "").with_pc(pc), now))
            }
            (Addressed::Csr(ri), Operation::Update) => {
                let r = self.update_csr(req, fr, hop, admin, &ri, now)?;
                respond(r)
            }
            (Addressed::Csr(ri), Operation::Delete) => {
                if !admin {
                    self.check_owner(fr, hop, &ri)?;
                }
                check_rcn(req, &[0])?;
                self.store.remove(&ri);
                respond(self.answer(req, Response::new(Rsc::DELETED, ""), now))
            }
            (Addressed::Csr(_), Operation::Create) => Err(Refusal::NotImplemented(
                "child resources of a <remoteCSE> are not supported".into(),
            )),
            (Addressed::Csr(_), Operation::Notify) => {
                Err(Refusal::NotImplemented("NOTIFY is not supported".into()))
            }
        }
    }

    /// RETRIEVE of the CSEBase: its attributes, or with `rcn` 4/6/8 its
    /// registrees too, or with `fc.fu` = 1 a discovery (TS-0004 7.3.3.2,
    /// 7.3.3.12; what ACME and oneM2M tools use to list CSRs). A listing is
    /// answered only inside this CSE's tree, and produced a page at a time
    /// ([`Page`]): never built whole.
    fn retrieve_base(
        &self,
        req: &Request,
        hop: &str,
        admin: bool,
        now: Timestamp,
    ) -> Result<(Value, Option<usize>), Refusal> {
        let fc = req.other.get("fc");
        let discovery = fc.is_some_and(|fc| fc.get("fu").and_then(number) == Some(1));
        if !discovery {
            check_rcn(req, &[1, 4, 6, 8])?;
        }
        if (discovery || matches!(req.rcn, Some(4 | 6 | 8))) && !admin && !self.inside_tree(hop) {
            return Err(Refusal::NoPrivilege(format!(
                "{hop} is not inside this CSE's tree: the list of registrees is answered only to registrees, their descendants, the registrar and [security] admin"
            )));
        }
        let page = Page::of(req, self.answer_budget);
        let address = |rn: &str| format!("{}/{rn}", self.cfg.cse_base.rn);
        let csrs = || {
            self.store
                .iter()
                .map(|(_, c)| c.to_content()["m2m:csr"].clone())
        };
        if let Some(fc) = fc.filter(|_| discovery) {
            let wanted = match fc.get("ty") {
                None => true,
                Some(Value::Array(tys)) => tys.iter().any(|t| number(t) == Some(16)),
                Some(t) => number(t) == Some(16),
            };
            let (uril, next) = if wanted {
                page.collect(
                    self.store
                        .iter()
                        .map(|(ri, c)| Value::String(address(c.rn.as_deref().unwrap_or(ri)))),
                )
            } else {
                (Vec::new(), None)
            };
            return Ok((serde_json::json!({ "m2m:uril": uril }), next));
        }
        let mut base = self.cfg.cse_base.to_content(&now.to_onem2m());
        match req.rcn {
            Some(4) => {
                let (children, next) = page.collect(csrs());
                if let Some(cb) = base.get_mut("m2m:cb").and_then(Value::as_object_mut) {
                    cb.insert("m2m:csr".into(), Value::Array(children));
                }
                Ok((base, next))
            }
            Some(6) => {
                let (rrf, next) = page.collect(self.store.iter().map(|(ri, c)| {
                    let rn = c.rn.as_deref().unwrap_or(ri);
                    serde_json::json!({"nm": rn, "typ": 16, "val": address(rn)})
                }));
                Ok((serde_json::json!({ "m2m:rrl": { "rrf": rrf } }), next))
            }
            Some(8) => {
                let (children, next) = page.collect(csrs());
                Ok((
                    serde_json::json!({ "m2m:cb": { "m2m:csr": children } }),
                    next,
                ))
            }
            _ => Ok((base, None)),
        }
    }

    /// A registree, a descendant, or this CSE's registrar, speaking as the
    /// hop `hop`: the CSEs that may list what is below this one.
    fn inside_tree(&self, hop: &str) -> bool {
        let Some(cse) = speaker_cse(hop) else {
            return false;
        };
        self.store.by_csi(cse).is_some()
            || self.store.descendant(cse).is_some()
            || self
                .cfg
                .upstream
                .as_ref()
                .is_some_and(|u| u.as_str() == cse)
    }

    /// The status resource (status.rs) is answered to `m2mnode status`
    /// (the originator [`STATUS_ORIGINATOR`] speaking on its own topic) and
    /// to the admin, after the hop-identity checks every request passes.
    pub(crate) fn may_read_status(&self, req: &Request, hop: &str) -> Result<(), Refusal> {
        let fr = match req.fr.as_deref() {
            Some(f) if !f.is_empty() => f,
            _ => return Err(bad("missing originator (fr)")),
        };
        if self.is_admin(fr, hop) {
            return Ok(());
        }
        self.check_speaker(fr, hop)?;
        if fr == STATUS_ORIGINATOR && hop.trim_start_matches('/') == fr {
            return Ok(());
        }
        Err(Refusal::NoPrivilege(format!(
            "the status is answered only to {STATUS_ORIGINATOR} on its own topic and to [security] admin, not to {fr}"
        )))
    }

    /// Bytes an answer's listing may take: a little under `mqtt.max_payload`
    /// (set by the engine), room left for the envelope.
    pub(crate) fn set_answer_budget(&mut self, max_payload: usize) {
        self.answer_budget = max_payload.saturating_sub(ANSWER_ENVELOPE).max(1024);
    }

    pub(crate) fn answer_budget(&self) -> usize {
        self.answer_budget
    }

    /// Resolves a CSE-relative path: structured (`cse-in/id-mn`, `-/id-mn`)
    /// or unstructured (`id-mn` = an ri).
    fn address(&self, path: &str, to: &str) -> Result<Addressed, Refusal> {
        let not_found = || Refusal::NotFound(to.to_owned());
        if path.contains('#') {
            return Err(Refusal::NotImplemented(
                "attribute addressing (#) is not supported".into(),
            ));
        }
        let mut segs = path.split('/');
        let first = segs.next().unwrap_or_default();
        let rest: Vec<&str> = segs.collect();
        if first.is_empty() || first == "-" || first == self.cfg.cse_base.rn {
            return match rest.as_slice() {
                [] => Ok(Addressed::CseBase),
                [rn] => self
                    .store
                    .by_rn(rn)
                    .map(|(ri, _)| Addressed::Csr(ri.clone()))
                    .ok_or_else(not_found),
                _ => Err(not_found()),
            };
        }
        if !rest.is_empty() {
            return Err(not_found());
        }
        if first == self.cfg.cse_base.ri {
            return Ok(Addressed::CseBase);
        }
        if self.store.get(first).is_some() {
            return Ok(Addressed::Csr(first.to_owned()));
        }
        Err(not_found())
    }

    fn create_csr(
        &mut self,
        req: &Request,
        fr: &str,
        hop: &str,
        now: Timestamp,
    ) -> Result<Response, Refusal> {
        match req.ty {
            Some(ResourceType::REMOTE_CSE) => {}
            Some(ResourceType::CSE_BASE) => {
                return Err(Refusal::NotAllowed("a <CSEBase> cannot be created".into()))
            }
            Some(ty) => {
                return Err(Refusal::NotImplemented(format!(
                    "resource type {} is not supported here",
                    ty.0
                )))
            }
            None => return Err(bad("missing resource type (ty) in CREATE")),
        }
        if is_ae_id(fr) {
            return Err(Refusal::NotAllowed(format!(
                "an AE ({fr}) cannot register as a CSE"
            )));
        }
        if self.cfg.cse_type == CseType::ASN {
            return Err(Refusal::NotAllowed(
                "an ASN-CSE does not accept registrations".into(),
            ));
        }
        // A CSE of another SP registers with its absolute CSE-ID (Mcc',
        // docs/protocol.md §13); it is known by that, named as ACME names it.
        let foreign = crate::id::split_absolute(fr);
        let csi = CseId::new(foreign.map_or(fr, |(_, rel)| rel))
            .map_err(|e| bad(format!("originator is not a CSE-ID: {e}")))?;
        if let Some((sp, _)) = foreign {
            if !self.allows_foreign(fr) {
                return Err(Refusal::NotPermittedToRegister(fr.to_owned()));
            }
            return self.create_foreign_csr(req, fr, sp, &csi, now);
        }
        if fr.len() > self.cfg.limits.name_length {
            return Err(bad(format!(
                "CSE-ID longer than {} characters",
                self.cfg.limits.name_length
            )));
        }
        // A CSE registers itself, never another (the hop is the identity).
        if speaker_cse(hop) != Some(csi.as_str()) {
            return Err(Refusal::NoPrivilege(format!(
                "{fr} can only be registered by itself, not by {hop}"
            )));
        }
        if !self.cfg.allowed.iter().any(|p| glob_match(p, fr)) {
            return Err(Refusal::NotPermittedToRegister(fr.to_owned()));
        }
        if &csi == self.own() {
            return Err(bad("originator is this CSE"));
        }
        if self.cfg.upstream.as_ref() == Some(&csi) {
            // It would make a registration loop.
            return Err(Refusal::NotAllowed(format!("{fr} is this CSE's registrar")));
        }
        creatable_body(req)?;
        // Read in place: a copy of a CSR of thousands of descendants would
        // double what one request costs.
        let csr = RemoteCse::deserialize(req.pc.as_ref().map_or(&Value::Null, |pc| &pc["m2m:csr"]))
            .map_err(|e| bad(format!("invalid m2m:csr: {e}")))?;
        // The budget first: a node that is full says so without checking
        // thousands of descendants it would not keep anyway.
        self.check_budget(None, &csr)?;
        self.validate_csr(&csr, csi.as_str(), now)?;
        let rn = csr.rn.clone().unwrap_or_else(|| csi.bare().to_owned());
        if !valid_name(&rn, self.cfg.limits.name_length) {
            return Err(bad(format!(
                "invalid resource name {:?} (1 to {} of A-Z a-z 0-9 - . _ ~, not . or ..)",
                truncate(&rn),
                self.cfg.limits.name_length
            )));
        }
        if self.store.registree_count() >= self.cfg.limits.max_registrees {
            return Err(Refusal::Exhausted(format!(
                "this CSE accepts at most {} registrees ([registrees] max)",
                self.cfg.limits.max_registrees
            )));
        }
        if self.store.by_csi(fr).is_some() {
            return Err(Refusal::Conflict(format!("CSE {fr} is already registered")));
        }
        if self.store.by_rn(&rn).is_some() || rn == self.cfg.cse_base.rn {
            return Err(Refusal::Conflict(format!(
                "a resource named {rn:?} already exists"
            )));
        }
        let ri = csi.bare().to_owned();
        if self.store.get(&ri).is_some() || ri == self.cfg.cse_base.ri {
            return Err(Refusal::Conflict(format!(
                "a resource with ri {ri:?} already exists"
            )));
        }
        Ok(self.store_created(req, csr, rn, ri, fr, now))
    }

    /// Completes a `<remoteCSE>` CREATE that passed its checks: the CSR
    /// named `rn` with resource id `ri` below the CSEBase, its `csi` the
    /// originator `fr` whatever the body said (TS-0004 7.4.4.2.1); the
    /// answer 2001 with the CSR unless `rcn` = 0.
    fn store_created(
        &mut self,
        req: &Request,
        mut csr: RemoteCse,
        rn: String,
        ri: String,
        fr: &str,
        now: Timestamp,
    ) -> Response {
        let ts = now.to_onem2m();
        csr.rn = Some(rn);
        csr.ri = Some(ri.clone());
        csr.pi = Some(self.cfg.cse_base.ri.clone());
        csr.ty = Some(ResourceType::REMOTE_CSE);
        csr.ct = Some(ts.clone());
        csr.lt = Some(ts);
        csr.csi = Some(fr.to_owned());
        let pc = (req.rcn != Some(0)).then(|| csr.to_content());
        self.store.insert(ri, csr);
        let mut r = Response::new(Rsc::CREATED, "");
        r.pc = pc;
        self.answer(req, r, now)
    }

    /// [`Registrar::create_csr`] for a CSE of SP `sp`: its `dcse` names
    /// CSEs of that SP, which are reached through it by SP-ID, so it is
    /// not taken into this SP's tree.
    fn create_foreign_csr(
        &mut self,
        req: &Request,
        fr: &str,
        sp: &str,
        csi: &CseId,
        now: Timestamp,
    ) -> Result<Response, Refusal> {
        let body = creatable_body(req)?;
        let mut csr: RemoteCse = serde_json::from_value(Value::Object(body.clone()))
            .map_err(|e| bad(format!("invalid m2m:csr: {e}")))?;
        csr.dcse = None;
        self.validate_csr(&csr, fr, now)?;
        let derived = crate::id::foreign_rn(sp, csi);
        let rn = csr.rn.clone().unwrap_or_else(|| derived.clone());
        if !valid_name(&rn, self.cfg.limits.name_length) || !valid_name(&derived, 200) {
            return Err(bad(format!("invalid resource name {:?}", truncate(&rn))));
        }
        if self.store.registree_count() >= self.cfg.limits.max_registrees {
            return Err(Refusal::Exhausted(format!(
                "this CSE accepts at most {} registrees ([registrees] max)",
                self.cfg.limits.max_registrees
            )));
        }
        if self.store.by_csi(fr).is_some() {
            return Err(Refusal::Conflict(format!("CSE {fr} is already registered")));
        }
        if self.store.by_rn(&rn).is_some()
            || rn == self.cfg.cse_base.rn
            || self.store.get(&derived).is_some()
        {
            return Err(Refusal::Conflict(format!(
                "a resource named {rn:?} already exists"
            )));
        }
        Ok(self.store_created(req, csr, rn, derived, fr, now))
    }

    fn update_csr(
        &mut self,
        req: &Request,
        fr: &str,
        hop: &str,
        admin: bool,
        ri: &str,
        now: Timestamp,
    ) -> Result<Response, Refusal> {
        if !admin {
            self.check_owner(fr, hop, ri)?;
        }
        check_rcn(req, &[0, 1])?;
        let body = csr_body(req)?;
        for k in body.keys() {
            if !CSR_ATTRIBUTES.contains(&k.as_str()) {
                return Err(bad(format!("unknown attribute {k:?} in m2m:csr")));
            }
            if CSR_NOT_UPDATABLE.contains(&k.as_str()) {
                return Err(bad(format!("attribute {k:?} cannot be updated")));
            }
        }
        let Some(current) = self.store.get(ri) else {
            return Err(Refusal::NotFound(req.to.clone()));
        };
        let mut merged =
            serde_json::to_value(current).map_err(|e| Refusal::Internal(e.to_string()))?;
        if let Value::Object(m) = &mut merged {
            for (k, v) in body {
                if v.is_null() {
                    m.remove(k);
                } else {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        for k in ["rr", "srv"] {
            if merged.get(k).is_none() {
                return Err(bad(format!("mandatory attribute {k:?} cannot be deleted")));
            }
        }
        let mut csr: RemoteCse =
            serde_json::from_value(merged).map_err(|e| bad(format!("invalid m2m:csr: {e}")))?;
        self.check_budget(Some(ri), &csr)?;
        self.validate_csr(&csr, fr, now)?;
        csr.lt = Some(now.to_onem2m());
        let pc = (req.rcn != Some(0)).then(|| csr.to_content());
        self.store.insert(ri.to_owned(), csr);
        let mut r = Response::new(Rsc::UPDATED, "");
        r.pc = pc;
        Ok(self.answer(req, r, now))
    }

    /// The checks of a CSR's attributes (docs/protocol.md §5.2) and the limits on what
    /// it makes this node hold. `csi`: the CSE it describes.
    fn validate_csr(&self, csr: &RemoteCse, csi: &str, now: Timestamp) -> Result<(), Refusal> {
        let limits = &self.cfg.limits;
        if let Some(cst) = csr.cst {
            if !(1..=3).contains(&cst) {
                return Err(bad(format!("cst {cst} is not 1 (IN), 2 (MN) or 3 (ASN)")));
            }
        }
        if let Some(cb) = &csr.cb {
            // A CSE of another SP names its CSEBase absolute (TS-0001 7.2).
            let absolute_ok = csi.starts_with("//") && cb.starts_with(&format!("{csi}/"));
            if !absolute_ok && (!cb.starts_with('/') || cb.starts_with("//") || cb.len() < 2) {
                return Err(bad(format!(
                    "cb {:?} is not an SP-relative CSEBase address like \"/id-mn/cse-mn\"",
                    truncate(cb)
                )));
            }
        }
        if let Some(srv) = &csr.srv {
            if srv.is_empty() {
                return Err(bad("srv must list at least one release version"));
            }
        }
        for (name, list) in [
            ("lbl", &csr.lbl),
            ("poa", &csr.poa),
            ("srv", &csr.srv),
            ("csz", &csr.csz),
        ] {
            let list = list.as_deref().unwrap_or_default();
            if list.len() > limits.list_entries {
                return Err(bad(format!(
                    "{name} has {} entries; at most {} are accepted",
                    list.len(),
                    limits.list_entries
                )));
            }
            if let Some(v) = list.iter().find(|v| v.len() > limits.value_length) {
                return Err(bad(format!(
                    "{name} entry {:?} is longer than {} characters",
                    truncate(v),
                    limits.value_length
                )));
            }
        }
        for (name, v) in [("cb", &csr.cb), ("nl", &csr.nl), ("rn", &csr.rn)] {
            if let Some(v) = v.as_deref().filter(|v| v.len() > limits.value_length) {
                return Err(bad(format!(
                    "{name} {:?} is longer than {} characters",
                    truncate(v),
                    limits.value_length
                )));
            }
        }
        if csr.dcse().len() > limits.dcse_entries {
            // A limit of this node, not a fault of the request: 5000 naming
            // it, which a registree keeps its registration through
            // (docs/protocol.md §5.3).
            return Err(Refusal::Exhausted(format!(
                "dcse has {} entries; at most {} are accepted ([limits] dcse_entries)",
                csr.dcse().len(),
                limits.dcse_entries
            )));
        }
        for d in csr.dcse() {
            CseId::new(d.clone()).map_err(|e| bad(format!("dcse: {e}")))?;
            if d.len() > limits.name_length {
                return Err(bad(format!("dcse entry {:?} is too long", truncate(d))));
            }
            // A descendant is below the registree and nowhere else in this
            // tree: not this CSE, not its registrar, not the registree itself,
            // not a CSE reached through another registree.
            if d == self.own().as_str()
                || self.cfg.upstream.as_ref().is_some_and(|u| u.as_str() == d)
                || d == csi
            {
                return Err(bad(format!("dcse names {d}, which cannot be below {csi}")));
            }
            if let Some(elsewhere) = self
                .store
                .descendant(d)
                .and_then(|x| self.store.get(&x.via_ri))
                .and_then(|c| c.csi())
                .filter(|via| *via != csi)
            {
                return Err(Refusal::Conflict(format!(
                    "dcse names {d}, which is already registered below {elsewhere}"
                )));
            }
        }
        for p in csr.poa.iter().flatten() {
            if p.is_empty() {
                return Err(bad("poa entries must not be empty"));
            }
        }
        if let Some(et) = &csr.et {
            match Timestamp::parse(et) {
                Some(t) if t > now => {}
                Some(_) => return Err(bad(format!("et {et} is in the past"))),
                None => return Err(bad(format!("et {:?} is not a timestamp", truncate(et)))),
            }
        }
        Ok(())
    }

    /// The whole node's memory budget (`[limits] memory_bytes`): the CSR
    /// `csr`, replacing the one at `ri` if any, must fit beside everything
    /// held already, with the answer cache and forwards at their bounds.
    /// What is stored stays; only the change is refused.
    fn check_budget(&self, ri: Option<&str>, csr: &RemoteCse) -> Result<(), Refusal> {
        let l = &self.cfg.limits;
        let old = ri.and_then(|ri| self.store.get(ri)).map_or(0, Store::cost);
        let held = self.store.bytes().saturating_sub(old)
            + l.answer_cache_bytes
            + l.forwards_in_flight.saturating_mul(FORWARD_BYTES);
        let new = Store::cost(csr);
        if held.saturating_add(new) > l.memory_bytes {
            return Err(Refusal::Exhausted(format!(
                "this CSE holds {} KiB of the {} KiB its registrees may use ([limits] memory_bytes); this CSR needs {} KiB more",
                held >> 10,
                l.memory_bytes >> 10,
                new.saturating_sub(old) >> 10
            )));
        }
        Ok(())
    }

    /// Only the CSE a CSR stands for may change or remove it, speaking for
    /// itself on its own topic.
    fn check_owner(&self, fr: &str, hop: &str, ri: &str) -> Result<(), Refusal> {
        if is_ae_id(fr) {
            return Err(Refusal::NotAllowed(format!(
                "an AE ({fr}) cannot change a <remoteCSE>"
            )));
        }
        let csr = self
            .store
            .get(ri)
            .ok_or_else(|| Refusal::NotFound(ri.to_owned()))?;
        if csr.csi() != Some(fr) || (speaker_cse(hop) != Some(fr) && hop != fr) {
            return Err(Refusal::NoPrivilege(format!(
                "{fr} (speaking through {hop}) may not change the <remoteCSE> of {}",
                csr.csi().unwrap_or("another CSE")
            )));
        }
        Ok(())
    }

    /// The configured admin, speaking for itself.
    fn is_admin(&self, fr: &str, hop: &str) -> bool {
        self.cfg
            .admin
            .as_deref()
            .is_some_and(|a| a == fr && fr.trim_start_matches('/') == hop.trim_start_matches('/'))
    }

    /// The hop is the identity (TS-0010 6.4: the topic's originator level
    /// names the client the broker authenticated; TS-0003 8: the hosting
    /// CSE checks the originator). An `fr` that names a CSE, or an ID under
    /// one, must be the hop itself or lie in the hop's registered subtree;
    /// a request from this node's own registrar may carry any originator
    /// from outside this node's subtree, never one inside it. AE-IDs
    /// (`C…`, `S…`) are not CSE-IDs and pass, as before.
    fn check_speaker(&self, fr: &str, hop: &str) -> Result<(), Refusal> {
        let Some(cse) = speaker_cse(fr) else {
            return Ok(());
        };
        let Some(hop_cse) = speaker_cse(hop) else {
            return Err(Refusal::NoPrivilege(format!(
                "{hop} may not speak for {fr}"
            )));
        };
        if cse == hop_cse {
            return Ok(());
        }
        let inside = cse == self.own().as_str() || self.store.descendant(cse).is_some();
        if self
            .cfg
            .upstream
            .as_ref()
            .is_some_and(|u| u.as_str() == hop_cse)
        {
            return if inside {
                Err(Refusal::NoPrivilege(format!(
                    "{fr} is below this CSE and cannot come from its registrar {hop}"
                )))
            } else {
                Ok(())
            };
        }
        let via_hop = self
            .store
            .descendant(cse)
            .and_then(|d| self.store.get(&d.via_ri))
            .and_then(|c| c.csi())
            == Some(hop_cse);
        if via_hop {
            return Ok(());
        }
        Err(Refusal::NoPrivilege(format!(
            "{hop} may not speak for {fr}: it is neither that CSE nor registered below it"
        )))
    }

    /// Whether an allow-list pattern for other SPs (`//sp-b.example/*`)
    /// admits the absolute CSE-ID `abs`, or it is the IN-CSE of a peer SP
    /// this one registers at (a peering is mutual). `*` alone stays within
    /// the SP.
    pub fn allows_foreign(&self, abs: &str) -> bool {
        self.cfg
            .allowed
            .iter()
            .any(|p| p.starts_with("//") && glob_match(p, abs))
            || self
                .cfg
                .peers
                .iter()
                .any(|(sp, id)| crate::id::split_absolute(abs) == Some((sp, id.as_str())))
    }

    /// A request for a target in SP `sp` (TS-0001 7.3): up to the
    /// registrar, whose IN knows the way; at the IN, to the peer SP's IN,
    /// with `fr` made absolute (IDs become absolute when they leave the SP,
    /// TS-0001 7.2).
    fn forward_across(
        &self,
        req: &Request,
        fr: &str,
        sp: &str,
        hop: &str,
    ) -> Result<Outcome, Refusal> {
        let unreachable =
            || Refusal::NotFound(format!("{} (SP //{sp} is not reachable from here)", req.to));
        if let Some(up) = &self.cfg.upstream {
            if speaker_cse(hop) == Some(up.as_str()) {
                return Err(unreachable());
            }
            return self.forward(req, fr, up.as_str(), hop);
        }
        // A configured peer SP's IN, else an IN of that SP registered
        // here (it registered across, e.g. ACME).
        let peer = match self.cfg.peers.iter().find(|(s, _)| s == sp) {
            Some((_, id)) => id.clone(),
            None => self
                .store
                .registrees()
                .filter_map(|(_, c)| c.csi())
                .filter_map(crate::id::split_absolute)
                .find(|(s, _)| *s == sp)
                .and_then(|(_, rel)| CseId::new(rel).ok())
                .ok_or_else(unreachable)?,
        };
        if req.op == Operation::Create
            && matches!(req.ty, Some(ResourceType::REMOTE_CSE | ResourceType::AE))
        {
            return Err(bad(format!(
                "a registration must be sent to the registrar, not through {}",
                self.own()
            )));
        }
        let own_sp = self.cfg.sp_id.as_deref().unwrap_or_default();
        let mut fwd = req.clone();
        fwd.fr = Some(if fr.starts_with("//") {
            fr.to_owned()
        } else if fr.starts_with('/') {
            format!("//{own_sp}{fr}")
        } else {
            format!("//{own_sp}{}/{fr}", self.own())
        });
        Ok(Outcome::Forward {
            next_hop: peer,
            request: fwd,
        })
    }

    /// Where a request for CSE `csi` goes next (docs/protocol.md §4.3).
    fn forward(&self, req: &Request, fr: &str, csi: &str, hop: &str) -> Result<Outcome, Refusal> {
        if req.op == Operation::Create
            && matches!(req.ty, Some(ResourceType::REMOTE_CSE | ResourceType::AE))
        {
            return Err(bad(format!(
                "a registration must be sent to the registrar, not through {}",
                self.own()
            )));
        }
        let next_hop = self
            .next_hop(csi, hop)
            .ok_or_else(|| Refusal::NotFound(req.to.clone()))?;
        let mut fwd = req.clone();
        if !fr.starts_with('/') {
            fwd.fr = Some(format!("{}/{fr}", self.own()));
        }
        Ok(Outcome::Forward {
            next_hop,
            request: fwd,
        })
    }

    /// The CSE through which `csi` is reached: a direct registree or the
    /// registrar itself, the registree below which it is a descendant, or
    /// else the registrar (unless the request came from there). O(log n).
    pub fn next_hop(&self, csi: &str, hop: &str) -> Option<CseId> {
        if let Some((_, csr)) = self.store.by_csi(csi) {
            return csr.csi().and_then(|c| CseId::new(c).ok());
        }
        if let Some(d) = self.store.descendant(csi) {
            return self
                .store
                .get(&d.via_ri)?
                .csi()
                .and_then(|c| CseId::new(c).ok());
        }
        match &self.cfg.upstream {
            Some(up) if up.as_str() != hop => Some(up.clone()),
            _ => None,
        }
    }

    /// The SP-relative address of the `<remoteCSE>` that stands for `csi`
    /// (ACME `getRemoteCSEBaseAddress`): the local CSR for a registree (or
    /// the registrar), and for a descendant its CSR at the CSE it is
    /// registered at, which registrars name after the CSE-ID (docs/protocol.md §3.1).
    pub fn remote_address(&self, csi: &str) -> Option<String> {
        if let Some((ri, _)) = self.store.by_csi(csi) {
            return Some(format!("{}/{ri}", self.own()));
        }
        let d = self.store.descendant(csi)?;
        Some(format!(
            "{}/{}",
            d.registered_at,
            csi.trim_start_matches('/')
        ))
    }
}

/// The `m2m:csr` of a CREATE, checked: `rcn` 0 or 1, only attributes of
/// a `<remoteCSE>` that an originator may set, and the mandatory ones there
/// (TS-0004 7.4.4.2.1; docs/protocol.md §5.2).
fn creatable_body(req: &Request) -> Result<&serde_json::Map<String, Value>, Refusal> {
    check_rcn(req, &[0, 1])?;
    let body = csr_body(req)?;
    for k in body.keys() {
        if !CSR_ATTRIBUTES.contains(&k.as_str()) {
            return Err(bad(format!("unknown attribute {k:?} in m2m:csr")));
        }
        if CSR_NOT_CREATABLE.contains(&k.as_str()) {
            return Err(bad(format!(
                "attribute {k:?} is assigned by the registrar and cannot be set"
            )));
        }
    }
    for k in ["cb", "rr", "srv", "csi"] {
        if body.get(k).is_none_or(Value::is_null) {
            return Err(bad(format!("missing mandatory attribute {k:?}")));
        }
    }
    Ok(body)
}

fn csr_body(req: &Request) -> Result<&serde_json::Map<String, Value>, Refusal> {
    let pc = req.pc.as_ref().ok_or_else(|| bad("missing content (pc)"))?;
    let Some(Value::Object(body)) = pc.get("m2m:csr") else {
        return Err(bad("content must be an m2m:csr object"));
    };
    if pc.as_object().map(|m| m.len()) != Some(1) {
        return Err(bad("content must hold exactly one resource"));
    }
    Ok(body)
}

/// An integer filter value, as a number or a numeric string.
fn number(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        })
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// A value quoted in an error message, cut short: an answer must not echo
/// a huge attribute back.
fn truncate(v: &str) -> String {
    match v.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &v[..i]),
        None => v.to_owned(),
    }
}

/// `rcn` must be valid for the operation (TS-0004 7.3.2.1) and one this
/// node can produce.
fn check_rcn(req: &Request, supported: &[u8]) -> Result<(), Refusal> {
    let Some(rcn) = req.rcn else { return Ok(()) };
    let valid: &[u8] = match req.op {
        Operation::Create => &[0, 1, 2, 3, 9],
        Operation::Retrieve => &[1, 4, 5, 6, 7, 8, 10],
        Operation::Update => &[0, 1, 9],
        Operation::Delete => &[0, 1, 4, 5, 6, 8],
        Operation::Notify => &[],
    };
    if !valid.contains(&rcn) {
        return Err(bad(format!("rcn {rcn} is not valid for {}", req.op.name())));
    }
    if !supported.contains(&rcn) {
        return Err(Refusal::NotImplemented(format!(
            "rcn {rcn} is not supported for {}",
            req.op.name()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registrar() -> Registrar {
        let now = Timestamp::from_secs(1_700_000_000);
        let cfg = crate::config::Config::from_str(
            "[cse]\nid = \"/id-in\"\nname = \"cse-in\"\ntype = \"IN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n",
            std::path::Path::new("test.toml"),
        )
        .expect("config");
        Registrar::new(cfg.registrar_settings(now))
    }

    #[test]
    fn remote_addresses_of_registrees_and_descendants() {
        let mut r = registrar();
        r.store_mut().insert(
            "id-mn".into(),
            RemoteCse {
                csi: Some("/id-mn".into()),
                dcse: Some(vec!["/id-asn".into()]),
                ..RemoteCse::default()
            },
        );
        assert_eq!(r.remote_address("/id-mn").as_deref(), Some("/id-in/id-mn"));
        assert_eq!(
            r.remote_address("/id-asn").as_deref(),
            Some("/id-mn/id-asn")
        );
        assert_eq!(r.remote_address("/id-nobody"), None);
        assert_eq!(
            r.next_hop("/id-asn", "/id-x").map(String::from),
            Some("/id-mn".into())
        );
        assert_eq!(
            r.next_hop("/id-nobody", "/id-x"),
            None,
            "an IN-CSE has nowhere else to ask"
        );
    }
}

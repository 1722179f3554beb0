//! The virtual `m2mnode-status` resource below the CSEBase: what
//! `m2mnode status` shows (not a oneM2M resource type; docs/operations.md
//! documents it). Registrees and descendants are also available the oneM2M
//! way: discovery `fu=1&ty=16`, `rcn=4`/`6`/`8`.

use super::registrar::Page;
use super::Engine;
use crate::id::{resolve, Target};
use crate::topic::Link;
use serde_json::{json, Value};

/// The name of the status resource below the CSEBase.
pub(super) const STATUS_RN: &str = "m2mnode-status";

/// Whether `to` addresses the status resource of `engine`'s CSE.
pub(super) fn is_target(engine: &Engine, to: &str) -> bool {
    let Ok(Target::Local(path)) = resolve(to, &engine.own, None) else {
        return false;
    };
    match path.split_once('/') {
        Some((base, STATUS_RN)) => base == "-" || base == engine.registrar.cse_base().rn,
        _ => false,
    }
}

/// Registrees in one status answer unless the request's `lim` says
/// otherwise (`m2mnode status --all` asks for the next pages).
pub(super) const STATUS_PAGE: usize = 1000;

/// Descendants listed in the status at most (the count says how many
/// there are; discovery lists them all, a page at a time).
const DESCENDANTS_SHOWN: usize = 100;

/// The status resource's content for the page `page` of registrees, and the
/// `ofst` of the next page when there are more. Counts are O(1), the
/// registrees are made one at a time up to the page's bound: a status
/// request costs the same with 100,000 registrees as with ten.
pub(super) fn status(engine: &Engine, page: Page) -> (Value, Option<usize>) {
    let store = engine.registrar.store();
    let registrar = engine.upstream.as_ref().map(|u| {
        let m = &u.machine;
        json!({
            "id": u.registrar.as_str(),
            "registered": m.is_registered(),
            "since": m.registered_since().map(|t| t.to_onem2m()),
            "last_check": m.last_check().map(|t| t.to_onem2m()),
        })
    });
    let (registrees, next) = page.collect(store.registrees().filter_map(|(_, c)| {
        let csi = c.csi()?;
        Some(json!({
            "csi": csi,
            // Registered at (the CSR's ct): one registered a moment ago
            // has not been probed yet, which is not "never alive".
            "since": c.ct,
            "misses": engine.liveness.misses(csi).unwrap_or(0),
            "last_ok": engine.liveness.last_ok(csi).map(|t| t.to_onem2m()),
        }))
    }));
    let links = &engine.links;
    let status = json!({ "m2mnode:status": {
        "cse": engine.own.as_str(),
        "connected": links.all_up(),
        "links": {
            "local": links.is_up(Link::LOCAL),
            "upstream": engine.upstream.as_ref().map(|_| links.is_up(links.registrar())),
        },
        "registrar": registrar,
        "peer_sps": engine.peer_status(),
        "registree_count": store.registree_count(),
        "registrees": registrees,
        "descendant_count": store.descendant_count(),
        "descendants": store.descendants_page(0, DESCENDANTS_SHOWN).collect::<Vec<_>>(),
        "store": {
            "durable": engine.durability.is_durable(),
            "unwritten": engine.durability.unwritten(),
            "bytes": store.bytes(),
            "memory_bytes": engine.registrar.limits().memory_bytes,
        },
        "counts": engine.tally.json(),
        "forwards": engine.forwards.forwards_in_flight(),
    }});
    (status, next)
}

//! The virtual `m2mnode-status` resource below the CSEBase: what
//! `m2mnode status` shows (not a oneM2M resource type; docs/operations.md
//! documents it). Registrees and descendants are also available the oneM2M
//! way: discovery `fu=1&ty=16`, `rcn=4`/`6`/`8`.

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

/// The status resource's content.
pub(super) fn status(engine: &Engine) -> Value {
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
    let registrees: Vec<Value> = store
        .registrees()
        .filter_map(|(_, c)| c.csi())
        .map(|csi| {
            json!({
                "csi": csi,
                "misses": engine.liveness.misses(csi).unwrap_or(0),
                "last_ok": engine.liveness.last_ok(csi).map(|t| t.to_onem2m()),
            })
        })
        .collect();
    let links = &engine.links;
    json!({ "m2mnode:status": {
        "cse": engine.own.as_str(),
        "connected": links.all_up(),
        "links": {
            "local": links.is_up(Link::LOCAL),
            "upstream": engine.upstream.as_ref().map(|_| links.is_up(links.registrar())),
        },
        "registrar": registrar,
        "registrees": registrees,
        "descendants": store.descendant_ids(),
        "store": {
            "durable": engine.durability.is_durable(),
            "unwritten": engine.durability.unwritten(),
        },
        "counts": engine.tally.json(),
    }})
}

//! Mobius's real traffic (proto/fixtures/mobius-registration.txt): every
//! message decodes, in JSON as captured and re-encoded as CBOR; every answer
//! also comes on a topic without the type level, which is no oneM2M topic
//! and is ignored; and the refusal and the `m2m:cb` are what docs/mobius.md
//! says they are.

use m2mnode::primitive::{Format, Operation, Request, Response, Rsc};
use m2mnode::resource::RemoteCse;
use m2mnode::topic::{self, Kind};
use serde_json::Value;
use std::path::Path;

/// (topic, raw payload) of every message line: `TIME TOPIC PAYLOAD`.
fn fixture() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/fixtures/mobius-registration.txt");
    let text = std::fs::read_to_string(&path).expect("fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (_time, t, p) = (parts.next(), parts.next(), parts.next());
            (t.expect("TOPIC").to_owned(), p.expect("PAYLOAD").to_owned())
        })
        .collect()
}

#[test]
fn every_mobius_message_decodes_in_json_and_cbor() {
    let msgs = fixture();
    assert_eq!(msgs.len(), 17);
    let (mut requests, mut responses, mut untyped, mut twins) = (0, 0, 0, 0);
    for (t, payload) in &msgs {
        let Some(route) = topic::parse(t) else {
            // The other copy of an answer (the capture has its twin on
            // `.../json` for all but one): no oneM2M topic, but the answer
            // itself is readable.
            untyped += 1;
            assert!(t.starts_with("/oneM2M/resp/"), "{t}");
            let twin = format!("{t}/json");
            twins += usize::from(msgs.iter().any(|(t2, p2)| *t2 == twin && p2 == payload));
            Format::Json
                .decode_response(payload.as_bytes())
                .unwrap_or_else(|e| panic!("{t}: {e}"));
            continue;
        };
        let captured: Value = serde_json::from_str(payload).expect("payload JSON");
        let cbor = Format::Cbor.encode(&captured).expect("cbor");
        match route.kind {
            Kind::Request => {
                requests += 1;
                let r: Request = Format::Json
                    .decode_request(payload.as_bytes())
                    .unwrap_or_else(|e| panic!("{t}: {e}"));
                assert_eq!(Format::Cbor.decode_request(&cbor).expect("cbor"), r, "{t}");
                assert_eq!(serde_json::to_value(&r).expect("json"), captured, "{t}");
            }
            Kind::Response => {
                responses += 1;
                let r: Response = Format::Json
                    .decode_response(payload.as_bytes())
                    .unwrap_or_else(|e| panic!("{t}: {e}"));
                assert_eq!(Format::Cbor.decode_response(&cbor).expect("cbor"), r, "{t}");
                // Only rsc, rqi and pc: no rvi, fr or to.
                assert!(r.rvi.is_none() && r.fr.is_none() && r.to.is_none(), "{t}");
                assert_eq!(serde_json::to_value(&r).expect("json"), captured, "{t}");
                if let Some(pc) = r.pc.as_ref().filter(|pc| pc.get("m2m:csr").is_some()) {
                    let csr = RemoteCse::from_content(pc).unwrap_or_else(|e| panic!("{t}: {e}"));
                    assert_eq!(csr.csi.as_deref(), Some("/id-mn"), "{t}");
                }
            }
        }
    }
    assert_eq!((requests, responses, untyped, twins), (4, 6, 7, 6));
}

#[test]
fn mobius_refuses_csz_and_dcse_without_naming_them_and_declares_no_csz() {
    let msgs = fixture();
    let rsp = |i: usize| {
        Format::Json
            .decode_response(msgs[i].1.as_bytes())
            .expect("response")
    };
    let cb = RemoteCse::from_cse_base(rsp(2).pc.as_ref().expect("pc")).expect("m2m:cb");
    assert_eq!(cb.csi.as_deref(), Some("/Mobius2"));
    assert_eq!(cb.csz, None, "Mobius declares no serialization");
    let create = Format::Json
        .decode_request(msgs[6].1.as_bytes())
        .expect("request");
    assert_eq!(create.op, Operation::Create);
    let body = &create.pc.as_ref().expect("pc")["m2m:csr"];
    assert!(body.get("csz").is_some() && body.get("dcse").is_some());
    let refusal = rsp(8);
    assert_eq!(refusal.rsc, Rsc::BAD_REQUEST);
    assert_eq!(
        refusal.debug_text(),
        Some("BAD REQUEST: attribute is not defined")
    );
    // Taken without them: the CREATE answer shows neither.
    let created = rsp(10);
    assert_eq!(created.rsc, Rsc::CREATED);
    let csr = RemoteCse::from_content(created.pc.as_ref().expect("pc")).expect("m2m:csr");
    assert_eq!((csr.csz, csr.dcse), (None, None));
}

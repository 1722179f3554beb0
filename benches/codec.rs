//! Criterion benches of the pure hot path: decode, handle, encode.

use criterion::{criterion_group, criterion_main, Criterion};
use m2mnode::config::Config;
use m2mnode::engine::Registrar;
use m2mnode::primitive::{Format, Request};
use m2mnode::time::Timestamp;
use m2mnode::topic;
use std::hint::black_box;
use std::path::Path;

const CREATE: &[u8] = br#"{"fr": "/id-mn", "to": "/id-in/cse-in", "ot": "20261125T191258,970832", "op": 1, "ty": 16, "rqi": "NZgkl7HMWs", "rvi": "5", "drt": 1, "pc": {"m2m:csr": {"rn": "id-mn", "rr": true, "cst": 2, "csz": ["application/json", "application/vnd.onem2m-res+json", "application/cbor", "application/vnd.onem2m-res+cbor"], "srv": ["2a", "3", "4", "5"], "spi": "//acme.example.com", "csi": "/id-mn", "cb": "/id-mn/cse-mn", "dcse": [], "poa": ["mqtt://127.0.0.1:18830"]}}}"#;
const RETRIEVE: &[u8] = br#"{"fr": "/id-mn", "to": "/id-in/cse-in/id-mn", "ot": "20261125T191303,929439", "op": 2, "rqi": "m7owghV0pK", "rvi": "5", "drt": 1}"#;

fn registrar() -> Registrar {
    let cfg = Config::from_str(
        "[cse]\nid = \"/id-in\"\nname = \"cse-in\"\ntype = \"IN\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n",
        Path::new("bench.toml"),
    )
    .expect("config");
    Registrar::new(cfg.registrar_settings(Timestamp::now()))
}

fn codec(c: &mut Criterion) {
    let req = Format::Json.decode_request(CREATE).expect("decode");
    let cbor = Format::Cbor.encode(&req).expect("cbor");
    c.bench_function("decode csr create (json)", |b| {
        b.iter(|| Format::Json.decode_request(black_box(CREATE)))
    });
    c.bench_function("decode csr create (cbor)", |b| {
        b.iter(|| Format::Cbor.decode_request(black_box(&cbor)))
    });
    c.bench_function("encode csr create (json)", |b| {
        b.iter(|| Format::Json.encode(black_box(&req)))
    });
    c.bench_function("encode csr create (cbor)", |b| {
        b.iter(|| Format::Cbor.encode(black_box(&req)))
    });
    c.bench_function("route a request topic", |b| {
        b.iter(|| topic::parse(black_box("/oneM2M/req/id-mn/id-in/json")))
    });
}

fn handling(c: &mut Criterion) {
    let mut r = registrar();
    let create: Request = Format::Json.decode_request(CREATE).expect("decode");
    r.handle(&create, "/id-mn", Timestamp::now());
    let now = Timestamp::now();
    c.bench_function("csr retrieve: decode + handle + encode", |b| {
        b.iter(|| {
            let req = Format::Json
                .decode_request(black_box(RETRIEVE))
                .expect("decode");
            match r.handle(&req, "/id-mn", now) {
                m2mnode::engine::Outcome::Respond { response, .. } => {
                    Format::Json.encode(&response)
                }
                m2mnode::engine::Outcome::Forward { .. } => unreachable!(),
            }
        })
    });
}

criterion_group!(benches, codec, handling);
criterion_main!(benches);

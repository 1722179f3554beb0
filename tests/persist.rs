//! The SQLite store on a full file system: a commit that cannot be written
//! fails, and the store still holds the last committed state.

mod common;

use common::{fill, Tmpfs};
use m2mnode::persist::{Persistence, Snapshot, Sqlite, StoreChange, DB_FILE};
use m2mnode::resource::RemoteCse;

fn csr(csi: &str, padding: usize) -> RemoteCse {
    let mut other = serde_json::Map::new();
    other.insert("lbl-pad".into(), serde_json::json!("p".repeat(padding)));
    RemoteCse {
        csi: Some(csi.into()),
        rn: Some(csi.trim_start_matches('/').into()),
        other,
        ..RemoteCse::default()
    }
}

#[test]
fn a_commit_on_a_full_disk_fails_and_keeps_the_last_committed_state() {
    let fs = Tmpfs::mount("512k").unwrap_or_else(|reason| {
        panic!("cannot mount a tmpfs ({reason}): this test needs root (CI runs as root)")
    });
    let dir = fs.0.join("data");
    let filler = fs.0.join("filler");

    let mut db = Sqlite::open(&dir).expect("open");
    let committed = [
        StoreChange::Put {
            ri: "r1".into(),
            csr: csr("/id-a", 100),
        },
        StoreChange::OwnCsrRn(Some("id-mn".into())),
    ];
    db.commit(&committed)
        .expect("commit before the disk is full");
    let want = Snapshot {
        csrs: vec![("r1".into(), csr("/id-a", 100))],
        own_csr_rn: Some("id-mn".into()),
        answered: Vec::new(),
        registrars: Vec::new(),
    };

    fill(&filler);
    // Far more than any slack left in the WAL or the database file.
    let big: Vec<StoreChange> = (0..30)
        .map(|i| StoreChange::Put {
            ri: format!("big{i}"),
            csr: csr(&format!("/id-big{i}"), 8192),
        })
        .chain([
            StoreChange::Remove { ri: "r1".into() },
            StoreChange::OwnCsrRn(None),
        ])
        .collect();
    let err = db
        .commit(&big)
        .expect_err("a commit on a full disk must fail");
    let msg = err.to_string();
    assert!(
        msg.contains(&*dir.join(DB_FILE).to_string_lossy()) && msg.contains("full"),
        "{msg}"
    );
    assert_eq!(db.load().expect("load after the failure"), want);

    std::fs::remove_file(&filler).expect("free space");
    drop(db);
    let mut db = Sqlite::open(&dir).expect("reopen");
    assert_eq!(db.load().expect("load after reopen"), want);

    // With space again, the same batch goes through.
    db.commit(&big).expect("commit with space");
    drop(db);
    let got = Sqlite::open(&dir).expect("reopen").load().expect("load");
    assert_eq!(got.csrs.len(), 30);
    assert_eq!(got.own_csr_rn, None);
}

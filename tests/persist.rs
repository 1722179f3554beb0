//! The SQLite store on a full file system: a commit that cannot be written
//! fails, and the store still holds the last committed state.

use m2mnode::persist::{Persistence, Snapshot, Sqlite, StoreChange, DB_FILE};
use m2mnode::resource::RemoteCse;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tiny tmpfs, unmounted (and its mount point removed) when dropped, also
/// when the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir =
            std::env::temp_dir().join(format!("m2mnode-persist-tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(Tmpfs(dir)),
            Ok(o) => {
                let _ = std::fs::remove_dir(&dir);
                Err(String::from_utf8_lossy(&o.stderr).trim().to_owned())
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(format!("cannot run mount: {e}"))
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (e.g. a panic left a file open): detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes to `path` until the file system says it is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create filler");
    for chunk in [64 * 1024, 4096, 512, 1] {
        let buf = vec![0xa5u8; chunk];
        while let Ok(n) = f.write(&buf) {
            if n == 0 {
                break;
            }
        }
    }
    let _ = f.sync_all();
}

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
    let fs = match Tmpfs::mount("512k") {
        Ok(fs) => fs,
        Err(reason) => {
            eprintln!("skipped: cannot mount a tmpfs ({reason}); this test needs root");
            return;
        }
    };
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

//! The [`Persistence`] of one node: an SQLite database in `data_dir`.
//!
//! Layout (schema 3, kept in `PRAGMA user_version`; schema 1 lacked
//! `answered`, schema 2 lacked `registrar`; both are migrated on open):
//! - `csr(ri TEXT PRIMARY KEY, body TEXT NOT NULL)`: one row per `<remoteCSE>`,
//!   `body` the JSON of [`RemoteCse`], so an operator can read it with the
//!   `sqlite3` tool (`SELECT ri, body FROM csr`);
//! - `meta(key TEXT PRIMARY KEY, value TEXT)`: `own_csr_rn`, and `imported`
//!   once an old `m2mnode-store.json` was taken over;
//! - `answered(seq, hop, fr, rqi, rsp)`: the answers of the latest changes,
//!   for requests redelivered after a crash;
//! - `registrar(csi TEXT PRIMARY KEY, refused TEXT NOT NULL)`: what the node
//!   learned about a registrar, `refused` the JSON list of the optional
//!   `<remoteCSE>` attributes it refused (docs/protocol.md §5.6).
//!
//! Durability: WAL with `synchronous=FULL`, so every COMMIT syncs the WAL
//! before it returns. With `synchronous=NORMAL` a WAL commit is only synced
//! at the next checkpoint, and a power loss could take back a commit the
//! engine has already answered.
//!
//! The data directory is locked (an exclusive `flock` on `m2mnode.lock`) for
//! as long as the [`Sqlite`] lives: two nodes on one store would each answer
//! from their own memory and overwrite each other's rows. The lock file is
//! never deleted, because deleting it would let a third process lock a new
//! file while the second still holds the old one.

use super::{
    Answered, PersistError, Persistence, RegistrarMemo, Snapshot, StoreChange, ANSWERS_KEPT,
};
use crate::resource::RemoteCse;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// The database, in `data_dir`.
pub const DB_FILE: &str = "m2mnode.db";
/// Locked while a node uses `data_dir`.
pub const LOCK_FILE: &str = "m2mnode.lock";
/// The store of earlier versions, imported once (see [`Sqlite::open`]).
pub const OLD_JSON_FILE: &str = "m2mnode-store.json";
/// What [`OLD_JSON_FILE`] is renamed to once imported.
pub const OLD_JSON_IMPORTED: &str = "m2mnode-store.json.imported";

/// The schema this version writes and reads. A later version that changes
/// the tables bumps it and migrates older stores in [`Sqlite::open`].
const SCHEMA: i64 = 3;
/// The only format version [`OLD_JSON_FILE`] ever had.
const OLD_JSON_VERSION: u32 = 1;

const META_OWN_CSR_RN: &str = "own_csr_rn";
const META_IMPORTED: &str = "imported";

const SQL_PUT: &str = "INSERT INTO csr(ri, body) VALUES (?1, ?2) \
                       ON CONFLICT(ri) DO UPDATE SET body = excluded.body";
const SQL_REMOVE: &str = "DELETE FROM csr WHERE ri = ?1";
const SQL_ANSWERED_TABLE: &str = "CREATE TABLE answered(seq INTEGER PRIMARY KEY AUTOINCREMENT, \
    hop TEXT NOT NULL, fr TEXT NOT NULL, rqi TEXT NOT NULL, rsp TEXT NOT NULL, UNIQUE(hop, fr, rqi));";
const SQL_REGISTRAR_TABLE: &str =
    "CREATE TABLE registrar(csi TEXT PRIMARY KEY, refused TEXT NOT NULL);";
const SQL_PUT_REGISTRAR: &str = "INSERT INTO registrar(csi, refused) VALUES (?1, ?2) \
                                 ON CONFLICT(csi) DO UPDATE SET refused = excluded.refused";
const SQL_DEL_REGISTRAR: &str = "DELETE FROM registrar WHERE csi = ?1";
const SQL_ANSWER: &str =
    "INSERT OR REPLACE INTO answered(hop, fr, rqi, rsp) VALUES (?1, ?2, ?3, ?4)";
const SQL_FORGET_ANSWER: &str = "DELETE FROM answered WHERE hop = ?1 AND fr = ?2 AND rqi = ?3";
const SQL_TRIM_ANSWERS: &str =
    "DELETE FROM answered WHERE seq <= (SELECT MAX(seq) FROM answered) - ?1";
const SQL_SET_META: &str = "INSERT INTO meta(key, value) VALUES (?1, ?2) \
                            ON CONFLICT(key) DO UPDATE SET value = excluded.value";
const SQL_DEL_META: &str = "DELETE FROM meta WHERE key = ?1";

/// The old JSON store, read on its own so that the module that wrote it
/// (`resource::store`) can be deleted without touching this one.
#[derive(Deserialize)]
struct OldStore {
    version: u32,
    csrs: BTreeMap<String, RemoteCse>,
    #[serde(default)]
    own_csr_rn: Option<String>,
}

/// A node's store in `dir/m2mnode.db`; `dir` stays locked while this lives.
#[derive(Debug)]
pub struct Sqlite {
    // Fields drop in declaration order: the database is closed (and its WAL
    // checkpointed) before the lock is released.
    conn: Connection,
    path: PathBuf,
    /// The files the connection writes (the database and its `-wal`) as
    /// (device, inode) when first seen: one removed or replaced under the
    /// running node is found at the next commit, which is refused then and
    /// ever after (docs/operations.md "Store"), instead of acknowledging
    /// changes into a file nobody will read again.
    files: Vec<(PathBuf, Option<(u64, u64)>)>,
    /// The first such finding; every later commit is refused with it.
    gone: Option<String>,
    _lock: File,
}

impl Sqlite {
    /// Opens (creating if need be) the store in `dir` and locks `dir`.
    ///
    /// If `dir/m2mnode-store.json` (the store of earlier versions) exists and
    /// the database holds nothing and never imported anything, that file is
    /// imported in one transaction and then renamed to
    /// `m2mnode-store.json.imported`, so it is imported once. A JSON file
    /// that does not parse is an error, never an empty store: that would
    /// make the node forget its registrees.
    pub fn open(dir: &Path) -> Result<Sqlite, PersistError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        let lock = lock_dir(dir)?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|e| sql_err(&path, "open", e))?;
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let files = vec![(path.clone(), None), (PathBuf::from(wal), None)];
        let mut db = Sqlite {
            conn,
            path,
            files,
            gone: None,
            _lock: lock,
        };
        db.prepare_schema()?;
        db.import_old_json(dir)?;
        db.note_files();
        Ok(db)
    }

    /// Records the identity of each file not yet seen.
    fn note_files(&mut self) {
        for (path, id) in &mut self.files {
            if id.is_none() {
                *id = file_id(path);
            }
        }
    }

    /// The first file that is no longer the one this connection writes.
    fn check_files(&mut self) -> Result<(), PersistError> {
        if self.gone.is_none() {
            self.gone = self.files.iter().find_map(|(path, id)| {
                let was = (*id)?;
                match file_id(path) {
                    Some(now) if now == was => None,
                    Some(_) => Some(format!("{} was replaced", path.display())),
                    None => Some(format!("{} was removed", path.display())),
                }
            });
        }
        match &self.gone {
            None => Ok(()),
            Some(why) => Err(io_err(
                "write",
                &self.path,
                std::io::Error::other(format!(
                    "{why} under the running node; changes are refused until it is restarted (it then reads what the files hold)"
                )),
            )),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn prepare_schema(&mut self) -> Result<(), PersistError> {
        let path = &self.path;
        // The first read of the header: a file that is not a database fails
        // here, before anything is written to it.
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_err(path, "read", e))?;
        if version > SCHEMA {
            return Err(PersistError::NewerSchema {
                path: path.clone(),
                found: version,
                supported: SCHEMA,
            });
        }
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| sql_err(path, "open", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(io_err(
                "open",
                path,
                std::io::Error::other(format!("journal_mode is {mode}, WAL is needed")),
            ));
        }
        // The store is read once, at start; the page cache only helps writes
        // find their pages, and 256 KiB does that (the default is 2 MB).
        self.conn
            .execute_batch("PRAGMA synchronous=FULL; PRAGMA cache_size=-256")
            .map_err(|e| sql_err(path, "open", e))?;
        if version == SCHEMA {
            return Ok(());
        }
        if version == 1 || version == 2 {
            // Each step adds what its schema lacked, in one transaction with
            // the new version.
            let answered = if version == 1 { SQL_ANSWERED_TABLE } else { "" };
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql_err(path, "write", e))?;
            tx.execute_batch(&format!(
                "{answered} {SQL_REGISTRAR_TABLE} PRAGMA user_version = {SCHEMA};"
            ))
            .map_err(|e| sql_err(path, "write", e))?;
            return tx.commit().map_err(|e| sql_err(path, "write", e));
        }
        // version 0: a new, empty file, unless someone else's database sits
        // at our path; then refuse rather than add tables to it.
        let tables: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| sql_err(path, "read", e))?;
        if tables > 0 {
            return Err(PersistError::Corrupt {
                path: path.clone(),
                reason: "it holds tables but no m2mnode schema version".into(),
            });
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(path, "write", e))?;
        // user_version lives in the database header, which is written inside
        // the transaction: the tables and the version appear together.
        tx.execute_batch(&format!(
            "CREATE TABLE csr(ri TEXT PRIMARY KEY, body TEXT NOT NULL);
             CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
             {SQL_ANSWERED_TABLE}
             {SQL_REGISTRAR_TABLE}
             PRAGMA user_version = {SCHEMA};"
        ))
        .map_err(|e| sql_err(path, "write", e))?;
        tx.commit().map_err(|e| sql_err(path, "write", e))
    }

    fn import_old_json(&mut self, dir: &Path) -> Result<(), PersistError> {
        let json = dir.join(OLD_JSON_FILE);
        let bytes = match std::fs::read(&json) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("read", &json, e)),
        };
        let path = &self.path;
        let imported: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [META_IMPORTED],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sql_err(path, "read", e))?;
        if imported.is_some() {
            // The import committed but the node stopped before the rename:
            // finish it, do not import twice.
            return retire_old_json(dir, &json);
        }
        let has_data: bool = self
            .conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM csr) OR EXISTS(SELECT 1 FROM meta)",
                [],
                |r| r.get(0),
            )
            .map_err(|e| sql_err(path, "read", e))?;
        if has_data {
            // E.g. an older m2mnode ran on this data_dir after this one:
            // which store is right is the operator's call, not ours.
            return Err(PersistError::Corrupt {
                path: json,
                reason: format!(
                    "{} already holds a store; move one of the two away",
                    path.display()
                ),
            });
        }
        let old: OldStore = serde_json::from_slice(&bytes).map_err(|e| PersistError::Corrupt {
            path: json.clone(),
            reason: e.to_string(),
        })?;
        if old.version != OLD_JSON_VERSION {
            return Err(PersistError::Corrupt {
                path: json,
                reason: format!("unknown format version {}", old.version),
            });
        }
        let mut changes: Vec<StoreChange> = old
            .csrs
            .into_iter()
            .map(|(ri, csr)| StoreChange::Put { ri, csr })
            .collect();
        changes.push(StoreChange::OwnCsrRn(old.own_csr_rn));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(path, "write", e))?;
        apply(&tx, path, &changes)?;
        tx.execute(SQL_SET_META, [META_IMPORTED, OLD_JSON_FILE])
            .map_err(|e| sql_err(path, "write", e))?;
        tx.commit().map_err(|e| sql_err(path, "write", e))?;
        retire_old_json(dir, &json)
    }
}

impl Persistence for Sqlite {
    fn load(&mut self) -> Result<Snapshot, PersistError> {
        let path = &self.path;
        let rerr = |e| sql_err(path, "read", e);
        let mut csrs = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT ri, body FROM csr ORDER BY ri")
                .map_err(rerr)?;
            let mut rows = stmt.query([]).map_err(rerr)?;
            while let Some(row) = rows.next().map_err(rerr)? {
                let ri = match row.get_ref(0).map_err(rerr)? {
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other => format!("{other:?}"),
                };
                let bad = |reason: String| PersistError::BadRow {
                    path: path.clone(),
                    ri: ri.clone(),
                    reason,
                };
                let body = match row.get_ref(1).map_err(rerr)? {
                    ValueRef::Text(t) => t,
                    other => return Err(bad(format!("body is {:?}, not text", other.data_type()))),
                };
                let csr: RemoteCse =
                    serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
                csrs.push((ri, csr));
            }
        }
        let own_csr_rn: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [META_OWN_CSR_RN],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map_err(|e| PersistError::Corrupt {
                path: path.clone(),
                reason: format!("meta {META_OWN_CSR_RN}: {e}"),
            })?
            .flatten();
        let mut answered = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT hop, fr, rqi, rsp FROM answered ORDER BY seq")
                .map_err(rerr)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Answered {
                        hop: r.get(0)?,
                        fr: r.get(1)?,
                        rqi: r.get(2)?,
                        response: r.get(3)?,
                    })
                })
                .map_err(rerr)?;
            for row in rows {
                answered.push(row.map_err(rerr)?);
            }
        }
        let mut registrars = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT csi, refused FROM registrar ORDER BY csi")
                .map_err(rerr)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(rerr)?;
            for row in rows {
                let (csi, refused) = row.map_err(rerr)?;
                let refused: Vec<String> =
                    serde_json::from_str(&refused).map_err(|e| PersistError::Corrupt {
                        path: path.clone(),
                        reason: format!("registrar {csi:?}: refused is not a list of names: {e}"),
                    })?;
                registrars.push((csi, RegistrarMemo { refused }));
            }
        }
        Ok(Snapshot {
            csrs,
            own_csr_rn,
            answered,
            registrars,
        })
    }

    fn commit(&mut self, changes: &[StoreChange]) -> Result<(), PersistError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.check_files()?;
        let path = &self.path;
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql_err(path, "write", e))?;
            // On an error `tx` is dropped here, which rolls it back.
            apply(&tx, path, changes)?;
            tx.commit().map_err(|e| sql_err(path, "write", e))
        })();
        if result.is_err() && !self.conn.is_autocommit() {
            // A failed COMMIT (e.g. a full disk) may leave the transaction
            // open; the next commit must not run inside it.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if result.is_ok() {
            self.note_files();
        }
        result
    }
}

/// Writes `changes` in order inside the caller's transaction.
fn apply(tx: &Connection, path: &Path, changes: &[StoreChange]) -> Result<(), PersistError> {
    let werr = |e| sql_err(path, "write", e);
    let mut put = tx.prepare_cached(SQL_PUT).map_err(werr)?;
    let mut remove = tx.prepare_cached(SQL_REMOVE).map_err(werr)?;
    let mut answered = false;
    for change in changes {
        match change {
            StoreChange::Put { ri, csr } => {
                let body = serde_json::to_string(csr).map_err(|e| PersistError::Encode {
                    path: path.to_owned(),
                    ri: ri.clone(),
                    reason: e.to_string(),
                })?;
                put.execute((ri, body)).map_err(werr)?;
            }
            StoreChange::Remove { ri } => {
                remove.execute([ri]).map_err(werr)?;
            }
            StoreChange::OwnCsrRn(Some(rn)) => {
                tx.prepare_cached(SQL_SET_META)
                    .and_then(|mut s| s.execute((META_OWN_CSR_RN, rn)))
                    .map_err(werr)?;
            }
            StoreChange::OwnCsrRn(None) => {
                tx.prepare_cached(SQL_DEL_META)
                    .and_then(|mut s| s.execute([META_OWN_CSR_RN]))
                    .map_err(werr)?;
            }
            StoreChange::ForgetAnswer { hop, fr, rqi } => {
                tx.prepare_cached(SQL_FORGET_ANSWER)
                    .and_then(|mut s| s.execute((hop, fr, rqi)))
                    .map_err(werr)?;
            }
            StoreChange::Registrar { csi, memo } if memo.is_empty() => {
                tx.prepare_cached(SQL_DEL_REGISTRAR)
                    .and_then(|mut s| s.execute([csi]))
                    .map_err(werr)?;
            }
            StoreChange::Registrar { csi, memo } => {
                let refused =
                    serde_json::to_string(&memo.refused).map_err(|e| PersistError::Encode {
                        path: path.to_owned(),
                        ri: csi.clone(),
                        reason: e.to_string(),
                    })?;
                tx.prepare_cached(SQL_PUT_REGISTRAR)
                    .and_then(|mut s| s.execute((csi, refused)))
                    .map_err(werr)?;
            }
            StoreChange::Answered(a) => {
                tx.prepare_cached(SQL_ANSWER)
                    .and_then(|mut s| s.execute((&a.hop, &a.fr, &a.rqi, &a.response)))
                    .map_err(werr)?;
                answered = true;
            }
        }
    }
    if answered {
        tx.prepare_cached(SQL_TRIM_ANSWERS)
            .and_then(|mut s| s.execute([ANSWERS_KEPT]))
            .map_err(werr)?;
    }
    Ok(())
}

/// Locks `dir` for the life of the returned file.
fn lock_dir(dir: &Path) -> Result<File, PersistError> {
    let lock = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| io_err("open", &lock, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(PersistError::Locked {
            dir: dir.to_owned(),
            lock,
        }),
        Err(TryLockError::Error(e)) => Err(io_err("lock", &lock, e)),
    }
}

/// Renames the imported JSON store and syncs the directory, so the rename
/// survives a power loss and the file is not offered for import again.
fn retire_old_json(dir: &Path, json: &Path) -> Result<(), PersistError> {
    std::fs::rename(json, dir.join(OLD_JSON_IMPORTED)).map_err(|e| io_err("rename", json, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync", dir, e))
}

/// (device, inode) of `path`, `None` if it does not exist.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn io_err(action: &'static str, path: &Path, source: std::io::Error) -> PersistError {
    PersistError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// An SQLite error; one that says the file is no (sound) database is
/// reported as corrupt, everything else as what we were doing.
fn sql_err(path: &Path, action: &'static str, source: rusqlite::Error) -> PersistError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => PersistError::Corrupt {
            path: path.to_owned(),
            reason: source.to_string(),
        },
        _ => PersistError::Sqlite {
            action,
            path: path.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory, removed again when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "m2mnode-persist-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn csr(csi: &str) -> RemoteCse {
        let mut other = serde_json::Map::new();
        other.insert("acpi".into(), serde_json::json!(["acp1"]));
        RemoteCse {
            csi: Some(csi.into()),
            rn: Some(csi.trim_start_matches('/').into()),
            dcse: Some(vec![format!("{csi}-child")]),
            other,
            ..RemoteCse::default()
        }
    }

    fn put(ri: &str, csi: &str) -> StoreChange {
        StoreChange::Put {
            ri: ri.into(),
            csr: csr(csi),
        }
    }

    fn remove(ri: &str) -> StoreChange {
        StoreChange::Remove { ri: ri.into() }
    }

    fn snapshot(csrs: &[(&str, &str)], own: Option<&str>) -> Snapshot {
        Snapshot {
            csrs: csrs
                .iter()
                .map(|(ri, csi)| (ri.to_string(), csr(csi)))
                .collect(),
            own_csr_rn: own.map(str::to_owned),
            answered: Vec::new(),
            registrars: Vec::new(),
        }
    }

    #[test]
    fn a_store_file_removed_or_replaced_underneath_refuses_changes_naming_it() {
        for (victim, replace) in [("m2mnode.db-wal", false), ("m2mnode.db", true)] {
            let dir = TempDir::new();
            let mut db = Sqlite::open(&dir.0).expect("open");
            db.commit(&[put("id-a", "/id-a")]).expect("commit");
            let file = dir.0.join(victim);
            assert!(file.exists(), "{victim}");
            if replace {
                let other = dir.0.join("other");
                std::fs::copy(&file, &other).expect("copy");
                std::fs::rename(&other, &file).expect("replace");
            } else {
                std::fs::remove_file(&file).expect("remove");
            }
            for _ in 0..2 {
                let e = db.commit(&[put("id-b", "/id-b")]).expect_err("refused");
                let text = e.to_string();
                assert!(text.contains(victim), "{text}");
                assert!(
                    text.contains(if replace { "replaced" } else { "removed" }),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn round_trip_survives_reopen() {
        let dir = TempDir::new();
        let mut db = Sqlite::open(&dir.0).expect("open");
        assert_eq!(db.load().expect("load"), Snapshot::default());
        db.commit(&[
            put("r1", "/id-a"),
            put("r2", "/id-b"),
            StoreChange::OwnCsrRn(Some("id-mn".into())),
        ])
        .expect("commit 1");
        db.commit(&[
            remove("r1"),
            put("r2", "/id-b2"),
            put("r3", "/id-c"),
            remove("absent"),
        ])
        .expect("commit 2");
        db.commit(&[]).expect("empty commit");
        let want = snapshot(&[("r2", "/id-b2"), ("r3", "/id-c")], Some("id-mn"));
        assert_eq!(db.load().expect("load"), want);
        drop(db);
        let mut db = Sqlite::open(&dir.0).expect("reopen");
        assert_eq!(db.load().expect("load"), want);
        db.commit(&[StoreChange::OwnCsrRn(None)]).expect("clear rn");
        drop(db);
        let mut db = Sqlite::open(&dir.0).expect("reopen");
        assert_eq!(db.load().expect("load").own_csr_rn, None);
    }

    #[test]
    fn many_changes_in_one_commit_apply_in_order() {
        let dir = TempDir::new();
        let mut db = Sqlite::open(&dir.0).expect("open");
        let mut changes: Vec<StoreChange> = (0..1000)
            .map(|i| put(&format!("r{i:04}"), &format!("/id-{i}")))
            .collect();
        // Later changes win over earlier ones in the same batch.
        changes.extend((0..1000).step_by(2).map(|i| remove(&format!("r{i:04}"))));
        changes.push(put("r0000", "/id-again"));
        db.commit(&changes).expect("commit");
        drop(db);
        let got = Sqlite::open(&dir.0).expect("reopen").load().expect("load");
        assert_eq!(got.csrs.len(), 501);
        assert_eq!(got.csrs[0], ("r0000".to_string(), csr("/id-again")));
        assert_eq!(got.csrs[1], ("r0001".to_string(), csr("/id-1")));
    }

    #[test]
    fn a_failed_commit_changes_nothing() {
        let dir = TempDir::new();
        let mut db = Sqlite::open(&dir.0).expect("open");
        db.commit(&[put("r1", "/id-a")]).expect("commit");
        // Make the second Put of the next batch fail inside SQLite.
        db.conn
            .execute_batch(
                "CREATE TRIGGER fail BEFORE INSERT ON csr WHEN NEW.ri = 'bad'
                 BEGIN SELECT RAISE(ABORT, 'refused by test'); END;",
            )
            .expect("trigger");
        let err = db
            .commit(&[
                remove("r1"),
                put("r2", "/id-b"),
                put("bad", "/id-x"),
                StoreChange::OwnCsrRn(Some("x".into())),
            ])
            .expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains(DB_FILE) && msg.contains("refused by test"),
            "{msg}"
        );
        assert!(db.conn.is_autocommit(), "transaction left open");
        assert_eq!(db.load().expect("load"), snapshot(&[("r1", "/id-a")], None));
        // The connection stays usable.
        db.commit(&[put("r2", "/id-b")])
            .expect("commit after failure");
    }

    fn write_old_json(dir: &Path, body: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join(OLD_JSON_FILE), body).expect("write json");
    }

    const OLD_JSON: &str = r#"{
        "version": 1,
        "csrs": {
            "r2": {"csi": "/id-b", "rn": "id-b", "dcse": ["/id-b-child"], "acpi": ["acp1"]},
            "r1": {"csi": "/id-a", "rn": "id-a", "dcse": ["/id-a-child"], "acpi": ["acp1"]}
        },
        "own_csr_rn": "id-mn"
    }"#;

    #[test]
    fn imports_the_old_json_store_once() {
        let dir = TempDir::new();
        write_old_json(&dir.0, OLD_JSON);
        let want = snapshot(&[("r1", "/id-a"), ("r2", "/id-b")], Some("id-mn"));
        let mut db = Sqlite::open(&dir.0).expect("open");
        assert_eq!(db.load().expect("load"), want);
        assert!(!dir.0.join(OLD_JSON_FILE).exists());
        assert!(dir.0.join(OLD_JSON_IMPORTED).exists());
        db.commit(&[remove("r1")]).expect("commit");
        drop(db);

        let want = snapshot(&[("r2", "/id-b")], Some("id-mn"));
        let mut db = Sqlite::open(&dir.0).expect("reopen");
        assert_eq!(db.load().expect("load"), want, "imported again");
        drop(db);

        // As after a stop between the import's commit and the rename: the
        // file is back, but the database remembers the import.
        std::fs::copy(dir.0.join(OLD_JSON_IMPORTED), dir.0.join(OLD_JSON_FILE)).expect("copy");
        let mut db = Sqlite::open(&dir.0).expect("reopen");
        assert_eq!(db.load().expect("load"), want, "imported again");
        assert!(!dir.0.join(OLD_JSON_FILE).exists());
    }

    #[test]
    fn an_old_json_store_beside_a_database_with_data_is_refused() {
        let dir = TempDir::new();
        Sqlite::open(&dir.0)
            .expect("open")
            .commit(&[put("r9", "/id-z")])
            .expect("commit");
        write_old_json(&dir.0, OLD_JSON);
        let msg = Sqlite::open(&dir.0).expect_err("must refuse").to_string();
        assert!(
            msg.contains(OLD_JSON_FILE) && msg.contains(DB_FILE),
            "{msg}"
        );
        assert!(dir.0.join(OLD_JSON_FILE).exists());
    }

    #[test]
    fn a_corrupt_json_store_is_an_error_naming_it() {
        let dir = TempDir::new();
        write_old_json(&dir.0, "{\"version\":1,\"csrs\":{");
        let err = Sqlite::open(&dir.0).expect_err("must fail");
        assert!(matches!(err, PersistError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&*dir.0.join(OLD_JSON_FILE).to_string_lossy()),
            "{msg}"
        );
        // Nothing was imported and the file stays for the operator.
        assert!(dir.0.join(OLD_JSON_FILE).exists());

        write_old_json(&dir.0, r#"{"version":7,"csrs":{}}"#);
        let msg = Sqlite::open(&dir.0).expect_err("must fail").to_string();
        assert!(msg.contains("unknown format version 7"), "{msg}");
    }

    #[test]
    fn a_garbage_database_is_an_error_naming_it() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).expect("mkdir");
        let db_path = dir.0.join(DB_FILE);
        std::fs::write(&db_path, vec![b'x'; 8192]).expect("write");
        let err = Sqlite::open(&dir.0).expect_err("must fail");
        assert!(matches!(err, PersistError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&*db_path.to_string_lossy()), "{msg}");
        // Left as it was, for the operator to look at.
        assert_eq!(std::fs::read(&db_path).expect("read"), vec![b'x'; 8192]);
    }

    #[test]
    fn a_row_that_does_not_parse_is_named() {
        let dir = TempDir::new();
        let mut db = Sqlite::open(&dir.0).expect("open");
        db.conn
            .execute(
                "INSERT INTO csr(ri, body) VALUES ('r-bad', '{\"csi\": 7')",
                [],
            )
            .expect("insert");
        let err = db.load().expect_err("must fail");
        let msg = err.to_string();
        assert!(
            matches!(err, PersistError::BadRow { ref ri, .. } if ri == "r-bad"),
            "{msg}"
        );
        assert!(msg.contains(DB_FILE) && msg.contains("r-bad"), "{msg}");
    }

    #[test]
    fn a_schema_1_store_is_migrated_and_keeps_its_rows() {
        let dir = TempDir::new();
        {
            std::fs::create_dir_all(&dir.0).expect("dir");
            let conn = Connection::open(dir.0.join(DB_FILE)).expect("open");
            conn.execute_batch(
                "CREATE TABLE csr(ri TEXT PRIMARY KEY, body TEXT NOT NULL);
                 CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
                 INSERT INTO csr VALUES ('id-a', '{\"csi\":\"/id-a\"}');
                 PRAGMA user_version = 1;",
            )
            .expect("schema 1");
        }
        let mut db = Sqlite::open(&dir.0).expect("migrates");
        let snap = db.load().expect("load");
        assert_eq!(snap.csrs.len(), 1);
        let a = Answered {
            hop: "/id-a".into(),
            fr: "/id-a".into(),
            rqi: "r".into(),
            response: "{}".into(),
        };
        db.commit(&[StoreChange::Answered(a.clone())])
            .expect("answer");
        drop(db);
        let mut db = Sqlite::open(&dir.0).expect("reopen");
        assert_eq!(db.load().expect("load").answered, vec![a]);
    }

    #[test]
    fn a_schema_2_store_is_migrated_and_keeps_its_rows() {
        let dir = TempDir::new();
        {
            std::fs::create_dir_all(&dir.0).expect("dir");
            let conn = Connection::open(dir.0.join(DB_FILE)).expect("open");
            conn.execute_batch(&format!(
                "CREATE TABLE csr(ri TEXT PRIMARY KEY, body TEXT NOT NULL);
                 CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
                 {SQL_ANSWERED_TABLE}
                 INSERT INTO csr VALUES ('id-a', '{{\"csi\":\"/id-a\"}}');
                 INSERT INTO meta VALUES ('own_csr_rn', 'id-mn');
                 PRAGMA user_version = 2;"
            ))
            .expect("schema 2");
        }
        let mut db = Sqlite::open(&dir.0).expect("migrates");
        let snap = db.load().expect("load");
        assert_eq!(snap.csrs.len(), 1);
        assert_eq!(snap.own_csr_rn.as_deref(), Some("id-mn"));
        assert!(snap.registrars.is_empty());
        let memo = RegistrarMemo {
            refused: vec!["csz".into(), "dcse".into()],
        };
        db.commit(&[StoreChange::Registrar {
            csi: "/Mobius2".into(),
            memo: memo.clone(),
        }])
        .expect("memo");
        drop(db);
        let mut db = Sqlite::open(&dir.0).expect("reopen");
        assert_eq!(
            db.load().expect("load").registrars,
            vec![("/Mobius2".to_string(), memo)]
        );
        let version: i64 = db
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA);
    }

    #[test]
    fn a_registrar_memo_is_replaced_and_an_empty_one_forgotten() {
        let dir = TempDir::new();
        let mut db = Sqlite::open(&dir.0).expect("open");
        let memo = |r: &[&str]| RegistrarMemo {
            refused: r.iter().map(|s| s.to_string()).collect(),
        };
        let set = |m: RegistrarMemo| StoreChange::Registrar {
            csi: "/id-in".into(),
            memo: m,
        };
        db.commit(&[set(memo(&["csz"])), set(memo(&["csz", "dcse"]))])
            .expect("commit");
        assert_eq!(
            db.load().expect("load").registrars,
            vec![("/id-in".to_string(), memo(&["csz", "dcse"]))]
        );
        db.commit(&[set(RegistrarMemo::default())]).expect("forget");
        assert!(db.load().expect("load").registrars.is_empty());
    }

    #[test]
    fn only_the_newest_answers_are_kept() {
        let dir = TempDir::new();
        let mut db = Sqlite::open(&dir.0).expect("open");
        let answers: Vec<StoreChange> = (0..ANSWERS_KEPT + 10)
            .map(|i| {
                StoreChange::Answered(Answered {
                    hop: "/h".into(),
                    fr: "/h".into(),
                    rqi: i.to_string(),
                    response: "{}".into(),
                })
            })
            .collect();
        db.commit(&answers).expect("commit");
        let kept = db.load().expect("load").answered;
        assert_eq!(kept.len() as i64, ANSWERS_KEPT);
        assert_eq!(
            kept.last().map(|a| a.rqi.clone()),
            Some((ANSWERS_KEPT + 9).to_string())
        );
    }

    #[test]
    fn a_newer_schema_is_not_called_corrupt() {
        let dir = TempDir::new();
        let db = Sqlite::open(&dir.0).expect("open");
        db.conn
            .execute_batch("PRAGMA user_version = 99")
            .expect("bump");
        drop(db);
        let err = Sqlite::open(&dir.0).expect_err("must refuse");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "written by a newer m2mnode (schema 99, this one reads {SCHEMA})"
            )),
            "{msg}"
        );
        assert!(msg.contains(DB_FILE), "{msg}");
    }

    #[test]
    fn someone_elses_database_is_refused() {
        let dir = TempDir::new();
        std::fs::create_dir_all(&dir.0).expect("mkdir");
        let other = Connection::open(dir.0.join(DB_FILE)).expect("open");
        other
            .execute_batch("CREATE TABLE t(x)")
            .expect("create table");
        drop(other);
        let err = Sqlite::open(&dir.0).expect_err("must refuse");
        assert!(matches!(err, PersistError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn the_directory_is_locked_while_open() {
        let dir = TempDir::new();
        let first = Sqlite::open(&dir.0).expect("open");
        let err = Sqlite::open(&dir.0).expect_err("second open must fail");
        assert!(matches!(err, PersistError::Locked { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "data_dir {} is in use by another m2mnode (lock file {})",
                dir.0.display(),
                dir.0.join(LOCK_FILE).display()
            )
        );
        drop(first);
        Sqlite::open(&dir.0).expect("open after the first is gone");
    }
}

//! Where the `<remoteCSE>` store becomes durable.
//!
//! The engine stays sans-IO: it emits [`StoreChange`]s, and whoever drives it
//! hands a batch of them to a [`Persistence`] (group commit: one transaction
//! and one fsync per batch, however many changes it holds). Only when
//! [`Persistence::commit`] returns Ok may the driver answer the requests that
//! caused the changes; on Err it answers them with 5000 (INTERNAL_SERVER_ERROR)
//! and undoes the in-memory change, so memory and disk never disagree.
//!
//! The trait is kept small on purpose: a database shared by several nodes can
//! implement it later without the engine noticing.

mod sqlite;

pub use sqlite::{Sqlite, DB_FILE, LOCK_FILE, OLD_JSON_FILE, OLD_JSON_IMPORTED};

pub use crate::engine::store::{Answered, RegistrarMemo, Snapshot, StoreChange, ANSWERS_KEPT};
use std::path::PathBuf;

/// Why the store could not be opened, read or written. Every message names
/// the file, so an operator knows what to look at without reading code.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// A file-system call failed (`action` is e.g. "create", "read", "rename").
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite refused (`action` is "open", "read" or "write"); a full disk
    /// reads "cannot write /x/m2mnode.db: database or disk is full".
    #[error("cannot {action} {path}: {source}")]
    Sqlite {
        action: &'static str,
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// Another process holds the lock on the data directory.
    #[error("data_dir {dir} is in use by another m2mnode (lock file {lock})")]
    Locked { dir: PathBuf, lock: PathBuf },
    /// The store was written by a later version of this program; reading it
    /// might lose what that version relies on, so refuse rather than guess.
    #[error(
        "{path} was written by a newer m2mnode (schema {found}, this one reads {supported}); \
         run that version or a newer one"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The file is not an m2mnode store at all (not a database, not JSON of
    /// the old format, or an unknown old format version).
    #[error("{path} is corrupt ({reason}); move it away to start with an empty store")]
    Corrupt { path: PathBuf, reason: String },
    /// One row does not parse; the rest of the store may be fine, so the
    /// message says which one to fix or delete.
    #[error("{path}: the CSR with ri {ri:?} does not parse ({reason}); fix or delete that row")]
    BadRow {
        path: PathBuf,
        ri: String,
        reason: String,
    },
    /// A CSR could not be turned into JSON (not expected: its fields are all
    /// JSON values); nothing was written.
    #[error("cannot write {path}: the CSR with ri {ri:?} does not serialize ({reason})")]
    Encode {
        path: PathBuf,
        ri: String,
        reason: String,
    },
}

/// Where the engine's changes become durable. Kept small so that a shared
/// database can take over later without touching the engine.
pub trait Persistence: Send {
    /// The state as of the last successful commit.
    fn load(&mut self) -> Result<Snapshot, PersistError>;

    /// Applies `changes` in order, atomically (all or nothing) and durably:
    /// when this returns Ok the changes survive a SIGKILL and a power loss.
    /// One call = one transaction and one fsync (group commit: the caller
    /// batches). An empty batch writes nothing.
    fn commit(&mut self, changes: &[StoreChange]) -> Result<(), PersistError>;
}

/// Keeps nothing: for tests and for a node that must forget on restart.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory;

impl Persistence for Memory {
    fn load(&mut self) -> Result<Snapshot, PersistError> {
        Ok(Snapshot::default())
    }

    fn commit(&mut self, _changes: &[StoreChange]) -> Result<(), PersistError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_keeps_nothing() {
        let mut m = Memory;
        m.commit(&[StoreChange::OwnCsrRn(Some("x".into()))])
            .expect("commit");
        assert_eq!(m.load().expect("load"), Snapshot::default());
    }
}

//! Placeholder until the SQLite persister lands (types as agreed).
use crate::resource::RemoteCse;

#[derive(Clone, Debug, PartialEq)]
pub enum StoreChange {
    Put { ri: String, csr: RemoteCse },
    Remove { ri: String },
    OwnCsrRn(Option<String>),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub csrs: Vec<(String, RemoteCse)>,
    pub own_csr_rn: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PersistError(String);

pub trait Persistence: Send {
    fn load(&mut self) -> Result<Snapshot, PersistError>;
    fn commit(&mut self, changes: &[StoreChange]) -> Result<(), PersistError>;
}
pub struct Memory;
impl Persistence for Memory {
    fn load(&mut self) -> Result<Snapshot, PersistError> {
        Ok(Snapshot::default())
    }
    fn commit(&mut self, _: &[StoreChange]) -> Result<(), PersistError> {
        Ok(())
    }
}
pub struct Sqlite;
impl Sqlite {
    pub fn open(_: &std::path::Path) -> Result<Sqlite, PersistError> {
        Ok(Sqlite)
    }
}
impl Persistence for Sqlite {
    fn load(&mut self) -> Result<Snapshot, PersistError> {
        Ok(Snapshot::default())
    }
    fn commit(&mut self, _: &[StoreChange]) -> Result<(), PersistError> {
        Ok(())
    }
}

//! The `<remoteCSE>` store and its persistence.
//!
//! The store is a plain value; the node writes it after every change with
//! write-temp, fsync, rename, so a crash leaves either the old or the new
//! file, never a torn one. A file that does not parse is an error, never a
//! silently empty store: that would make the node forget its registrees.

use super::RemoteCse;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE: &str = "m2mnode-store.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Store {
    version: u32,
    /// ri -> CSR: the registrar's (at most one) and the registrees'.
    csrs: BTreeMap<String, RemoteCse>,
    /// The `rn` of this node's own CSR at its registrar, once registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_csr_rn: Option<String>,
}

/// Where a descendant CSE hangs (ACME `descendantCSR`: csi -> (CSR, registered-at csi)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descendant {
    /// The ri of the local registree CSR through which it is reached.
    pub via_ri: String,
    /// The CSE it is registered at.
    pub registered_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({reason}); move it away to start with an empty store")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    pub fn new() -> Store {
        Store {
            version: FORMAT_VERSION,
            csrs: BTreeMap::new(),
            own_csr_rn: None,
        }
    }

    pub fn get(&self, ri: &str) -> Option<&RemoteCse> {
        self.csrs.get(ri)
    }

    pub fn get_mut(&mut self, ri: &str) -> Option<&mut RemoteCse> {
        self.csrs.get_mut(ri)
    }

    pub fn by_rn(&self, rn: &str) -> Option<(&String, &RemoteCse)> {
        self.csrs.iter().find(|(_, c)| c.rn.as_deref() == Some(rn))
    }

    pub fn by_csi(&self, csi: &str) -> Option<(&String, &RemoteCse)> {
        self.csrs.iter().find(|(_, c)| c.csi() == Some(csi))
    }

    pub fn insert(&mut self, ri: String, csr: RemoteCse) {
        self.csrs.insert(ri, csr);
    }

    pub fn remove(&mut self, ri: &str) -> Option<RemoteCse> {
        self.csrs.remove(ri)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &RemoteCse)> {
        self.csrs.iter()
    }

    pub fn len(&self) -> usize {
        self.csrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.csrs.is_empty()
    }

    /// The registree CSRs: all but the one for `registrar`.
    pub fn registrees<'a>(
        &'a self,
        registrar: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a String, &'a RemoteCse)> {
        self.csrs
            .iter()
            .filter(move |(_, c)| registrar.is_none() || c.csi() != registrar)
    }

    /// Every CSE below this one: each registree and each CSE in a registree's
    /// `dcse`. Derived on demand, so it can never go stale.
    pub fn descendants(&self, own: &str, registrar: Option<&str>) -> BTreeMap<String, Descendant> {
        let mut out = BTreeMap::new();
        for (ri, csr) in self.registrees(registrar) {
            let Some(csi) = csr.csi() else { continue };
            for d in csr.dcse() {
                out.entry(d.clone()).or_insert_with(|| Descendant {
                    via_ri: ri.clone(),
                    registered_at: csi.to_owned(),
                });
            }
            out.insert(
                csi.to_owned(),
                Descendant {
                    via_ri: ri.clone(),
                    registered_at: own.to_owned(),
                },
            );
        }
        out
    }

    fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Loads the store from `dir`; a missing file is an empty store.
    pub fn load(dir: &Path) -> Result<Store, StoreError> {
        let path = Store::path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Store::new()),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let store: Store = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if store.version != FORMAT_VERSION {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("unknown format version {}", store.version),
            });
        }
        Ok(store)
    }

    /// Writes the store atomically: temp file, fsync, rename, fsync the directory.
    pub fn save(&self, dir: &Path) -> Result<(), StoreError> {
        let path = Store::path(dir);
        let werr = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(werr)?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| werr(std::io::Error::other(e.to_string())))?;
        {
            let mut f = std::fs::File::create(&tmp).map_err(werr)?;
            f.write_all(&bytes).map_err(werr)?;
            f.sync_all().map_err(werr)?;
        }
        std::fs::rename(&tmp, &path).map_err(werr)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(csi: &str, dcse: &[&str]) -> RemoteCse {
        RemoteCse {
            csi: Some(csi.into()),
            rn: Some(csi[1..].into()),
            dcse: Some(dcse.iter().map(|s| s.to_string()).collect()),
            ..RemoteCse::default()
        }
    }

    #[test]
    fn descendants_follow_dcse() {
        let mut s = Store::new();
        s.insert("id-mn1".into(), csr("/id-mn1", &["/id-asn1", "/id-asn2"]));
        s.insert("id-in".into(), csr("/id-in", &[]));
        let d = s.descendants("/id-mn", Some("/id-in"));
        assert_eq!(
            d.keys().collect::<Vec<_>>(),
            ["/id-asn1", "/id-asn2", "/id-mn1"]
        );
        assert_eq!(d["/id-asn1"].registered_at, "/id-mn1");
        assert_eq!(d["/id-mn1"].registered_at, "/id-mn");
        assert_eq!(d["/id-asn2"].via_ri, "id-mn1");
    }

    #[test]
    fn persists_atomically_and_refuses_corrupt_files() {
        let dir = std::env::temp_dir().join(format!("m2mnode-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(Store::load(&dir).expect("empty"), Store::new());
        let mut s = Store::new();
        s.insert("id-mn".into(), csr("/id-mn", &[]));
        s.own_csr_rn = Some("id-x".into());
        s.save(&dir).expect("save");
        assert_eq!(Store::load(&dir).expect("load"), s);
        std::fs::write(dir.join(FILE), b"{\"version\":1,\"csrs\":{").expect("write");
        assert!(matches!(Store::load(&dir), Err(StoreError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

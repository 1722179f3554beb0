//! Why a request is refused, and the one place that maps each reason onto a
//! oneM2M response status code (docs/protocol.md §2.4).

use crate::primitive::Rsc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    BadRequest(String),
    #[error("release version {0:?} is not supported (supported: 2a, 3, 4, 5)")]
    ReleaseNotSupported(String),
    #[error("{0}")]
    Expired(String),
    #[error("no resource with this ID: {0}")]
    NotFound(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    NoPrivilege(String),
    #[error("originator {0} is not allowed to register here")]
    NotPermittedToRegister(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("serialization {0:?} is not supported (json, cbor)")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Internal(String),
    /// A configured limit is reached.
    #[error("{0}")]
    Exhausted(String),
}

impl Refusal {
    pub fn rsc(&self) -> Rsc {
        match self {
            Refusal::BadRequest(_) => Rsc::BAD_REQUEST,
            Refusal::ReleaseNotSupported(_) => Rsc::RELEASE_VERSION_NOT_SUPPORTED,
            Refusal::Expired(_) => Rsc::REQUEST_TIMEOUT,
            Refusal::NotFound(_) => Rsc::NOT_FOUND,
            Refusal::NotAllowed(_) => Rsc::OPERATION_NOT_ALLOWED,
            Refusal::NoPrivilege(_) => Rsc::ORIGINATOR_HAS_NO_PRIVILEGE,
            Refusal::NotPermittedToRegister(_) => Rsc::SECURITY_ASSOCIATION_REQUIRED,
            Refusal::Conflict(_) => Rsc::CONFLICT,
            Refusal::NotImplemented(_) => Rsc::NOT_IMPLEMENTED,
            Refusal::UnsupportedMediaType(_) => Rsc::UNSUPPORTED_MEDIA_TYPE,
            Refusal::Internal(_) => Rsc::INTERNAL_SERVER_ERROR,
            // TS-0004 has no "not enough memory"; 5000 with a reason that
            // names the limit is what a registree can act on.
            Refusal::Exhausted(_) => Rsc::INTERNAL_SERVER_ERROR,
        }
    }
}

pub fn bad(why: impl Into<String>) -> Refusal {
    Refusal::BadRequest(why.into())
}

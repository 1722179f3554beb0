//! Response status codes (TS-0004 6.6.3, docs/protocol.md §2.4).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

macro_rules! status_codes {
    ($($name:ident = $code:literal,)*) => {
        /// A oneM2M response status code. Codes this table does not know are kept
        /// as `Other` so that a relayed answer is passed on unchanged.
        /// Variants carry the spec's names so they can be grepped against TS-0004.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Rsc {
            $($name,)*
            Other(u16),
        }

        impl Rsc {
            /// Every code the table knows, in table order.
            pub const ALL: &'static [Rsc] = &[$(Rsc::$name,)*];

            pub fn code(self) -> u16 {
                match self {
                    $(Rsc::$name => $code,)*
                    Rsc::Other(c) => c,
                }
            }

            pub fn from_code(code: u16) -> Rsc {
                match code {
                    $($code => Rsc::$name,)*
                    c => Rsc::Other(c),
                }
            }

            /// The spec's upper-case name, e.g. `NOT_FOUND`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Rsc::$name => stringify!($name),)*
                    Rsc::Other(_) => "UNKNOWN",
                }
            }
        }
    };
}

status_codes! {
    ACCEPTED = 1000,
    ACCEPTED_NON_BLOCKING_REQUEST_SYNCH = 1001,
    ACCEPTED_NON_BLOCKING_REQUEST_ASYNCH = 1002,
    OK = 2000,
    CREATED = 2001,
    DELETED = 2002,
    UPDATED = 2004,
    BAD_REQUEST = 4000,
    RELEASE_VERSION_NOT_SUPPORTED = 4001,
    NOT_FOUND = 4004,
    OPERATION_NOT_ALLOWED = 4005,
    REQUEST_TIMEOUT = 4008,
    UNSUPPORTED_MEDIA_TYPE = 4015,
    SUBSCRIPTION_CREATOR_HAS_NO_PRIVILEGE = 4101,
    CONTENTS_UNACCEPTABLE = 4102,
    ORIGINATOR_HAS_NO_PRIVILEGE = 4103,
    GROUP_REQUEST_IDENTIFIER_EXISTS = 4104,
    CONFLICT = 4105,
    ORIGINATOR_NOT_AUTHENTICATED = 4106,
    SECURITY_ASSOCIATION_REQUIRED = 4107,
    INVALID_CHILD_RESOURCE_TYPE = 4108,
    NO_MEMBERS = 4109,
    GROUP_MEMBER_TYPE_INCONSISTENT = 4110,
    ORIGINATOR_HAS_ALREADY_REGISTERED = 4117,
    APP_RULE_VALIDATION_FAILED = 4126,
    OPERATION_DENIED_BY_REMOTE_ENTITY = 4127,
    SERVICE_SUBSCRIPTION_NOT_ESTABLISHED = 4128,
    INVALID_PROCESS_CONFIGURATION = 4142,
    INVALID_SPARQL_QUERY = 4143,
    INTERNAL_SERVER_ERROR = 5000,
    NOT_IMPLEMENTED = 5001,
    TARGET_NOT_REACHABLE = 5103,
    RECEIVER_HAS_NO_PRIVILEGE = 5105,
    ALREADY_EXISTS = 5106,
    REMOTE_ENTITY_NOT_REACHABLE = 5107,
    TARGET_NOT_SUBSCRIBABLE = 5203,
    SUBSCRIPTION_VERIFICATION_INITIATION_FAILED = 5204,
    SUBSCRIPTION_HOST_HAS_NO_PRIVILEGE = 5205,
    NON_BLOCKING_SYNCH_REQUEST_NOT_SUPPORTED = 5206,
    NOT_ACCEPTABLE = 5207,
    EXTERNAL_OBJECT_NOT_REACHABLE = 6003,
    EXTERNAL_OBJECT_NOT_FOUND = 6005,
    MAX_NUMBER_OF_MEMBER_EXCEEDED = 6010,
    MGMT_SESSION_CANNOT_BE_ESTABLISHED = 6020,
    MGMT_SESSION_ESTABLISHMENT_TIMEOUT = 6021,
    INVALID_CMDTYPE = 6022,
    INVALID_ARGUMENTS = 6023,
    INSUFFICIENT_ARGUMENTS = 6024,
    MGMT_CONVERSION_ERROR = 6025,
    MGMT_CANCELLATION_FAILED = 6026,
    ALREADY_COMPLETE = 6028,
    MGMT_COMMAND_NOT_CANCELLABLE = 6029,
    EXTERNAL_OBJECT_NOT_REACHABLE_BY_NETWORK = 6030,
    EXTERNAL_OBJECT_NOT_FOUND_BY_NETWORK = 6031,
}

impl Rsc {
    /// 2xxx: the operation succeeded.
    pub fn is_success(self) -> bool {
        (2000..3000).contains(&self.code())
    }
}

impl fmt::Display for Rsc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

impl Serialize for Rsc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.code())
    }
}

/// The spec says number; some clients send a string (docs/protocol.md §8.6) and tinyIoT
/// a whole float (`4004.0`, TS-0004 §8.4.2 allows it: JSON has one number
/// type). All go through the one tolerant reader; `4004.5` is refused.
impl<'de> Deserialize<'de> for Rsc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::number::integer(d, "rsc").map(Rsc::from_code)
    }
}

//! The topic router: an MQTT topic becomes a typed [`Route`] or nothing
//! (docs/protocol.md §1.2, §1.3).

use crate::id::{from_topic_segment, to_topic_segment};
use crate::primitive::Format;

/// Which broker connection a message came in on (or a transmit goes out
/// on): a key the engine routes by, one per connection. [`Link::LOCAL`] is
/// `[mqtt]`, toward registrees (and toward everything else unless a link of
/// its own says otherwise); [`Link::UPSTREAM`] is `[registrar.mqtt]` when it
/// sets a broker of its own. With a single broker every message is `LOCAL`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link(pub u8);

impl Link {
    pub const LOCAL: Link = Link(0);
    pub const UPSTREAM: Link = Link(1);

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Link::LOCAL => f.write_str("local"),
            Link::UPSTREAM => f.write_str("upstream"),
            Link(n) => write!(f, "link {n}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
}

/// What a topic says about the message on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub kind: Kind,
    /// The entity that sent the request on this hop, as an ID (`/id-mn`).
    pub originator: String,
    /// The entity that received (or is to receive) it on this hop.
    pub receiver: String,
    /// The topic's serialization; `Err` holds a suffix this node cannot read
    /// (e.g. `xml`), which still deserves an answer (4015).
    pub format: Result<Format, String>,
    /// The raw originator and receiver levels, reused verbatim for the
    /// answer (TS-0010 6.4.5: only `req` becomes `resp`).
    orig_seg: String,
    recv_seg: String,
    /// The topic prefix it came with (`mqtt.topic_prefix`), for the answer.
    prefix: String,
    /// The connection it came in on: the answer goes back on it.
    pub link: Link,
}

impl Route {
    /// The topic on which the receiver answers this request.
    pub fn response_topic(&self) -> String {
        let suffix = match &self.format {
            Ok(f) => f.suffix(),
            Err(s) => s.as_str(),
        };
        format!(
            "{}/oneM2M/resp/{}/{}/{}",
            self.prefix, self.orig_seg, self.recv_seg, suffix
        )
    }

    /// The same route, marked as having come in on `link`.
    pub fn on(mut self, link: Link) -> Route {
        self.link = link;
        self
    }
}

/// Parses `/oneM2M/{req|resp}/<orig>/<recv>/<type>`; anything else is `None`.
pub fn parse(topic: &str) -> Option<Route> {
    parse_prefixed("", topic)
}

/// [`parse`] for topics under `prefix` (`mqtt.topic_prefix`, as ACME's
/// `topicPrefix`: `<prefix>/oneM2M/...`).
pub fn parse_prefixed(prefix: &str, topic: &str) -> Option<Route> {
    let mut levels = topic
        .strip_prefix(prefix)?
        .strip_prefix("/oneM2M/")?
        .split('/');
    let kind = match levels.next()? {
        "req" => Kind::Request,
        "resp" => Kind::Response,
        _ => return None,
    };
    let orig = levels.next().filter(|s| !s.is_empty())?;
    let recv = levels.next().filter(|s| !s.is_empty())?;
    let suffix = levels.next().filter(|s| !s.is_empty())?;
    if levels.next().is_some() {
        return None;
    }
    Some(Route {
        kind,
        originator: from_topic_segment(orig),
        receiver: from_topic_segment(recv),
        format: Format::from_suffix(suffix).ok_or_else(|| suffix.to_owned()),
        orig_seg: orig.to_owned(),
        recv_seg: recv.to_owned(),
        prefix: prefix.to_owned(),
        link: Link::LOCAL,
    })
}

pub fn request_topic(originator: &str, receiver: &str, format: Format) -> String {
    request_topic_prefixed("", originator, receiver, format)
}

/// [`request_topic`] under `prefix`.
pub fn request_topic_prefixed(
    prefix: &str,
    originator: &str,
    receiver: &str,
    format: Format,
) -> String {
    format!(
        "{prefix}/oneM2M/req/{}/{}/{}",
        to_topic_segment(originator),
        to_topic_segment(receiver),
        format.suffix()
    )
}

/// The filters a CSE subscribes to (docs/protocol.md §1.3): requests addressed to it and
/// answers to the requests it sent.
pub fn subscriptions(own: &str) -> [String; 2] {
    subscriptions_prefixed("", own)
}

/// [`subscriptions`] under `prefix`.
pub fn subscriptions_prefixed(prefix: &str, own: &str) -> [String; 2] {
    let me = to_topic_segment(own);
    [
        format!("{prefix}/oneM2M/req/+/{me}/#"),
        format!("{prefix}/oneM2M/resp/{me}/+/#"),
    ]
}

/// Whether `prefix` can stand in front of `/oneM2M/...`: empty, or levels
/// without wildcards, not ending in `/` (the `/oneM2M` after it supplies one).
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.contains(['+', '#', '\0']) {
        return Err(format!("{prefix:?} must not contain '+', '#' or NUL"));
    }
    if prefix.ends_with('/') {
        return Err(format!(
            "{prefix:?} must not end with '/' (topics are <prefix>/oneM2M/...)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_topics_route() {
        let r = parse("/oneM2M/req/id-mn/id-in/json").expect("route");
        assert_eq!(r.kind, Kind::Request);
        assert_eq!(r.originator, "/id-mn");
        assert_eq!(r.receiver, "/id-in");
        assert_eq!(r.format, Ok(Format::Json));
        assert_eq!(r.response_topic(), "/oneM2M/resp/id-mn/id-in/json");
    }

    #[test]
    fn response_topic_reuses_levels_verbatim() {
        let r = parse("/oneM2M/req/:sp.x:id-mn/id-in:Cae/cbor").expect("route");
        assert_eq!(r.originator, "//sp.x/id-mn");
        assert_eq!(r.receiver, "/id-in/Cae");
        assert_eq!(
            r.response_topic(),
            "/oneM2M/resp/:sp.x:id-mn/id-in:Cae/cbor"
        );
    }

    #[test]
    fn unknown_format_is_kept_for_a_4015() {
        let r = parse("/oneM2M/req/a/b/xml").expect("route");
        assert_eq!(r.format, Err("xml".into()));
        assert_eq!(r.response_topic(), "/oneM2M/resp/a/b/xml");
    }

    #[test]
    fn prefixed_topics() {
        let r = parse_prefixed("site/a", "site/a/oneM2M/req/id-mn/id-in/json").expect("route");
        assert_eq!(r.receiver, "/id-in");
        assert_eq!(r.response_topic(), "site/a/oneM2M/resp/id-mn/id-in/json");
        assert_eq!(
            parse_prefixed("site/a", "/oneM2M/req/id-mn/id-in/json"),
            None
        );
        assert_eq!(parse("site/a/oneM2M/req/id-mn/id-in/json"), None);
        assert_eq!(
            subscriptions_prefixed("p", "/id-mn")[0],
            "p/oneM2M/req/+/id-mn/#"
        );
        assert_eq!(
            request_topic_prefixed("p", "/id-mn", "/id-in", Format::Json),
            "p/oneM2M/req/id-mn/id-in/json"
        );
        assert!(check_prefix("").is_ok() && check_prefix("a/b").is_ok());
        assert!(check_prefix("a/").is_err() && check_prefix("a/#").is_err());
    }

    #[test]
    fn other_topics_are_rejected() {
        for t in [
            "oneM2M/req/a/b/json",
            "/oneM2M/req/a/b",
            "/oneM2M/req/a/b/json/x",
            "/oneM2M/req//b/json",
            "/oneM2M/reg_req/a/b/json",
            "/other/req/a/b/json",
            "",
        ] {
            assert_eq!(parse(t), None, "{t}");
        }
    }

    #[test]
    fn subscriptions_are_those_of_ts_0010() {
        assert_eq!(
            subscriptions("/id-mn"),
            [
                "/oneM2M/req/+/id-mn/#".to_string(),
                "/oneM2M/resp/id-mn/+/#".to_string()
            ]
        );
        assert_eq!(
            request_topic("/id-mn", "/id-in", Format::Cbor),
            "/oneM2M/req/id-mn/id-in/cbor"
        );
    }
}

//! The topic router: an MQTT topic becomes a typed [`Route`] or nothing
//! (notes §1.2, §1.3).

use crate::id::{from_topic_segment, to_topic_segment};
use crate::primitive::Format;

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
}

impl Route {
    /// The topic on which the receiver answers this request.
    pub fn response_topic(&self) -> String {
        let suffix = match &self.format {
            Ok(f) => f.suffix(),
            Err(s) => s.as_str(),
        };
        format!(
            "/oneM2M/resp/{}/{}/{}",
            self.orig_seg, self.recv_seg, suffix
        )
    }
}

/// Parses `/oneM2M/{req|resp}/<orig>/<recv>/<type>`; anything else is `None`.
pub fn parse(topic: &str) -> Option<Route> {
    let mut levels = topic.strip_prefix("/oneM2M/")?.split('/');
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
    })
}

pub fn request_topic(originator: &str, receiver: &str, format: Format) -> String {
    format!(
        "/oneM2M/req/{}/{}/{}",
        to_topic_segment(originator),
        to_topic_segment(receiver),
        format.suffix()
    )
}

/// The filters a CSE subscribes to (notes §1.3): requests addressed to it and
/// answers to the requests it sent.
pub fn subscriptions(own: &str) -> [String; 2] {
    let me = to_topic_segment(own);
    [
        format!("/oneM2M/req/+/{me}/#"),
        format!("/oneM2M/resp/{me}/+/#"),
    ]
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

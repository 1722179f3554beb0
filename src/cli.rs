//! `m2mnode request`: a oneM2M-over-MQTT client, like curl for this binding;
//! `m2mnode status`: asks a running node how it is.

use crate::client::{Client, NoAnswer};
use crate::config::{check_pem, BrokerUrl, Config, Pem, PASSWORD_ENV};
use crate::id::{resolve, CseId, Target};
use crate::primitive::{Format, Operation, Request, ResourceType, Response, Rsc};
use crate::time::Timestamp;
use crate::transport::mqtt::{Failure, FailureKind, Incoming, Settings, Transport};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// The broker: mqtt://host[:port], mqtts://host[:port] (TLS),
    /// ws://host[:port][/path] or wss://host[:port][/path] (MQTT over WebSocket);
    /// user:pass@ before the host works too.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// MQTT user name.
    #[arg(long)]
    pub username: Option<String>,
    /// MQTT password (default: $M2MNODE_MQTT_PASSWORD when --username is given).
    #[arg(long)]
    pub password: Option<String>,
    /// CA certificates (PEM) for mqtts:// and wss:// (default: /etc/ssl/certs/ca-certificates.crt).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mqtts://, with --key.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mqtts://, with --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Originator (fr), e.g. /id-x.
    #[arg(long, allow_hyphen_values = true)]
    pub from: String,
    /// Target (to), e.g. /id-in/cse-in or -/id-mn.
    #[arg(long, allow_hyphen_values = true)]
    pub to: String,
    /// create, retrieve, update, delete or notify (or 1..5).
    #[arg(long)]
    pub op: Operation,
    /// Resource type (ty), e.g. 16 for <remoteCSE>.
    #[arg(long)]
    pub ty: Option<u32>,
    /// Primitive content as JSON, @file, or - (or @-) for stdin.
    #[arg(long, allow_hyphen_values = true)]
    pub content: Option<String>,
    /// Serialization on the wire: json or cbor.
    #[arg(long, default_value = "json")]
    pub format: Format,
    /// Put in front of `/oneM2M/...` in the topics (as `mqtt.topic_prefix`).
    #[arg(long, default_value = "")]
    pub topic_prefix: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The CSE that receives the request on this hop (default: the CSE in --to).
    #[arg(long)]
    pub receiver: Option<String>,
    /// Request identifier (default: generated).
    #[arg(long)]
    pub rqi: Option<String>,
    /// Release version indicator.
    #[arg(long, default_value = "3")]
    pub rvi: String,
    /// MQTT QoS of the request: 0 or 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Print only the response's content (pc), or nothing when it has none.
    #[arg(long)]
    pub body: bool,
    /// Print the topics and the request primitive on stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

/// How long a CLI waits for the broker to accept it; a refusal ends it sooner.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the MQTT broker at {url}: {why}")]
    NoBroker { url: String, why: String },
    /// Nothing came back: (receiver, how long, a hint of why).
    #[error("no response from {0} within {1}{2}")]
    Timeout(String, String, String),
    /// The node answered, but not with what was asked for.
    #[error("{0}")]
    Refused(String),
}

impl CliError {
    /// The object `status --json` prints on stdout when it fails, so that a
    /// script reads one JSON document either way.
    pub fn to_json(&self, exit_code: u8) -> serde_json::Value {
        let kind = match self {
            CliError::Usage(_) => "usage",
            CliError::NoBroker { .. } => "no_broker",
            CliError::Timeout(..) => "no_answer",
            CliError::Refused(_) => "refused",
        };
        serde_json::json!({
            "error": self.to_string(),
            "kind": kind,
            "exit_code": exit_code,
        })
    }
}

/// Reads `--content`: inline JSON, `@file`, or `-`/`@-` for stdin.
pub fn read_content(arg: &str) -> Result<serde_json::Value, CliError> {
    let text = match arg.strip_prefix('@').unwrap_or(arg) {
        "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| CliError::Usage(format!("--content {arg}: cannot read stdin: {e}")))?;
            s
        }
        path if arg.starts_with('@') => std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--content {arg}: cannot read {path}: {e}")))?,
        _ => arg.to_owned(),
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("--content is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(CliError::Usage(
            "--content must be a JSON object such as {\"m2m:csr\":{...}}".into(),
        ));
    }
    Ok(v)
}

/// Sends one request and returns the answer.
pub async fn request(args: RequestArgs) -> Result<Response, CliError> {
    let broker =
        BrokerUrl::parse(&args.broker).map_err(|e| CliError::Usage(format!("--broker: {e}")))?;
    if args.from.is_empty() || args.from.contains(['+', '#']) {
        return Err(CliError::Usage(format!(
            "--from {:?} is not an originator ID",
            args.from
        )));
    }
    let receiver = match &args.receiver {
        Some(r) => r.clone(),
        None => {
            // The hop is the CSE named in `to`; nobody is "us" here, so any
            // SP-relative `to` resolves as remote.
            let nobody = CseId::new("/-").map_err(|e| CliError::Usage(e.to_string()))?;
            match resolve(&args.to, &nobody, None) {
                Ok(Target::Remote { csi }) => csi,
                Ok(_) => {
                    return Err(CliError::Usage(format!(
                        "--to {:?} names no CSE; use an SP-relative ID like /id-in/cse-in or give --receiver",
                        args.to
                    )))
                }
                Err(e) => return Err(CliError::Usage(format!("--to: {e}"))),
            }
        }
    };
    let pc = args.content.as_deref().map(read_content).transpose()?;
    if args.op == Operation::Create && args.ty.is_none() {
        return Err(CliError::Usage(
            "--op create needs --ty (e.g. --ty 16 for <remoteCSE>)".into(),
        ));
    }
    let now = Timestamp::now();
    let mut req = Request::new(
        args.op,
        &args.to,
        &args.from,
        args.rqi
            .clone()
            .unwrap_or_else(|| format!("m2m-{:x}", now.0)),
    );
    req.ty = args.ty.map(ResourceType);
    req.pc = pc;
    req.rvi = Some(args.rvi.clone());
    req.ot = Some(now.to_onem2m());
    let mut settings = Settings::client(
        broker,
        format!(
            "m2mnode-request-{}-{:x}",
            std::process::id(),
            now.0 & 0xffff_ffff
        ),
        args.from.clone(),
        args.timeout,
    );
    settings.qos = args.qos;
    settings.topic_prefix = args.topic_prefix.clone();
    settings.username = args.username.clone();
    settings.password = args.password.clone().or_else(|| {
        args.username
            .as_ref()
            .and_then(|_| std::env::var(PASSWORD_ENV).ok())
    });
    if settings.password.is_some()
        && settings.username.is_none()
        && settings.broker.username.is_none()
    {
        return Err(CliError::Usage("--password needs --username".into()));
    }
    if settings.broker.tls {
        settings.ca_file = match &args.ca_file {
            Some(f) => Some(f.clone()),
            None => {
                let system = PathBuf::from(SYSTEM_CA);
                if !system.is_file() {
                    return Err(CliError::Usage(format!(
                        "{} needs --ca-file (there is no {SYSTEM_CA})",
                        if settings.broker.ws {
                            "wss://"
                        } else {
                            "mqtts://"
                        }
                    )));
                }
                Some(system)
            }
        };
        settings.client_cert = args.cert.clone();
        settings.client_key = args.key.clone();
        // A file that will not load is named now, not as a TLS failure.
        for (flag, file, what) in [
            ("--ca-file", &settings.ca_file, Pem::Certificates),
            ("--cert", &settings.client_cert, Pem::Certificates),
            ("--key", &settings.client_key, Pem::PrivateKey),
        ] {
            if let Some(f) = file {
                check_pem(f, what).map_err(|e| CliError::Usage(format!("{flag}: {e}")))?;
            }
        }
    } else if args.ca_file.is_some() || args.cert.is_some() {
        return Err(CliError::Usage(
            "--ca-file/--cert/--key need an mqtts:// or wss:// broker".into(),
        ));
    }
    let topic = crate::topic::request_topic_prefixed(
        &settings.topic_prefix,
        &settings.own,
        &receiver,
        args.format,
    );
    let answer_topic = topic.replacen("/oneM2M/req/", "/oneM2M/resp/", 1);
    if args.verbose {
        eprintln!("> {topic}");
        eprintln!("< {answer_topic}");
        if let Ok(text) = serde_json::to_string_pretty(&req) {
            eprintln!("{text}");
        }
    }
    let client = connect(settings, CONNECT_WITHIN.min(args.timeout)).await?;
    let answer = client.ask(&req, &receiver, args.format).await;
    client.close().await;
    match answer {
        // Any answer is printed, whatever it lacks (a relayed 4008 or 5103
        // may carry only rsc, rqi and pc): only silence is a timeout.
        Ok(rsp) => Ok(rsp),
        Err(NoAnswer::Silence { receiver, waited }) => Err(CliError::Timeout(
            receiver.clone(),
            humantime::format_duration(waited).to_string(),
            format!(
                " (the request went out on {topic}: is {receiver} connected to this broker? \
                 A broker with an ACL drops a publish it refuses, or the answer on \
                 {answer_topic}, without telling the client: check that this user may write \
                 the one and read the other)"
            ),
        )),
        Err(e) => Err(CliError::NoBroker {
            url: args.broker.clone(),
            why: e.to_string(),
        }),
    }
}

/// The CA bundle `request` trusts for mqtts:// when given no --ca-file.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Connects for a one-shot client: at most `within`, and no longer than the
/// first refusal (connection refused, bad credentials, TLS failure).
pub async fn connect(settings: Settings, within: Duration) -> Result<Client, CliError> {
    let url = settings.broker.poa();
    let settings_view = SettingsView {
        host: settings.broker.host.clone(),
        port: settings.broker.port,
        tls: settings.broker.tls,
        user: settings
            .username
            .clone()
            .or_else(|| settings.broker.username.clone()),
        ca_file: settings.ca_file.as_ref().map(|p| p.display().to_string()),
    };
    let (t, mut rx) = Transport::start(settings).map_err(|e| CliError::Usage(e.to_string()))?;
    let end = tokio::time::Instant::now() + within;
    let failure = loop {
        match tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            Ok(Some(Incoming::Connected)) => return Ok(Client::new(t, rx)),
            Ok(None) => break t.last_failure(),
            _ => {}
        }
        if let Some(e) = t.last_failure() {
            break Some(e);
        }
        if tokio::time::Instant::now() >= end {
            break None;
        }
    };
    t.close().await;
    let why = match failure {
        Some(f) => explain(&f, &settings_view),
        None => format!("no CONNACK within {}", humantime::format_duration(within)),
    };
    Err(CliError::NoBroker { url, why })
}

/// What a CLI user needs to know of a connection failure: the broker's
/// reason and the likely fix.
fn explain(f: &Failure, s: &SettingsView) -> String {
    let port = s.port;
    match f.kind {
        FailureKind::LoginRefused => format!(
            "the broker refused the credentials{}: {}",
            s.user
                .as_ref()
                .map(|u| format!(" of {u:?}"))
                .unwrap_or_else(|| " (none were given)".into()),
            f.text
        ),
        // Another CA of the same name is BadSignature, not UnknownIssuer.
        FailureKind::Tls
            if f.text.contains("UnknownIssuer") || f.text.contains("BadSignature") =>
        {
            format!(
            "{}: the broker's certificate is not signed by a CA in {} (give the CA that signed it with --ca-file, or mqtt.ca_file in a config)",
                f.text,
                s.ca_file.as_deref().unwrap_or("the CA file")
            )
        }
        FailureKind::Tls if f.text.contains("NotValidForName") => format!(
            "{}: the broker's certificate is not for {:?} (use the host name it was issued for)",
            f.text, s.host
        ),
        FailureKind::Tls if !s.tls => f.text.clone(),
        FailureKind::Tls => format!(
            "{} (CA file: {}; if port {port} speaks plain MQTT, use mqtt://)",
            f.text,
            s.ca_file.as_deref().unwrap_or("none")
        ),
        FailureKind::Protocol if !s.tls => format!(
            "{} (the broker closed the connection before answering in MQTT: if port {port} speaks TLS, use mqtts:// or wss://)",
            f.text
        ),
        FailureKind::Network if f.text.contains("refused") => {
            format!("{} (nothing listens on {}:{port})", f.text, s.host)
        }
        _ => f.text.clone(),
    }
}

/// The parts of [`Settings`] that explain a failure.
struct SettingsView {
    host: String,
    port: u16,
    tls: bool,
    user: Option<String>,
    ca_file: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The node's config file: its [cse] id and name and its [mqtt] settings are used.
    #[arg(long)]
    pub config: PathBuf,
    /// Print the status object as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the answer (default: the config's mqtt.timeout).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Log in to the broker as this user instead of the config's (a
    /// health-check user of its own, as in mosquitto/acl.example).
    #[arg(long, requires = "password_file")]
    pub username: Option<String>,
    /// The password of --username, read from this file.
    #[arg(long, requires = "username")]
    pub password_file: Option<PathBuf>,
    /// List every registree: ask for the pages after the first (the node
    /// answers the counts and the first registrees in one page).
    #[arg(long)]
    pub all: bool,
}

/// The originator `status` asks as (an AE-ID: it is not a CSE); the node
/// answers the status only to it, on its own topic, and to the admin.
pub const STATUS_ORIGINATOR: &str = crate::engine::STATUS_ORIGINATOR;
/// The virtual resource under the CSEBase that answers `status`.
pub const STATUS_RESOURCE: &str = "m2mnode-status";

/// What `status` found out.
#[derive(Debug)]
pub struct Status {
    /// The `m2mnode:status` object.
    pub status: serde_json::Value,
    /// Registered at the registrar, or registers nowhere.
    pub healthy: bool,
}

/// Asks the node that `args.config` describes for its status.
pub async fn status(args: &StatusArgs) -> Result<Status, CliError> {
    let cfg = Config::load(&args.config).map_err(|e| CliError::Usage(e.to_string()))?;
    let broker = cfg
        .broker()
        .map_err(|e| CliError::Usage(format!("mqtt.url: {e}")))?;
    let timeout = args.timeout.unwrap_or(cfg.mqtt.timeout);
    let mut settings = Settings::client(
        broker,
        format!("m2mnode-status-{}", std::process::id()),
        STATUS_ORIGINATOR,
        timeout,
    );
    settings.username = cfg.mqtt.username.clone();
    settings.password = cfg.mqtt.password.clone();
    if let (Some(user), Some(file)) = (&args.username, &args.password_file) {
        let pw = crate::config::read_secret(file)
            .map_err(|e| CliError::Usage(format!("--password-file: {e}")))?;
        settings.username = Some(user.clone());
        settings.password = Some(pw);
        // The url's own credentials must not stand in for these.
        settings.broker.username = None;
        settings.broker.password = None;
    }
    settings.ca_file = cfg.mqtt.ca_file.clone();
    settings.client_cert = cfg.mqtt.client_cert.clone();
    settings.client_key = cfg.mqtt.client_key.clone();
    settings.qos = cfg.mqtt.qos;
    settings.keep_alive = cfg.mqtt.keep_alive;
    settings.topic_prefix = cfg.mqtt.topic_prefix.clone();
    let client = connect(settings, CONNECT_WITHIN.min(timeout)).await?;
    let mut status = serde_json::Value::Null;
    // The first page, then (--all) the next ones from the offset each
    // partial answer names (cnst/cnot, docs/operations.md).
    let mut ofst: Option<u64> = None;
    let mut pages = 0u32;
    let result = loop {
        let now = Timestamp::now();
        let mut req = Request::new(
            Operation::Retrieve,
            format!("{}/{}/{STATUS_RESOURCE}", cfg.cse.id, cfg.cse.name),
            STATUS_ORIGINATOR,
            format!("status-{}-{:x}-{pages}", std::process::id(), now.0),
        );
        req.rvi = Some("3".into());
        req.ot = Some(now.to_onem2m());
        if let Some(o) = ofst {
            req.other
                .insert("fc".into(), serde_json::json!({ "ofst": o }));
        }
        let rsp = match client.ask(&req, cfg.cse.id.as_str(), Format::Json).await {
            Ok(rsp) => rsp,
            Err(NoAnswer::Silence { .. }) => {
                break Err(CliError::Timeout(
                    cfg.cse.id.to_string(),
                    humantime::format_duration(timeout).to_string(),
                    format!(
                        " (is it running and connected to {}? With a broker ACL the user needs write on \
                         /oneM2M/req/{STATUS_ORIGINATOR}/# and read on /oneM2M/resp/{STATUS_ORIGINATOR}/#: \
                         docs/operations.md)",
                        cfg.mqtt.url
                    ),
                ))
            }
            Err(e) => {
                break Err(CliError::NoBroker {
                    url: cfg.mqtt.url.clone(),
                    why: e.to_string(),
                })
            }
        };
        pages += 1;
        if rsp.rsc != Rsc::OK {
            break Err(CliError::Refused(format!(
                "{} answered {}{}",
                cfg.cse.id,
                rsp.rsc.code(),
                rsp.debug_text()
                    .map(|t| format!(": {t}"))
                    .unwrap_or_default()
            )));
        }
        let Some(page) = rsp
            .pc
            .as_ref()
            .and_then(|pc| pc.get("m2mnode:status"))
            .cloned()
        else {
            break Err(CliError::Refused(format!(
                "{} answered without m2mnode:status",
                cfg.cse.id
            )));
        };
        if status.is_null() {
            status = page;
        } else if let (Some(all), Some(more)) = (
            status
                .get_mut("registrees")
                .and_then(serde_json::Value::as_array_mut),
            page.get("registrees").and_then(serde_json::Value::as_array),
        ) {
            all.extend(more.iter().cloned());
        }
        let next = rsp.other.get("cnot").and_then(serde_json::Value::as_u64);
        match next {
            // A node that does not move on would make this loop for ever.
            Some(n) if args.all && rsp.other.contains_key("cnst") && Some(n) > ofst => {
                ofst = Some(n)
            }
            _ => break Ok(()),
        }
    };
    client.close().await;
    result?;
    let registered = |r: &serde_json::Value| {
        r.get("registered").and_then(serde_json::Value::as_bool) == Some(true)
    };
    let healthy = match status.get("registrar") {
        None | Some(serde_json::Value::Null) => true,
        Some(r) => registered(r),
    } && status
        .get("peer_sps")
        .and_then(serde_json::Value::as_array)
        .is_none_or(|peers| peers.iter().all(registered));
    Ok(Status { status, healthy })
}

/// A oneM2M timestamp with how long ago it was, or "never".
fn when(v: Option<&serde_json::Value>, now: Timestamp) -> String {
    match v.and_then(serde_json::Value::as_str) {
        None => "never".into(),
        Some(s) => match Timestamp::parse(s) {
            Some(t) if t.0 <= now.0 => format!(
                "{s} ({} ago)",
                humantime::format_duration(Duration::from_secs(now.since(t).as_secs()))
            ),
            _ => s.to_owned(),
        },
    }
}

/// The human summary of a `m2mnode:status` object.
pub fn status_summary(s: &serde_json::Value) -> String {
    use std::fmt::Write;
    let now = Timestamp::now();
    let str_of = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let mut out = String::new();
    let connected = s.get("connected").and_then(serde_json::Value::as_bool);
    let _ = writeln!(
        out,
        "{}: {}",
        str_of(s, "cse"),
        match connected {
            Some(true) => "connected to the MQTT broker",
            Some(false) => "NOT connected to the MQTT broker",
            None => "connection state unknown",
        }
    );
    match s.get("registrar") {
        None | Some(serde_json::Value::Null) => {
            let _ = writeln!(out, "registrar: none (registers nowhere)");
        }
        Some(r) => {
            let id = str_of(r, "id");
            if r.get("registered").and_then(serde_json::Value::as_bool) == Some(true) {
                let _ = writeln!(
                    out,
                    "registered at {id} since {}",
                    when(r.get("since"), now)
                );
            } else {
                let _ = writeln!(out, "NOT registered at {id}");
            }
            let _ = writeln!(out, "last check: {}", when(r.get("last_check"), now));
        }
    }
    // The registrations at other SPs' IN-CSEs (docs/protocol.md §13).
    for p in s
        .get("peer_sps")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = str_of(p, "id");
        if p.get("registered").and_then(serde_json::Value::as_bool) == Some(true) {
            let _ = writeln!(
                out,
                "peer SP: registered at {id} since {}, last check {}",
                when(p.get("since"), now),
                when(p.get("last_check"), now)
            );
        } else {
            let _ = writeln!(out, "peer SP: NOT registered at {id}");
        }
    }
    let registrees = s
        .get("registrees")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let count = |k: &str, shown: usize| {
        s.get(k)
            .and_then(serde_json::Value::as_u64)
            .map_or(shown, |n| n as usize)
    };
    let registree_count = count("registree_count", registrees.len());
    let _ = writeln!(out, "registrees: {registree_count}");
    for r in &registrees {
        let csi = r
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| str_of(r, "csi"));
        let misses = r
            .get("misses")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        // One registered a moment ago has not been probed yet: its
        // registration time says more than "never".
        let alive = match (r.get("last_ok"), r.get("since")) {
            (Some(v), _) if !v.is_null() => format!("last alive {}", when(Some(v), now)),
            (_, Some(since)) if !since.is_null() => {
                format!("registered {}, not probed yet", when(Some(since), now))
            }
            _ => "last alive never".into(),
        };
        let _ = writeln!(
            out,
            "  {csi}: {alive}{}",
            if misses > 0 {
                format!(", {misses} missed check(s)")
            } else {
                String::new()
            }
        );
    }
    if registrees.len() < registree_count {
        let _ = writeln!(
            out,
            "  ... and {} more (--all lists them)",
            registree_count - registrees.len()
        );
    }
    let shown = s
        .get("descendants")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    let _ = writeln!(out, "descendants: {}", count("descendant_count", shown));
    if let Some(st) = s.get("store") {
        let durable = st.get("durable").and_then(serde_json::Value::as_bool) == Some(true);
        let unwritten = st
            .get("unwritten")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "store: {}, {unwritten} change(s) not yet written",
            if durable { "on disk" } else { "in memory" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_shows_each_peer_sp() {
        let st = serde_json::json!({
            "cse": "/id-in-a", "connected": true, "registrar": null, "registrees": [],
            "peer_sps": [
                {"id": "//sp-b.example/id-in-b", "registered": true,
                 "since": "20260101T120000,000000", "last_check": "20260101T120100,000000"},
                {"id": "//sp-c.example/id-in-c", "registered": false},
            ],
        });
        let text = super::status_summary(&st);
        assert!(
            text.contains("peer SP: registered at //sp-b.example/id-in-b since 20260101T120000")
                && text.contains("peer SP: NOT registered at //sp-c.example/id-in-c"),
            "{text}"
        );
    }
}

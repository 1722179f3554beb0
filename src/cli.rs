//! `m2mnode request`: a oneM2M-over-MQTT client, like curl for this binding.

use crate::config::BrokerUrl;
use crate::id::{resolve, CseId, Target};
use crate::primitive::{Format, Operation, Request, ResourceType, Response, Rsc};
use crate::time::Timestamp;
use crate::transport::mqtt::{ConnectError, Settings, Transport};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// Originator (fr), e.g. /id-x.
    #[arg(long)]
    pub from: String,
    /// Target (to), e.g. /id-in/cse-in.
    #[arg(long)]
    pub to: String,
    /// create, retrieve, update, delete or notify (or 1..5).
    #[arg(long)]
    pub op: Operation,
    /// Resource type (ty), e.g. 16 for <remoteCSE>.
    #[arg(long)]
    pub ty: Option<u32>,
    /// Primitive content as JSON, or @file.
    #[arg(long)]
    pub content: Option<String>,
    #[arg(long, default_value = "json")]
    pub format: Format,
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
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the MQTT broker at {url}: {why}")]
    NoBroker { url: String, why: String },
    #[error("no response from {0} within {1}")]
    Timeout(String, String),
}

/// Reads `--content`: inline JSON or `@file`.
pub fn read_content(arg: &str) -> Result<serde_json::Value, CliError> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--content {arg}: cannot read {path}: {e}")))?,
        None => arg.to_owned(),
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
    let (transport, _events) =
        Transport::connect(settings, args.timeout)
            .await
            .map_err(|e| match e {
                ConnectError::NoBroker { url, why } => CliError::NoBroker { url, why },
                ConnectError::Setup(e) => CliError::Usage(e.to_string()),
            })?;
    let rsp = transport.request(&req, &receiver, args.format).await;
    transport.close().await;
    if rsp.rsc == Rsc::REQUEST_TIMEOUT && rsp.fr.is_none() && rsp.ot.is_none() {
        return Err(CliError::Timeout(
            receiver,
            humantime::format_duration(args.timeout).to_string(),
        ));
    }
    Ok(rsp)
}

//! `m2mnode demo`: a registrar and a registree on an in-process broker,
//! walking through a registration's life. Needs nothing installed.

use crate::client::Client;
use crate::transport::mqtt::{Settings, Transport};
use m2mnode::config::{BrokerUrl, Config};
use m2mnode::primitive::{Format, Operation, Request, Response, Rsc, OWN_RVI};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;

fn node_config(
    id: &str,
    name: &str,
    ty: &str,
    url: &str,
    registrar: bool,
) -> Result<Config, String> {
    let mut text = format!(
        "[cse]\nid = \"{id}\"\nname = \"{name}\"\ntype = \"{ty}\"\n\n[mqtt]\nurl = \"{url}\"\ntimeout = \"3s\"\n\n[registrees]\ncheck_interval = \"5s\"\n"
    );
    if registrar {
        text += "\n[registrar]\nid = \"/id-in\"\nname = \"cse-in\"\ncheck_interval = \"5s\"\n";
    }
    Config::from_str(&text, Path::new("demo")).map_err(|e| e.to_string())
}

struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_node(cfg: Config) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = crate::node::run(cfg, shutdown).await {
            eprintln!("demo node failed: {e}");
        }
    });
    Running { stop, task }
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn ask(client: &Client, op: Operation, to: &str, receiver: &str, n: &mut u32) -> Response {
    *n += 1;
    let mut req = Request::new(op, to, client.transport().own(), format!("demo-{n}"));
    req.rvi = Some(OWN_RVI.into());
    client.request(&req, receiver, Format::Json).await
}

fn show(rsp: &Response) -> String {
    let body = rsp
        .pc
        .as_ref()
        .and_then(|pc| serde_json::to_string(pc).ok())
        .unwrap_or_default();
    let body = if body.chars().count() > 160 {
        format!("{}…", body.chars().take(160).collect::<String>())
    } else {
        body
    };
    format!("{} {body}", rsp.rsc)
}

/// Runs the demo; with `keep`, leaves everything running until `until` resolves.
pub async fn run(port: u16, keep: bool, until: impl Future<Output = ()>) -> Result<(), String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (local, broker) = crate::broker::start(addr)
        .await
        .map_err(|e| format!("cannot start the demo broker on {addr}: {e}"))?;
    let url = format!("mqtt://{local}");
    println!(
        "m2mnode demo: an IN-CSE (/id-in) and an MN-CSE (/id-mn) on the in-process broker {url}\n"
    );

    let registrar = spawn_node(node_config("/id-in", "cse-in", "IN", &url, false)?);
    let registree = spawn_node(node_config("/id-mn", "cse-mn", "MN", &url, true)?);

    let settings = Settings::client(
        BrokerUrl::parse(&url)?,
        "demo-client",
        "/id-demo",
        Duration::from_secs(3),
    );
    let (transport, events) = Transport::connect(settings, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let client = Client::new(transport, events);
    let mut n = 0;

    println!("1. the MN-CSE registers: it creates its <remoteCSE> under the IN-CSE's CSEBase");
    let mut registered = None;
    for _ in 0..50 {
        let rsp = ask(
            &client,
            Operation::Retrieve,
            "/id-in/cse-in/id-mn",
            "/id-in",
            &mut n,
        )
        .await;
        if rsp.rsc == Rsc::OK {
            registered = Some(rsp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rsp = registered.ok_or("the MN-CSE did not register within 10 s")?;
    println!("   RETRIEVE /id-in/cse-in/id-mn -> {}\n", show(&rsp));

    println!("2. ...and keeps a <remoteCSE> for its registrar under its own CSEBase");
    let rsp = ask(
        &client,
        Operation::Retrieve,
        "/id-mn/cse-mn/id-in",
        "/id-mn",
        &mut n,
    )
    .await;
    println!("   RETRIEVE /id-mn/cse-mn/id-in -> {}\n", show(&rsp));

    println!("3. the IN-CSE forwards requests for the MN-CSE to it");
    let rsp = ask(
        &client,
        Operation::Retrieve,
        "/id-mn/cse-mn",
        "/id-in",
        &mut n,
    )
    .await;
    println!(
        "   RETRIEVE /id-mn/cse-mn (sent to /id-in) -> {}\n",
        show(&rsp)
    );

    if keep {
        println!("Running until Ctrl-C. Try:\n   m2mnode request --broker {url} --from /id-x --to /id-in/cse-in/id-mn --op retrieve\n");
        until.await;
    }

    println!("4. the MN-CSE shuts down and deregisters");
    registree.shutdown().await;
    let rsp = ask(
        &client,
        Operation::Retrieve,
        "/id-in/cse-in/id-mn",
        "/id-in",
        &mut n,
    )
    .await;
    println!("   RETRIEVE /id-in/cse-in/id-mn -> {}\n", show(&rsp));
    registrar.shutdown().await;
    client.close().await;
    broker.abort();
    println!("done.");
    Ok(())
}

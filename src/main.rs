//! The `m2mnode` command line (design.md, interface contract).

mod broker;
mod demo;

use clap::{Parser, Subcommand, ValueEnum};
use m2mnode::cli::{self, CliError, RequestArgs};
use m2mnode::config::Config;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "m2mnode",
    version,
    about = "An MQTT-bound oneM2M interworking node"
)]
struct Args {
    /// Log format on stderr (filter with RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node until SIGINT/SIGTERM, then deregister.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Send one request primitive and print the response as JSON; exit 0 iff rsc is 2xxx.
    Request(RequestArgs),
    /// A registrar and a registree on an in-process broker: a registration's life in a few seconds.
    Demo {
        /// Port of the in-process broker (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Keep everything running until Ctrl-C (to try `m2mnode request` against it).
        #[arg(long)]
        keep: bool,
    },
    /// Validate a config file and print what is wrong.
    CheckConfig { config: PathBuf },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match args.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                let _ = writeln!(std::io::stdout(), "{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(args.log_format);
            match runtime.block_on(m2mnode::node::run_file(config, cfg, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Demo { port, keep } => {
            if std::env::var_os("RUST_LOG").is_some() {
                init_logging(args.log_format);
            }
            match runtime.block_on(demo::run(port, keep, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Request(req) => {
            if std::env::var_os("RUST_LOG").is_some() {
                init_logging(args.log_format);
            }
            match runtime.block_on(cli::request(req)) {
                Ok(rsp) => {
                    // A closed pipe (`| head`) is not worth a panic.
                    if let Ok(text) = serde_json::to_string_pretty(&rsp) {
                        let _ = writeln!(std::io::stdout(), "{text}");
                    }
                    if rsp.rsc.is_success() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(match e {
                        CliError::Usage(_) => 2,
                        CliError::NoBroker { .. } | CliError::Timeout(..) => 3,
                    })
                }
            }
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

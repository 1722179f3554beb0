//! The `m2mnode` command line (docs/operations.md, "Commands and flags").

mod broker;
mod cli;
mod client;
mod demo;
mod metrics;
mod node;
mod sdnotify;
mod transport;

// The binary's modules name the library's as `crate::...`.
use m2mnode::{config, engine, id, persist, primitive, time, topic};

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use cli::{CliError, RequestArgs, StatusArgs};
use config::Config;
use std::io::{IsTerminal, Write};
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
    /// Run a node until SIGINT/SIGTERM, then deregister (SIGHUP: reload; SIGUSR1: check now).
    Run {
        /// The config file (relative paths in it are relative to its directory).
        #[arg(long)]
        config: PathBuf,
    },
    /// Send one request primitive and print the response as JSON; exit 0 iff rsc is 2xxx.
    Request(Box<RequestArgs>),
    /// Ask the running node how it is; exit 0 iff it answers and is registered
    /// (or registers nowhere), 1 if not registered, 3 if it does not answer.
    Status(StatusArgs),
    /// A registrar and a registree on an in-process broker: a registration's life in a few seconds.
    Demo {
        /// Port of the in-process broker (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Keep everything running until Ctrl-C (to try `m2mnode request` against it).
        #[arg(long)]
        keep: bool,
    },
    /// Validate a config file and print every problem; exit 0 if good, 2 if not.
    CheckConfig {
        /// The config file.
        #[arg(long = "config", value_name = "FILE", conflicts_with = "file")]
        config: Option<PathBuf>,
        /// The config file (as --config).
        #[arg(value_name = "FILE", required_unless_present = "config")]
        file: Option<PathBuf>,
        /// Check data_dir for this user (the unit's User=, e.g. m2mnode)
        /// instead of the one running check-config.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Print shell completions (e.g. `m2mnode completions bash > /etc/bash_completion.d/m2mnode`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages: m2mnode.1 on stdout, or with --dir every page into DIR.
    #[command(hide = true)]
    Man {
        /// Write m2mnode.1 and one page per subcommand (m2mnode-run.1, ...) here.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The sections of m2mnode(1) that clap does not know: what an operator
/// looks up in a man page (docs/operations.md has the long version).
const MAN_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/m2mnode/m2mnode.toml\fR
The configuration of the packaged service; check it with \fBm2mnode check-config\fR.
.TP
\fI/var/lib/m2mnode\fR
The store (\fBcse.data_dir\fR), owned by the m2mnode user.
.TP
\fI/usr/share/doc/m2mnode/\fR
README, the operations guide and example configurations.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Deregister from the registrar (bounded by mqtt.timeout), then exit.
.TP
\fBSIGHUP\fR
Re-read the config file and apply what can change while running; a config with errors is refused and the running one stays.
.TP
\fBSIGUSR1\fR
Run the liveness checks of the own registration and of every registree now.
.SH ENVIRONMENT
.TP
\fBRUST_LOG\fR
Log filter (default info), e.g. m2mnode=debug.
.TP
\fBNO_COLOR\fR
No colours in the log.
.TP
\fBM2MNODE_MQTT_PASSWORD\fR
The MQTT password when the config sets none.
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd: the node reports READY=1 once connected and subscribed, STATUS= lines, and feeds the watchdog.
.SH EXIT STATUS
.TP
\fBrun\fR
0 after a clean stop; 2 for a bad config or a store that cannot be opened (systemd does not restart on 2).
.TP
\fBcheck-config\fR
0 if the config is good, 2 if not.
.TP
\fBrequest\fR
0 if the answer is 2xxx, 1 otherwise, 2 for bad arguments, 3 if no answer came.
.TP
\fBstatus\fR
0 if registered (or registering nowhere), 1 if not, 3 if the node does not answer.
.SH SEE ALSO
\fBsystemd.service\fR(5), \fBmosquitto\fR(8), \fI/usr/share/doc/m2mnode/operations.md\fR
"#;

/// m2mnode(1): clap's sections, then [`MAN_EXTRA`].
fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(Args::command().disable_help_subcommand(true));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    out.write_all(MAN_EXTRA.as_bytes())?;
    man.render_version_section(out)
}

fn write_man(dir: Option<&std::path::Path>) -> std::io::Result<()> {
    let Some(dir) = dir else {
        return man_page(&mut std::io::stdout().lock());
    };
    std::fs::create_dir_all(dir)?;
    let mut cmd = Args::command().disable_help_subcommand(true);
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        clap_mangen::Man::new(sub.clone()).generate_to(dir)?;
    }
    let mut page = std::fs::File::create(dir.join("m2mnode.1"))?;
    man_page(&mut page)?;
    page.flush()
}

/// Colours only for a terminal, and never with NO_COLOR set (no-color.org).
fn use_ansi() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The levels a bare `RUST_LOG` directive may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
/// The log targets of this binary, for telling a bare target from a typo.
const TARGETS: [&str; 5] = ["m2mnode", "rumqttc", "rustls", "rusqlite", "tokio"];

/// The filter `RUST_LOG` asks for, or `info` and why it was not taken: an
/// empty variable (systemd units and container files often pass one) or one
/// that does not parse must not silence the warnings and errors.
fn log_filter(var: Option<std::ffi::OsString>) -> (tracing_subscriber::EnvFilter, Option<String>) {
    use tracing_subscriber::EnvFilter;
    let fallback = || EnvFilter::new("info");
    let Some(var) = var else {
        return (fallback(), None);
    };
    let Some(text) = var.to_str() else {
        return (
            fallback(),
            Some("RUST_LOG is not UTF-8; logging at info".into()),
        );
    };
    if text.trim().is_empty() {
        return (
            fallback(),
            Some("RUST_LOG is empty; logging at info".into()),
        );
    }
    // A bare word is a level or a target to EnvFilter: "debugg" would be a
    // target that matches nothing and silence everything.
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[']);
        let known = LEVELS.contains(&directive.to_ascii_lowercase().as_str())
            || TARGETS
                .iter()
                .any(|t| directive == *t || directive.starts_with(&format!("{t}::")));
        if bare && !known {
            return (
                fallback(),
                Some(format!(
                    "RUST_LOG={text:?}: {directive:?} is neither a level ({}) nor a target of m2mnode's logs (e.g. m2mnode=debug); logging at info",
                    LEVELS.join(", ")
                )),
            );
        }
    }
    match EnvFilter::builder().parse(text) {
        Ok(f) => (f, None),
        Err(e) => (
            fallback(),
            Some(format!(
                "RUST_LOG={text:?} is not a log filter ({e}); logging at info"
            )),
        ),
    }
}

fn init_logging(format: LogFormat) {
    let (filter, fallback) = log_filter(std::env::var_os("RUST_LOG"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_ansi());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(why) = fallback {
        // Said once, at start; an empty variable is routine, a typo is not.
        if why.contains("empty") {
            tracing::info!("{why}");
        } else {
            tracing::warn!("{why}");
        }
    }
}

/// Whether `RUST_LOG` asks the one-shot commands (request, demo) for logs.
fn wants_logs() -> bool {
    std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread: the node is one event loop (the engine) beside the MQTT
    // loop, and the store writes on a thread of its own. A single thread
    // saves the cross-thread wake-ups of every request and an allocator
    // arena (a gateway's memory).
    let runtime = match tokio::runtime::Builder::new_current_thread()
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
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Args::command(),
                "m2mnode",
                &mut std::io::stdout().lock(),
            );
            ExitCode::SUCCESS
        }
        Command::Man { dir } => match write_man(dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write the man pages: {e}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig { config, file, user } => {
            let Some(config) = config.or(file) else {
                eprintln!("error: give the config file (--config FILE)");
                return ExitCode::from(2);
            };
            let account = match user
                .as_deref()
                .map(|n| (n, m2mnode::config::Account::named(n)))
            {
                Some((n, None)) => {
                    eprintln!("error: --user {n}: no such user in /etc/passwd");
                    return ExitCode::from(2);
                }
                Some((_, a)) => a,
                None => None,
            };
            let report = m2mnode::config::check(&config, account.as_ref());
            let at = |p: &m2mnode::config::Problem| match p.line {
                Some(l) => format!("{}:{l}", config.display()),
                None => config.display().to_string(),
            };
            for n in &report.notes {
                let _ = writeln!(std::io::stdout(), "{}: note: {n}", at(n));
            }
            let problems = report.problems;
            if problems.is_empty() {
                let _ = writeln!(std::io::stdout(), "{}: ok", config.display());
                return ExitCode::SUCCESS;
            }
            for p in &problems {
                eprintln!("{}: {p}", at(p));
            }
            eprintln!(
                "error: {}: {} problem{}",
                config.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            ExitCode::from(2)
        }
        Command::Status(args) => match runtime.block_on(cli::status(&args)) {
            Ok(st) => {
                let text = if args.json {
                    serde_json::to_string_pretty(&st.status).unwrap_or_default() + "\n"
                } else {
                    cli::status_summary(&st.status)
                };
                let _ = write!(std::io::stdout(), "{text}");
                if st.healthy {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                let code = exit_code(&e);
                if args.json {
                    let text = serde_json::to_string_pretty(&e.to_json(code)).unwrap_or_default();
                    let _ = writeln!(std::io::stdout(), "{text}");
                }
                eprintln!("error: {e}");
                ExitCode::from(code)
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
            for p in cfg.advisories() {
                tracing::warn!("{}: {p}", config.display());
            }
            match runtime.block_on(node::run_file(config, cfg, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Demo { port, keep } => {
            if wants_logs() {
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
            if wants_logs() {
                init_logging(args.log_format);
            }
            let body = req.body;
            match runtime.block_on(cli::request(*req)) {
                Ok(rsp) => {
                    // A closed pipe (`| head`) is not worth a panic.
                    let text = if body {
                        rsp.pc.as_ref().map(serde_json::to_string_pretty)
                    } else {
                        Some(serde_json::to_string_pretty(&rsp))
                    };
                    if let Some(Ok(text)) = text {
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
                    ExitCode::from(exit_code(&e))
                }
            }
        }
    }
}

fn exit_code(e: &CliError) -> u8 {
    match e {
        CliError::Usage(_) => 2,
        CliError::Refused(_) => 1,
        CliError::NoBroker { .. } | CliError::Timeout(..) => 3,
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

#[cfg(test)]
mod tests {
    use super::log_filter;

    fn note(v: &str) -> Option<String> {
        log_filter(Some(v.into())).1
    }

    #[test]
    fn rust_log_falls_back_to_info_only_when_it_must() {
        assert_eq!(log_filter(None).1, None);
        for good in [
            "warn",
            "INFO",
            "m2mnode=debug",
            "info,rumqttc=off",
            "m2mnode::node",
        ] {
            assert_eq!(note(good), None, "{good}");
        }
        assert!(note("").is_some_and(|n| n.contains("empty")));
        assert!(note("  ").is_some_and(|n| n.contains("empty")));
        for bad in ["debugg", "m2mnode=debugg", "info,verbose"] {
            assert!(
                note(bad).is_some_and(|n| n.contains("logging at info")),
                "{bad}"
            );
        }
    }
}

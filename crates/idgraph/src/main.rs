//! The `idgraph` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use idgraph::config::{self, Durability, LogFormat, Overrides, Secret};

/// idgraph: an identity graph and customer profile server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (embedded SQLite in ./idgraph-data unless --database-url is given).
    Serve(ServeArgs),
    /// Import a CSV file: through a running server (--server, --key), or directly into a store
    /// no server holds (--data-dir or --database-url, as for serve).
    Import(ImportArgs),
    /// Hard-delete what deleted persons left once their retention window has passed, directly
    /// on a store no server holds (--data-dir) or on the configured PostgreSQL.
    Purge(PurgeArgs),
    /// The data key that seals PII and secrets at rest.
    DataKey {
        #[command(subcommand)]
        command: DataKeyCommand,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every setting with its default value and meaning, as TOML.
    Default,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Data directory of the embedded store [default: ./idgraph-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user:password@host:port/db); env IDGRAPH_DATABASE_URL.
    #[arg(long, value_name = "URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The master key; env IDGRAPH_MASTER_KEY. Generated and printed once if never set.
    #[arg(long, value_name = "KEY", hide_env_values = true)]
    master_key: Option<String>,
    /// Durability of acknowledged writes on the embedded store [default: full].
    #[arg(long, value_enum)]
    durability: Option<Durability>,
    /// Log line format [default: auto].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. "info" or "info,idgraph_http=debug" [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
enum DataKeyCommand {
    /// Seal PII with a new data-encryption key and re-seal every stored row with it, in small
    /// batches, while servers keep serving (on PostgreSQL; a server on the embedded store is
    /// asked with POST /api/v1/data-key/rotate). An interrupted rotation resumes when run again.
    Rotate(RotateArgs),
}

#[derive(Debug, clap::Args)]
struct RotateArgs {
    /// A TOML configuration file, as for serve (the data key comes from it or the environment).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data dir of the embedded store [default: ./idgraph-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A PostgreSQL URL instead of the embedded store; env IDGRAPH_DATABASE_URL.
    #[arg(long, value_name = "URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Log filter [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

#[derive(Debug, clap::Args)]
struct PurgeArgs {
    /// Do not wait for the retention window: purge every deleted person now.
    #[arg(long)]
    now: bool,
    /// A TOML configuration file, as for serve.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data dir of the embedded store [default: ./idgraph-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A PostgreSQL URL instead of the embedded store; env IDGRAPH_DATABASE_URL.
    #[arg(long, value_name = "URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Log filter [default: warn].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// The CSV file; its first line names the columns.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Base URL of a running idgraph (e.g. http://127.0.0.1:8080); env IDGRAPH_SERVER.
    #[arg(long, value_name = "URL", env = "IDGRAPH_SERVER", requires = "key")]
    server: Option<String>,
    /// API key with the imports:write and imports:read scopes; env IDGRAPH_KEY.
    #[arg(long, value_name = "KEY", env = "IDGRAPH_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Workspace of the imported rows [default: default].
    #[arg(long, value_name = "NAME")]
    workspace: Option<String>,
    /// universe (may create persons), enrichment (only existing persons), or suppression.
    #[arg(long, value_name = "MODE", default_value = "universe")]
    mode: String,
    /// A mapping name (auto, leads, or one saved before), or a TOML/JSON mapping file, saved
    /// under its file name and used [default: auto].
    #[arg(long, value_name = "NAME|FILE")]
    mapping: Option<String>,
    /// Suppression imports: the reason of rows without a reason column [default: dnc].
    #[arg(long, value_name = "REASON")]
    reason: Option<String>,
    /// Write every row's outcome here as CSV: row, person_id, outcome, reason.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// No progress bar (it is only drawn on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    /// Without --server: the tenant to import into.
    #[arg(
        long,
        value_name = "ID",
        default_value = "default",
        conflicts_with = "server"
    )]
    tenant: String,
    /// Without --server: a TOML configuration file, as for serve.
    #[arg(long, value_name = "FILE", conflicts_with = "server")]
    config: Option<PathBuf>,
    /// Without --server: the data dir of the embedded store [default: ./idgraph-data].
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    data_dir: Option<PathBuf>,
    /// Without --server: a PostgreSQL URL instead of the embedded store.
    #[arg(
        long,
        value_name = "URL",
        hide_env_values = true,
        conflicts_with = "server"
    )]
    database_url: Option<String>,
    /// Log filter for what happens underneath [default: warn].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    idgraph_app::webhooks::install_tls_provider();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            fail("a subcommand is required, e.g. 'idgraph serve' (see 'idgraph --help')");
            return ExitCode::from(2);
        }
        Err(e) => {
            // clap's rendering spans several lines; keep the one naming the problem.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            fail(&format!("{first} (see 'idgraph --help')"));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            fail(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// One line on stderr: what went wrong and where, no backtrace.
fn fail(message: &str) {
    let _ = writeln!(std::io::stderr(), "error: {message}");
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", config::ANNOTATED_DEFAULTS);
            Ok(())
        }
        Command::Serve(args) => serve(args),
        Command::Import(args) => import(args),
        Command::Purge(args) => purge(args),
        Command::DataKey {
            command: DataKeyCommand::Rotate(args),
        } => rotate(args),
    }
}

fn rotate(args: RotateArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: args.data_dir,
        database_url: args.database_url.map(Secret::from),
        log_level: Some(args.log_level.unwrap_or_else(|| "info".to_owned())),
        ..Overrides::default()
    };
    let config = config::load(args.config.as_deref(), &overrides)?;
    idgraph::telemetry::init(LogFormat::Text, &config.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let current = runtime.block_on(idgraph::rotate_directly(&config))?;
    let _ = writeln!(
        std::io::stdout().lock(),
        "rotated: PII is sealed with data-encryption key {current}"
    );
    Ok(())
}

fn purge(args: PurgeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: args.data_dir,
        database_url: args.database_url.map(Secret::from),
        log_level: Some(args.log_level.unwrap_or_else(|| "warn".to_owned())),
        ..Overrides::default()
    };
    let config = config::load(args.config.as_deref(), &overrides)?;
    idgraph::telemetry::init(LogFormat::Text, &config.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let purged = runtime.block_on(idgraph::purge_directly(&config, args.now))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "purged {} deleted person(s): {} events, {} trait values, {} consent events, {} import rows",
        purged.persons,
        purged.events,
        purged.trait_values,
        purged.consent_events,
        purged.import_rows
    );
    Ok(())
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let options = idgraph::import::ImportOptions {
        file: args.file,
        workspace: args.workspace,
        mode: Some(args.mode),
        mapping: args.mapping,
        reason: args.reason,
        output: args.output,
        progress: !args.no_progress,
    };
    let log_level = args.log_level.unwrap_or_else(|| "warn".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let state = match (args.server, args.key) {
        (Some(server), Some(key)) => {
            idgraph::telemetry::init(LogFormat::Text, &log_level)?;
            runtime.block_on(idgraph::import::import_through_server(
                &server, &key, &options,
            ))?
        }
        (None, key) => {
            if key.is_some() {
                anyhow::bail!("--key is for --server; directly on a store no key is needed");
            }
            let overrides = Overrides {
                data_dir: args.data_dir,
                database_url: args.database_url.map(Secret::from),
                log_level: Some(log_level),
                ..Overrides::default()
            };
            let config = config::load(args.config.as_deref(), &overrides)?;
            idgraph::telemetry::init(LogFormat::Text, &config.log_level)?;
            runtime.block_on(idgraph::import_directly(&config, &args.tenant, &options))?
        }
        (Some(_), None) => anyhow::bail!("--server needs --key"),
    };
    if state.status != "completed" {
        anyhow::bail!(
            "import {} {}: {}",
            state.id,
            state.status,
            state.error.unwrap_or_default()
        );
    }
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url.map(Secret::from),
        master_key: args.master_key.map(Secret::from),
        durability: args.durability,
        log_format: args.log_format,
        log_level: args.log_level,
    };
    let config = config::load(args.config.as_deref(), &overrides)?;
    idgraph::telemetry::init(config.log_format, &config.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let (signalled, mut on_signal) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            idgraph::shutdown_signal().await;
            let _ = signalled.send(true);
        };
        let running = idgraph::launch(&config, listener, shutdown).await?;
        if let Some(key) = &running.generated_master_key {
            print_master_key(key);
        }
        let grace = Duration::from_secs(config.shutdown_grace_seconds);
        let deadline = async move {
            let _ = on_signal.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = running.wait() => result,
            () = deadline => {
                tracing::warn!(grace_seconds = grace.as_secs(), "in-flight requests did not finish in time; exiting");
                Ok(())
            }
        }
    })
}

/// Shown once on stdout (never in the log): only the hash is stored.
fn print_master_key(key: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n  A master key was generated. It is shown only this once; store it now:\n\n    {key}\n\n  \
         Use it as 'Authorization: Bearer <key>'. Set --master-key / IDGRAPH_MASTER_KEY to choose your own.\n"
    );
    let _ = out.flush();
}

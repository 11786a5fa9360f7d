//! The `soundcheck` binary: parses the command line and hands off to the library.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use soundcheck::config::{Config, DataArgs, ServeArgs};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "soundcheck",
    version,
    about = "Local music-AI APIs: generation, separation, transcription, mastering, analysis."
)]
struct Cli {
    /// Log format: `text` or `json`.
    #[arg(
        long,
        global = true,
        env = "SOUNDCHECK_LOG_FORMAT",
        default_value = "text",
        value_parser = ["text", "json"]
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (no flags needed).
    Serve(ServeArgs),
    /// Print the API keys and the webhook secret of a data directory.
    Keys(DataArgs),
    /// Show or add credits.
    Credits {
        #[command(subcommand)]
        action: CreditsAction,
    },
    /// Analyse a file (tempo, beats, key, loudness, features) without a server.
    Analyze {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Master a file to a loudness target without a server.
    Master {
        file: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value_t = -14.0, allow_negative_numbers = true)]
        target_lufs: f64,
        #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
        true_peak: f64,
        #[arg(long)]
        json: bool,
    },
    /// Transcribe a file to MIDI (basic-pitch) without a server.
    Transcribe {
        file: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Job options as name=value (onset_threshold, frame_threshold, min_note_ms, …).
        #[arg(short = 'p', long = "option")]
        options: Vec<String>,
    },
    #[command(flatten)]
    Remote(soundcheck::remote::RemoteCommand),
    /// Split a file into stems (DSP separator) without a server.
    Separate {
        file: PathBuf,
        #[arg(long, default_value_t = 4)]
        stems: u8,
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CreditsAction {
    /// Print the balance.
    Show(DataArgs),
    /// Add N credits.
    Add {
        amount: i64,
        #[command(flatten)]
        data: DataArgs,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Keys(data) => {
            let (_, secrets) = soundcheck::app::open_store(&offline_config(&data)?)?;
            print!("{}", secrets.env_lines());
            Ok(())
        }
        Command::Analyze { file, json } => soundcheck::cli::analyze(&file, json),
        Command::Master {
            file,
            output,
            target_lufs,
            true_peak,
            json,
        } => soundcheck::cli::master(&file, &output, target_lufs, true_peak, json),
        Command::Transcribe {
            file,
            output,
            options,
        } => soundcheck::cli::transcribe(&file, &output, &options),
        Command::Separate {
            file,
            stems,
            output,
        } => soundcheck::cli::separate(&file, stems, &output),
        Command::Remote(cmd) => soundcheck::remote::run(cmd),
        Command::Credits { action } => {
            let (data, amount) = match action {
                CreditsAction::Show(d) => (d, None),
                CreditsAction::Add { amount, data } => (data, Some(amount)),
            };
            let (store, _) = soundcheck::app::open_store(&offline_config(&data)?)?;
            let balance = store.write_blocking(|tx| match amount {
                Some(n) if n > 0 => soundcheck::store::credits::record(tx, None, "grant", n),
                _ => soundcheck::store::credits::balance(tx),
            })?;
            if amount.is_some_and(|n| n <= 0) {
                anyhow::bail!("amount must be a positive integer");
            }
            println!("{balance}");
            Ok(())
        }
    }
}

fn offline_config(data: &DataArgs) -> anyhow::Result<Config> {
    Config::for_data_dir(data)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::from_args(&args)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        let registry = soundcheck::engines::registry(&config);
        let (store, secrets) = soundcheck::app::open_store(&config)?;
        let addr = listener.local_addr()?;
        let base = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        println!(
            "soundcheck {} listening on {base}",
            env!("CARGO_PKG_VERSION")
        );
        println!("data directory: {}", config.data_dir.display());
        print!("{}", secrets.env_lines());
        for (endpoint, engine) in registry.describe() {
            println!("engine: {endpoint} -> {engine}");
        }
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            soundcheck::app::shutdown_signal().await;
            eprintln!("shutting down: finishing or re-queueing running work…");
            token.cancel();
        });
        soundcheck::app::run(config, store, secrets, registry, listener, shutdown).await
    })
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOUNDCHECK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        // Fields at the top level of each line, so `jq .trace_id` works.
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

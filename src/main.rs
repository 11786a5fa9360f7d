//! The `soundcheck` binary: parses the command line and hands off to the library.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use soundcheck::config::{Config, DataArgs, ServeArgs};
use tokio_util::sync::CancellationToken;

/// A line of a server's own output on stdout. Unlike `println!`, a closed stdout (`serve | head
/// -1`, a log shipper that died) does not panic: a server must outlive its reader.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The same on stderr.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

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
    /// Run a fleet's worker node: jobs, generations and webhooks from the shared --database, no
    /// HTTP (needs --database and --public-url; see docs/fleet.md).
    Worker(ServeArgs),
    /// Print the API keys and the webhook secret of a data directory (default: the running
    /// server's).
    Keys {
        /// Print them as a JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
        /// A fleet's database (`postgres://…`): print the keys every node of it uses.
        #[arg(long, env = "SOUNDCHECK_DATABASE")]
        database: Option<String>,
    },
    /// List the soundcheck servers running on this machine (URL, pid, data directory).
    Servers {
        /// Print them as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show or add credits.
    Credits {
        #[command(subcommand)]
        action: CreditsAction,
    },
    /// Analyse a file (tempo, beats, key, loudness, features) without a server.
    Analyze {
        /// Audio files or directories (their audio files): one report each.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Master a file to a loudness target without a server (the /v1/master job: same options,
    /// ranges and messages).
    Master {
        /// Audio files or directories (their audio files); with more than one file, -o is a
        /// directory and each gets a line in a summary.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Where to write the result (.wav, .flac or .mp3; must agree with --format), or with
        /// several files the directory for them (named after each input, the format's extension).
        #[arg(short, long)]
        output: PathBuf,
        /// Integrated loudness target in LUFS, -30 to -6 (default -14; API field target_lufs).
        #[arg(long, allow_negative_numbers = true)]
        target_lufs: Option<String>,
        /// True-peak ceiling in dBTP, -9 to 0 (default -1; API field true_peak_db).
        #[arg(long, allow_negative_numbers = true)]
        true_peak: Option<String>,
        /// wav16, wav24, float, flac, flac24 or mp3 (default: from OUTPUT's extension).
        #[arg(long)]
        format: Option<String>,
        /// MP3 bit rate in kbit/s, a LAME rate from 8 to 320 (default 320; mp3 only).
        #[arg(long)]
        bitrate: Option<String>,
        /// Leave out the tonal EQ (API: eq=false).
        #[arg(long)]
        no_eq: bool,
        /// Leave out the compressor (API: compress=false).
        #[arg(long)]
        no_compress: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Transcribe a file to MIDI (basic-pitch) without a server.
    Transcribe {
        /// Audio files or directories (their audio files); with more than one file, -o is a
        /// directory and each gets a line in a summary.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Where to write the MIDI file, or with several files the directory for `<name>.mid`.
        #[arg(short, long)]
        output: PathBuf,
        /// Job options as name=value (onset_threshold, frame_threshold, min_note_ms, …).
        #[arg(short = 'p', long = "option")]
        options: Vec<String>,
        /// Print the note count and the output path as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage model weights (MusicGen, HTDemucs) in the data directory.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// Generate music from tags to an MP3 without a server.
    Generate {
        /// Style tags, as the API's `tags` (e.g. "lofi chill, piano").
        tags: String,
        /// Where to write: .mp3 (as the API delivers), .wav or .flac.
        #[arg(short, long)]
        output: PathBuf,
        /// Seconds (1-600; default 30).
        #[arg(long)]
        duration: Option<u32>,
        /// Beats per minute (30-300; default from the tags).
        #[arg(long)]
        bpm: Option<u32>,
        /// Key, e.g. "A minor" (default from the seed).
        #[arg(long)]
        key: Option<String>,
        /// Beats per bar (2-12; default 4).
        #[arg(long)]
        timesignature: Option<u32>,
        /// Random seed, 0 to 4294967295 (default: a new one, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// `procedural`, `auto` or an installed model id.
        #[arg(long, default_value = "procedural")]
        model: String,
        /// Print the resolved parameters and the file written as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    #[command(flatten)]
    Remote(soundcheck::remote::RemoteCommand),
    /// Split a file into stems without a server (the /v1/separate job: same options, ranges and
    /// messages; the engine a server on the data directory would use, or --model's).
    Separate {
        /// Audio files or directories (their audio files); with more than one file, -o is a
        /// directory and each gets a line in a summary.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// 2 (vocals, accompaniment) or 4 (drums, bass, other, vocals).
        #[arg(long, default_value = "4")]
        stems: String,
        /// Stem files: wav16, wav24 or float.
        #[arg(long, default_value = "wav16")]
        format: String,
        /// auto (the best installed HTDemucs, else dsp), dsp, htdemucs, htdemucs_ft or htdemucs_6s.
        #[arg(long, default_value = "auto")]
        model: String,
        /// Directory for the stems (created if missing); with several files, one subdirectory
        /// per input, named after it.
        #[arg(short, long)]
        output: PathBuf,
        /// Print the job's result as JSON (file paths in place of URLs).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ModelsAction {
    /// The engines in use and the catalog with what is installed.
    List {
        /// Print the catalog rows as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Download a model's published weights (resumable, checksummed).
    Pull {
        /// A catalog id (`soundcheck models list` shows them).
        id: String,
        /// Fetch from this base URL instead of huggingface.co / dl.fbaipublicfiles.com.
        #[arg(long, env = "SOUNDCHECK_MODEL_MIRROR")]
        mirror: Option<String>,
        /// Hugging Face revision (branch, tag or commit) for MusicGen.
        #[arg(long)]
        revision: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Install from a local copy: a MusicGen directory or demucs .th checkpoints.
    Import {
        /// A MusicGen directory or a demucs .th checkpoint.
        path: PathBuf,
        /// Install under this id (default: the file or directory name).
        #[arg(long = "as")]
        id: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Delete an installed model.
    Remove {
        /// The id of an installed model.
        id: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Subcommand)]
enum CreditsAction {
    /// Print the balance.
    Show {
        /// Print `{"balance": N}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
        /// A fleet's database (`postgres://…`): its balance, shared by every node.
        #[arg(long, env = "SOUNDCHECK_DATABASE")]
        database: Option<String>,
    },
    /// Add N credits.
    Add {
        /// How many credits to add (a positive integer).
        amount: i64,
        /// Print `{"balance": N}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataArgs,
        /// A fleet's database (`postgres://…`): added to the balance every node shares.
        #[arg(long, env = "SOUNDCHECK_DATABASE")]
        database: Option<String>,
    },
}

/// Errors a user can act on are printed as one message (the causes joined with `: `), never
/// with a backtrace, whatever `RUST_BACKTRACE` says; the exit status is 1.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    soundcheck::audio::decode::install_panic_hook();
    // Rust ignores SIGPIPE, so printing to a closed pipe (`soundcheck jobs list | head -1`)
    // panics. A client command gets the Unix default back and ends quietly, as `ls | head`
    // does. The long-running ones keep ignoring it: a server must not die with its terminal,
    // and `listen` notices the closed pipe itself and restores the endpoint URL before it exits.
    let long_running = matches!(cli.command, Command::Serve(_) | Command::Worker(_))
        || matches!(&cli.command, Command::Remote(r) if r.is_listen());
    #[cfg(unix)]
    if !long_running {
        // SAFETY: called before any other thread exists; restores the default disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    #[cfg(not(unix))]
    let _ = long_running;
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args),
        Command::Worker(args) => worker(args),
        Command::Keys {
            json,
            data,
            database,
        } => {
            let secrets = match fleet_database(database, &data) {
                Some(url) => {
                    fleet_url(&url)?;
                    tokio::runtime::Runtime::new()?
                        .block_on(soundcheck::app::read_fleet_secrets(&url))?
                }
                None => soundcheck::app::read_secrets(&data.for_client()?)?,
            };
            if json {
                let keys = serde_json::json!({
                    "ft_key": secrets.ft_key,
                    "tl_key": secrets.tl_key,
                    "webhook_secret": secrets.webhook_secret,
                });
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print!("{}", secrets.env_lines());
            }
            Ok(())
        }
        Command::Servers { json } => soundcheck::instances::print_running(json),
        Command::Analyze { files, json } => soundcheck::cli::analyze_files(&files, json),
        Command::Master {
            files,
            output,
            target_lufs,
            true_peak,
            format,
            bitrate,
            no_eq,
            no_compress,
            json,
        } => {
            // The job's own field names, so the engine's parser checks them.
            let mut fields = std::collections::BTreeMap::new();
            let pairs = [
                ("target_lufs", target_lufs),
                ("true_peak_db", true_peak),
                ("format", format),
                ("bitrate", bitrate),
                ("eq", no_eq.then(|| "false".to_string())),
                ("compress", no_compress.then(|| "false".to_string())),
            ];
            for (name, value) in pairs {
                if let Some(v) = value {
                    fields.insert(name.to_string(), v);
                }
            }
            soundcheck::cli::master_files(&files, &output, fields, json)
        }
        Command::Transcribe {
            files,
            output,
            options,
            json,
        } => soundcheck::cli::transcribe_files(&files, &output, &options, json),
        Command::Separate {
            files,
            stems,
            format,
            model,
            output,
            json,
            data,
        } => {
            let fields = [("stems", stems), ("format", format)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            soundcheck::cli::separate(&files, &fields, &model, &data.path(), &output, json)
        }
        Command::Models { action } => match action {
            ModelsAction::List { json, data } => {
                soundcheck::cli::models_list(&Config::for_reading_data_dir(&data)?, json)
            }
            ModelsAction::Pull {
                id,
                mirror,
                revision,
                data,
            } => soundcheck::cli::models_pull(
                &offline_config(&data)?,
                &id,
                &soundcheck::models::PullOptions { mirror, revision },
            ),
            ModelsAction::Import { path, id, data } => {
                soundcheck::cli::models_import(&offline_config(&data)?, &path, id.as_deref())
            }
            ModelsAction::Remove { id, data } => {
                soundcheck::models::remove(&Config::for_reading_data_dir(&data)?.data_dir, &id)?;
                println!("removed {id}");
                Ok(())
            }
        },
        Command::Generate {
            tags,
            output,
            duration,
            bpm,
            key,
            timesignature,
            seed,
            model,
            json,
            data,
        } => soundcheck::cli::generate(
            &offline_config(&data)?,
            &soundcheck::cli::GenerateArgs {
                tags: &tags,
                duration,
                bpm,
                key: key.as_deref(),
                timesignature,
                seed,
                model: &model,
                output: &output,
                json,
            },
        ),
        Command::Remote(cmd) => soundcheck::remote::run(cmd),
        Command::Credits { action } => {
            let (data, amount, json, database) = match action {
                CreditsAction::Show {
                    json,
                    data,
                    database,
                } => (data, None, json, database),
                CreditsAction::Add {
                    amount,
                    json,
                    data,
                    database,
                } => (data, Some(amount), json, database),
            };
            if let Some(url) = fleet_database(database, &data) {
                let balance = fleet_credits(&url, amount)?;
                print_balance(balance, json);
                return Ok(());
            }
            let dir = data.for_client()?;
            let balance = match amount {
                None => {
                    let path = dir.join(soundcheck::datadir::DATABASE_FILE);
                    let conn = soundcheck::store::open_read_only(&path)?;
                    soundcheck::store::credits::balance(&conn)?
                }
                Some(n) if n <= 0 => anyhow::bail!("amount must be a positive integer"),
                // A server owns the directory: add them through it (its ledger, its writer).
                Some(n) if soundcheck::datadir::holder_url(&dir).is_some() => {
                    soundcheck::remote::credits_add(&dir, n)?
                }
                Some(n) => {
                    // A write: only while no server owns the directory (it would race its ledger);
                    // with one running, `POST /v1/credits` adds credits through it.
                    let _lock = soundcheck::datadir::DataDirLock::acquire(&dir).map_err(|e| {
                        anyhow::anyhow!("{e}; add credits through it with POST /v1/credits")
                    })?;
                    let store = soundcheck::store::Store::open(
                        &dir.join(soundcheck::datadir::DATABASE_FILE),
                    )?;
                    store.write_blocking(|tx| {
                        soundcheck::store::credits::record(
                            tx,
                            None,
                            soundcheck::store::states::LedgerKind::Grant,
                            n,
                        )
                    })?
                }
            };
            print_balance(balance, json);
            Ok(())
        }
    }
}

fn offline_config(data: &DataArgs) -> anyhow::Result<Config> {
    Config::for_data_dir(data)
}

fn print_balance(balance: i64, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "balance": balance }));
    } else {
        println!("{balance}");
    }
}

/// The fleet database a client command uses: `--database` (or `SOUNDCHECK_DATABASE`, empty
/// counting as unset), unless a data directory is given, which wins.
fn fleet_database(database: Option<String>, data: &DataArgs) -> Option<String> {
    database.filter(|u| !u.is_empty() && data.data_dir.is_none())
}

/// A client command's `--database` must name a fleet's PostgreSQL (a lone server's SQLite file is
/// found through its data directory).
fn fleet_url(url: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        soundcheck::store::postgres::is_url(url),
        "--database must be a postgres:// URL (a fleet's database); for a single server, use \
         --data-dir"
    );
    Ok(())
}

/// `credits show|add --database`: the fleet's shared ledger, read or added to in one
/// transaction (the same write lock the nodes take, so it never races them).
fn fleet_credits(url: &str, amount: Option<i64>) -> anyhow::Result<i64> {
    fleet_url(url)?;
    if let Some(n) = amount {
        anyhow::ensure!(n > 0, "amount must be a positive integer");
    }
    tokio::runtime::Runtime::new()?.block_on(async {
        let store = soundcheck::store::Store::connect_existing(url).await?;
        let balance = match amount {
            None => store.read(soundcheck::store::credits::balance).await?,
            Some(n) => {
                store
                    .write(move |tx| {
                        soundcheck::store::credits::record(
                            tx,
                            None,
                            soundcheck::store::states::LedgerKind::Grant,
                            n,
                        )
                    })
                    .await?
            }
        };
        Ok(balance)
    })
}

/// `soundcheck worker`: a node that only runs work, on the fleet's shared database.
fn worker(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.database.is_some(),
        "a worker node shares a fleet's database: give --database postgres://… (or \
         SOUNDCHECK_DATABASE); on one machine, `soundcheck serve` runs its own workers"
    );
    anyhow::ensure!(
        args.workers != Some(0),
        "a worker node needs --workers of at least 1"
    );
    let config = Config::from_args(&args)?;
    soundcheck::app::check_worker(&config)?;
    let lock = soundcheck::datadir::DataDirLock::acquire(&config.data_dir)?;
    soundcheck::audio::limits::set_max_duration_secs(config.max_duration_secs);
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async move {
        let registry = soundcheck::engines::try_registry(&config)?;
        soundcheck::app::claimed_engines(&config, &registry)?;
        let (store, secrets) = soundcheck::app::open_store(&config).await?;
        let shutdown = stop_on_signal();
        let member =
            soundcheck::app::join_fleet(&config, &store, "worker", None, shutdown.clone()).await?;
        let result = async {
            let media = soundcheck::app::open_media(&config, &store).await?;
            lock.record(None)?;
            say!(
                "soundcheck {} worker (pid {}): {} workers on the shared database, models on {}, media in {}",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                config.workers,
                soundcheck::engines::device_name(&soundcheck::engines::default_device()),
                config
                    .media_url
                    .clone()
                    .unwrap_or_else(|| config.media_dir.display().to_string())
            );
            soundcheck::app::run_worker(config, store, secrets, media, registry, shutdown).await
        }
        .await;
        left_fleet(member, result).await
    });
    stop_runtime(runtime);
    result
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::from_args(&args)?;
    // First, before anything reads or re-queues work: is this data directory ours?
    let lock = soundcheck::datadir::DataDirLock::acquire(&config.data_dir)?;
    soundcheck::audio::limits::set_max_duration_secs(config.max_duration_secs);
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async move {
        if let Some(url) = &config.webhook_url {
            soundcheck::webhooks::guard::check_url(url, config.strict)
                .await
                .map_err(|e| anyhow::anyhow!("--webhook-url: {e}"))?;
        }
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| bind_error(config.addr, e))?;
        let registry = soundcheck::engines::try_registry(&config)?;
        soundcheck::app::claimed_engines(&config, &registry)?;
        let (store, secrets) = soundcheck::app::open_store(&config).await?;
        // Where clients reach it: client commands given only `--database` choose from these.
        let listen = listener.local_addr()?;
        let public = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        let urls = soundcheck::app::NodeUrls { public, listen };
        let shutdown = stop_on_signal();
        let member =
            soundcheck::app::join_fleet(&config, &store, "serve", Some(urls), shutdown.clone())
                .await?;
        let result = serve_node(config, store, secrets, registry, listener, lock, shutdown).await;
        left_fleet(member, result).await
    });
    stop_runtime(runtime);
    result
}

/// `serve` once its store is open (and, in a fleet, it joined): its storage, banner and work.
async fn serve_node(
    config: Config,
    store: soundcheck::store::Store,
    secrets: soundcheck::app::Secrets,
    registry: soundcheck::jobs::registry::Registry,
    listener: tokio::net::TcpListener,
    lock: soundcheck::datadir::DataDirLock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Checked before the banner: a node that cannot use its bucket says why and stops.
    let media = soundcheck::app::open_media(&config, &store).await?;
    let addr = listener.local_addr()?;
    let base = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    lock.record(Some(&base))?;
    // Client commands find this server (and the data directory holding its keys) through
    // this entry; it is removed when `serve` returns.
    let _registration = soundcheck::instances::register(&base, &config.data_dir)
        .map_err(|e| tracing::warn!("could not record this server for client commands: {e}"))
        .ok();
    say!(
        "soundcheck {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    if base != format!("http://{addr}") {
        // Behind a proxy or in a fleet: where clients reach it, and what result URLs start with.
        say!("public URL: {base}");
    }
    say!("dashboard: {base}/");
    say!("data directory: {}", config.data_dir.display());
    if let Some(url) = &config.media_url {
        say!("media: {url}");
    } else if config.media_dir != config.data_dir {
        say!("media: {}", config.media_dir.display());
    }
    say!("{}", secrets.env_lines().trim_end());
    for (endpoint, engine) in registry.describe() {
        say!("engine: {endpoint} -> {engine}");
    }
    if let Some(g) = registry.default_generator() {
        say!("default generator: {}", g.name());
    }
    if config.workers == 0 {
        say!("workers: none (an API node: the fleet's workers run its jobs)");
    } else {
        say!(
            "workers: {}, models run on: {}",
            config.workers,
            soundcheck::engines::device_name(&soundcheck::engines::default_device())
        );
    }
    for hint in soundcheck::engines::hints(&registry) {
        say!("hint: {hint}");
    }
    say!(
        "next: in another terminal, `soundcheck listen` (a webhook inbox that verifies \
         signatures), then `soundcheck trigger job.completed`"
    );
    soundcheck::app::run(config, store, secrets, media, registry, listener, shutdown).await
}

/// A fleet node's end: it leaves the fleet (its row deleted); stopped for a disagreement with a
/// node that joined before it, it fails with the reason.
async fn left_fleet(
    member: Option<soundcheck::app::FleetMember>,
    result: anyhow::Result<()>,
) -> anyhow::Result<()> {
    let conflict = match member {
        Some(member) => member.leave().await,
        None => None,
    };
    match (result, conflict) {
        (Ok(()), Some(why)) => Err(anyhow::anyhow!(why)),
        (result, _) => result,
    }
}

/// A token cancelled at Ctrl-C or SIGTERM. Whoever cancels it (a signal, or a fleet node that
/// stops itself for a disagreement), a note says the node is stopping.
fn stop_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let signalled = soundcheck::app::shutdown_signal();
    tokio::spawn(async move {
        tokio::select! {
            _ = signalled => token.cancel(),
            _ = token.cancelled() => {}
        }
        note!("shutting down: finishing or re-queueing running work…");
    });
    shutdown
}

/// Ends a server's runtime without waiting on engine threads: by now every run has ended or been
/// given back (an engine still busy past the shutdown grace is abandoned, and its output is never
/// read), and dropping the runtime would wait for those threads to return, holding the process
/// (and its data directory lock) for as long as the engine needs.
fn stop_runtime(runtime: tokio::runtime::Runtime) {
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
}

/// A bind failure that names the address and what to do; a port held by another soundcheck
/// names that server.
fn bind_error(addr: std::net::SocketAddr, e: std::io::Error) -> anyhow::Error {
    let mut next = addr;
    next.set_port(addr.port().wrapping_add(1).max(1));
    let holder = soundcheck::instances::running()
        .into_iter()
        .find(|i| i.url.ends_with(&format!(":{}", addr.port())))
        .map(|i| {
            format!(
                " (soundcheck pid {} serves {} there, data directory {})",
                i.pid,
                i.url,
                i.data_dir.display()
            )
        })
        .unwrap_or_default();
    if e.kind() == std::io::ErrorKind::AddrInUse {
        anyhow::anyhow!(
            "could not listen on {addr}: the address is already in use{holder}; choose another \
             with --addr (e.g. `soundcheck serve --addr {next}`) or SOUNDCHECK_ADDR"
        )
    } else {
        anyhow::anyhow!("could not listen on {addr}: {e}; choose another with --addr")
    }
}

fn init_logging(format: &str) {
    // The decoding library logs what it finds wrong in a file at error level ("probe reach EOF
    // at 5 bytes"); the refusal that follows says it to the client, so by default its lines are
    // left out (SOUNDCHECK_LOG=symphonia_core=debug,… brings them back).
    const QUIET_DECODER: &str = "symphonia_core=off,symphonia_metadata=off,\
        symphonia_format_riff=off,symphonia_format_isomp4=off,symphonia_format_mkv=off,\
        symphonia_format_ogg=off,symphonia_format_caf=off,symphonia_bundle_flac=off,\
        symphonia_bundle_mp3=off,symphonia_codec_aac=off,symphonia_codec_adpcm=off,\
        symphonia_codec_alac=off,symphonia_codec_pcm=off,symphonia_codec_vorbis=off,\
        symphonia_utils_xiph=off";
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOUNDCHECK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{QUIET_DECODER}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // A log line that cannot be written is dropped: by default tracing-subscriber reports it
        // with `eprintln!`, which panics once stderr is closed, in whatever task was logging (a
        // worker mid-job, a delivery before it is recorded).
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        // Fields at the top level of each line, so `jq .trace_id` works.
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

//! Server configuration: embedded defaults ← `SOUNDCHECK_*` environment ← command-line flags
//! (clap reads both). Everything has a default, so `soundcheck serve` needs no flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

/// Flags of `soundcheck serve` (each also read from the environment variable it names).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SOUNDCHECK_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Base URL used in poll_url, audioUrl and result URLs (default: http://<addr>).
    #[arg(long, env = "SOUNDCHECK_PUBLIC_URL")]
    pub public_url: Option<String>,

    #[command(flatten)]
    pub data: DataArgs,
    /// The database every node of a fleet shares: a `postgres://user@host/db` URL (default: the
    /// SQLite file `soundcheck.sqlite` in the data directory).
    #[arg(long, env = "SOUNDCHECK_DATABASE")]
    pub database: Option<String>,
    /// Where uploads and results are kept: a directory every node of a fleet mounts (default:
    /// the data directory).
    #[arg(long, env = "SOUNDCHECK_MEDIA_DIR")]
    pub media_dir: Option<PathBuf>,
    /// Keep uploads and results in S3-compatible object storage instead: `s3://bucket/prefix`.
    /// Endpoint and credentials come from `AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` (and `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint).
    #[arg(long, env = "SOUNDCHECK_MEDIA", conflicts_with = "media_dir")]
    pub media: Option<String>,
    /// In a fleet, make this node's media storage the fleet's after it was replaced at the same
    /// path or bucket (a restored volume); nodes on any other storage are refused from then on.
    /// Without it, a node whose storage is not the fleet's refuses to start.
    #[arg(long, requires = "database")]
    pub claim_media: bool,
    /// Seconds a worker's claim on a job holds without renewal (renewed every third of it); a
    /// job whose worker died is run again by another worker after this.
    #[arg(long, env = "SOUNDCHECK_LEASE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub lease_secs: u64,
    /// In a fleet, the engines and generators this node's workers take work for, by the names
    /// `serve` prints (e.g. `htdemucs,musicgen-small`); default: every one installed here.
    #[arg(long, env = "SOUNDCHECK_ENGINES", value_delimiter = ',')]
    pub engines: Option<Vec<String>>,
    /// Where models run: `auto` (the first CUDA GPU if this build has CUDA and one opens, else
    /// the CPU), `cpu`, or `cuda:N` (that GPU, or an error at start).
    #[arg(long, env = "SOUNDCHECK_DEVICE", default_value = "auto")]
    pub device: crate::engines::DeviceChoice,

    /// Generations API key to accept (X-API-Key); stored and reused.
    #[arg(long, env = "SOUNDCHECK_FT_KEY")]
    pub ft_key: Option<String>,

    /// Jobs API key to accept (Authorization: Bearer); stored and reused.
    #[arg(long, env = "SOUNDCHECK_TL_KEY")]
    pub tl_key: Option<String>,

    /// Webhook signing secret for the jobs API; stored and reused.
    #[arg(long, env = "SOUNDCHECK_WEBHOOK_SECRET")]
    pub webhook_secret: Option<String>,

    /// Jobs API webhook endpoint URL to configure at start.
    #[arg(long, env = "SOUNDCHECK_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Apply the hosted service's webhook URL rules: https only, public addresses only.
    /// `SOUNDCHECK_STRICT` takes 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "SOUNDCHECK_STRICT", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub strict: bool,

    /// Multiplies every webhook retry delay (0.001 turns 1 minute into 60 ms; above 0, at most
    /// 1000).
    #[arg(long, env = "SOUNDCHECK_TIME_SCALE", default_value_t = 1.0)]
    pub time_scale: f64,

    /// Largest accepted upload, in megabytes (1 to 102,400).
    #[arg(long, env = "SOUNDCHECK_MAX_UPLOAD_MB", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=102_400))]
    pub max_upload_mb: u64,

    /// Longest accepted audio, in seconds (uploads that declare or decode to more are refused
    /// with 422 unsupported_audio).
    #[arg(long, env = "SOUNDCHECK_MAX_DURATION_SECS",
          default_value_t = crate::audio::limits::DEFAULT_MAX_DURATION_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub max_duration_secs: u64,

    /// Seconds a client has to send a request's headers (from connecting, or from the previous
    /// response on a keep-alive connection) before its connection is closed.
    #[arg(long, env = "SOUNDCHECK_HEADER_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,

    /// Seconds a connection may stay silent mid-request (stalled body, client not reading) before
    /// it is closed.
    #[arg(long, env = "SOUNDCHECK_IDLE_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,

    /// How long result URLs stay valid, in hours (1 to 87,600: ten years).
    #[arg(long, env = "SOUNDCHECK_RESULT_TTL_HOURS", default_value_t = 168,
          value_parser = clap::value_parser!(u64).range(1..=87_600))]
    pub result_ttl_hours: u64,

    /// Jobs and generations run at once on the CPU (default: the number of cores; at most 1024).
    #[arg(long, env = "SOUNDCHECK_WORKERS",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1024))]
    pub workers: Option<usize>,

    /// A generation still running after this many seconds fails (1 to 86,400).
    #[arg(long, env = "SOUNDCHECK_GENERATION_TIMEOUT", default_value_t = 240,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub generation_timeout: u64,

    /// Seconds a webhook receiver has to answer (1 to 3,600).
    #[arg(long, env = "SOUNDCHECK_WEBHOOK_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub webhook_timeout: u64,

    /// Default text-to-music engine: `procedural` (instant, no weights), `musicgen-small`,
    /// `musicgen-medium` (installed with `soundcheck models pull`), or `auto` (the best installed
    /// MusicGen, else procedural). A request's `model` field picks another installed one.
    #[arg(long, env = "SOUNDCHECK_GENERATOR", default_value = "procedural")]
    pub generator: String,

    /// Fraction (0 to 1) of jobs and generations that fail as internal_error (fault injection).
    #[arg(long, env = "SOUNDCHECK_FAIL_RATE", default_value_t = 0.0)]
    pub fail_rate: f64,

    /// Milliseconds added before every API response (fault injection; at most 60,000).
    #[arg(long, env = "SOUNDCHECK_LATENCY", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub latency: u64,
}

/// Where state lives; shared by `serve` and the offline commands (`keys`, `credits`).
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Directory holding the database, uploads and results (default: the per-user data dir).
    #[arg(long, env = "SOUNDCHECK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataArgs {
    /// The data directory named by `--data-dir`, else the per-user default; nothing is created.
    pub fn path(&self) -> PathBuf {
        match &self.data_dir {
            Some(d) => d.clone(),
            None => directories::ProjectDirs::from("dev", "soundcheck", "soundcheck")
                .map(|p| p.data_dir().to_path_buf())
                .unwrap_or_else(|| PathBuf::from(".soundcheck")),
        }
    }

    /// The data directory, created if missing: for `serve` and the model installers only.
    pub fn resolve(&self) -> std::io::Result<PathBuf> {
        let dir = self.path();
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// The data directory of `keys` and `credits`: `--data-dir`, else that of the one server
    /// running on this machine (see the `instances` module), else the default; it must hold a
    /// database. With several servers running and no `--data-dir`, an error lists them.
    pub fn for_client(&self) -> anyhow::Result<PathBuf> {
        if self.data_dir.is_none() {
            let running = crate::instances::running();
            match running.as_slice() {
                [] => {}
                [one] => {
                    let running = DataArgs {
                        data_dir: Some(one.data_dir.clone()),
                    };
                    return running.existing();
                }
                several => anyhow::bail!(crate::instances::several_message(several, false)),
            }
        }
        self.existing()
    }

    /// The data directory of a client command, which must already hold a database: a typo in
    /// `--data-dir` is an error naming the path, never a new empty database with other keys.
    pub fn existing(&self) -> anyhow::Result<PathBuf> {
        let dir = self.path();
        if !dir.join(crate::datadir::DATABASE_FILE).is_file() && crate::datadir::is_held(&dir) {
            // A fleet node's data directory: its keys are in the fleet's PostgreSQL.
            anyhow::bail!(
                "{} belongs to a running fleet node, whose keys are in the fleet's database: \
                 use --database URL (keys, credits), or pass the keys (--api-key, --ft-key) that \
                 `soundcheck keys --database URL` prints",
                dir.display()
            );
        }
        if !dir.join(crate::datadir::DATABASE_FILE).is_file() {
            anyhow::bail!(
                "no soundcheck database in {}: check --data-dir (or SOUNDCHECK_DATA_DIR), or run \
                 `soundcheck serve --data-dir {}` once to create one",
                dir.display(),
                dir.display()
            );
        }
        Ok(dir)
    }
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// `--database`: a `postgres://` URL shared by a fleet; `None` = the SQLite file in `data_dir`.
    pub database: Option<String>,
    /// `--media-dir`: where uploads and results live (shared by a fleet's nodes); default `data_dir`.
    pub media_dir: PathBuf,
    /// `--media`: an `s3://bucket/prefix` URL; uploads and results live there instead (each node
    /// keeps its files in transit under `data_dir`).
    pub media_url: Option<String>,
    /// `--claim-media`: this node's storage becomes the fleet's.
    pub claim_media: bool,
    /// `--lease-secs`: how long a worker's claim on a run holds without renewal.
    pub lease: Duration,
    /// `--engines`: in a fleet, the engine and generator names this node's workers claim.
    pub engines: Option<Vec<String>>,
    /// `--device`: where models run.
    pub device: crate::engines::DeviceChoice,
    /// Overrides for the stored keys/secret, applied at start.
    pub ft_key: Option<String>,
    pub tl_key: Option<String>,
    pub webhook_secret: Option<String>,
    pub webhook_url: Option<String>,
    pub public_url: Option<String>,
    pub strict: bool,
    pub time_scale: f64,
    pub max_upload_bytes: u64,
    /// Longest accepted audio (`--max-duration-secs`); applied process-wide at start.
    pub max_duration_secs: u64,
    pub result_ttl: Duration,
    /// A client must send a request's headers within this (`--header-timeout-secs`).
    pub header_read_timeout: Duration,
    /// A connection silent this long is closed (`--idle-timeout-secs`).
    pub idle_timeout: Duration,
    pub workers: usize,
    pub generation_timeout: Duration,
    pub webhook_timeout: Duration,
    /// `--generator`: `procedural`, `auto` or an installed model id.
    pub generator: String,
    /// Fraction of runs failed as `internal_error` (`--fail-rate`).
    pub fail_rate: f64,
    /// Added before every API response (`--latency`).
    pub latency: Duration,
}

/// Largest `--time-scale`: the longest retry wait (4 h) stretched to under half a year.
pub const MAX_TIME_SCALE: f64 = 1000.0;

impl Config {
    /// Resolves `serve`'s flags into a configuration.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Config> {
        Config::build(args, true)
    }

    /// [`Config::from_args`], creating the data directory or not.
    fn build(args: &ServeArgs, create: bool) -> anyhow::Result<Config> {
        anyhow::ensure!(
            args.time_scale > 0.0 && args.time_scale <= MAX_TIME_SCALE,
            "--time-scale must be a number above 0 and at most {MAX_TIME_SCALE}"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&args.fail_rate),
            "--fail-rate must be from 0 to 1"
        );
        anyhow::ensure!(args.latency <= 60_000, "--latency must be at most 60000 ms");
        let data_dir = if create {
            args.data.resolve().map_err(|e| {
                anyhow::anyhow!("data directory {}: {e}", args.data.path().display())
            })?
        } else {
            args.data.path()
        };
        let media_dir = match &args.media_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("--media-dir {}: {e}", dir.display()))?;
                dir.clone()
            }
            None => data_dir.clone(),
        };
        if let Some(url) = &args.media {
            crate::media::parse_s3_url(url).map_err(|e| anyhow::anyhow!("--media: {e}"))?;
        }
        if let Some(url) = &args.database {
            anyhow::ensure!(
                crate::store::postgres::is_url(url),
                "--database must be a postgres:// (or postgresql://) URL; without it the \
                 database is the SQLite file in the data directory"
            );
        }
        if let Some(public) = &args.public_url {
            let url = url::Url::parse(public)
                .map_err(|e| anyhow::anyhow!("--public-url {public:?} is not a URL: {e}"))?;
            anyhow::ensure!(
                matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && url.username().is_empty()
                    && url.password().is_none(),
                "--public-url {public:?}: give the http:// or https:// address clients reach \
                 this server at (a path prefix is fine; no query, fragment or user), e.g. \
                 https://audio.example.com"
            );
        }
        // A key given is stored and replaces the one a client may have saved: one that the API
        // would never match (empty, or the other API's) would lock the data directory out.
        for (flag, key, prefix) in [
            ("--ft-key", &args.ft_key, "ft_test_"),
            ("--tl-key", &args.tl_key, "tl_test_"),
        ] {
            if let Some(k) = key {
                anyhow::ensure!(
                    crate::ids::is_api_key(k, prefix),
                    "{flag} must be {prefix} followed by 24 letters or digits, as the keys \
                     soundcheck makes are (the one given is {} characters long); leave it out \
                     to keep the stored key",
                    k.chars().count()
                );
            }
        }
        anyhow::ensure!(
            args.engines.is_none() || args.database.is_some(),
            "--engines divides a fleet's work among its nodes: it needs --database (alone, a \
             server runs every job it accepts)"
        );
        anyhow::ensure!(
            args.workers != Some(0) || args.database.is_some(),
            "--workers 0 leaves nothing to run the jobs: it is for API nodes of a fleet, whose \
             workers share the --database"
        );
        Ok(Config {
            addr: args.addr,
            data_dir,
            database: args.database.clone(),
            media_dir,
            media_url: args.media.clone(),
            claim_media: args.claim_media,
            lease: Duration::from_secs(args.lease_secs),
            engines: args.engines.clone(),
            device: args.device,
            ft_key: args.ft_key.clone(),
            tl_key: args.tl_key.clone(),
            webhook_secret: args.webhook_secret.clone(),
            webhook_url: args.webhook_url.clone(),
            public_url: args.public_url.clone(),
            strict: args.strict,
            time_scale: args.time_scale,
            max_upload_bytes: args.max_upload_mb * 1024 * 1024,
            max_duration_secs: args.max_duration_secs,
            result_ttl: Duration::from_secs(args.result_ttl_hours * 3600),
            header_read_timeout: Duration::from_secs(args.header_timeout_secs),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            workers: args
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            generation_timeout: Duration::from_secs(args.generation_timeout),
            webhook_timeout: Duration::from_secs(args.webhook_timeout),
            generator: args.generator.clone(),
            fail_rate: args.fail_rate,
            latency: Duration::from_millis(args.latency),
        })
    }

    /// The configuration of an offline command (`models`, `generate`): serve's defaults for the
    /// given data directory (created if missing), with overrides from the environment as `serve`
    /// would take them.
    pub fn for_data_dir(data: &DataArgs) -> anyhow::Result<Config> {
        let mut args = ServeArgs::parse_from(["serve"]);
        args.data = data.clone();
        Config::from_args(&args)
    }

    /// [`Config::for_data_dir`] for a command that only reads it (`models list`, `models
    /// remove`): nothing is created. A `--data-dir` that does not exist is an error naming it; the
    /// default one may be missing (nothing is installed yet).
    pub fn for_reading_data_dir(data: &DataArgs) -> anyhow::Result<Config> {
        if let Some(dir) = &data.data_dir {
            anyhow::ensure!(
                dir.is_dir(),
                "no data directory at {} (`serve`, `models pull` and `models import` create one)",
                dir.display()
            );
        }
        let mut args = ServeArgs::parse_from(["serve"]);
        args.data = data.clone();
        Config::build(&args, false)
    }
}

/// Lets `Config::for_data_dir` build serve's defaults (and env overrides) without a command line.
impl ServeArgs {
    fn parse_from<I: IntoIterator<Item = &'static str>>(args: I) -> ServeArgs {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Wrapper::parse_from(args).serve
    }
}

//! Typed settings, each declared once below (type, default, documentation and parsing on
//! its field), loaded from `GATEWAY__SECTION__KEY` environment variables over the defaults.
//! Values are checked as they are read: durations become [`Duration`]s (from the
//! variables' whole milliseconds or seconds), URLs become [`Url`]s, so a bad value is an
//! error naming its variable at load, never a failure at start-up or on the first call.
//!
//! Plain serde, not `figment` or the `config` crate: the settings come from the
//! environment only (no layered files to merge), and the small loader below already gives
//! what those crates would (nested `__` keys, unknown keys rejected) plus what they would
//! not (`_FILE` only for secrets, errors naming the variable and never its value).
//!
//! Telemetry is not configured here: exporters, sampling and resource come from
//! the standard `OTEL_*` variables (see `telemetry`).

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use serde::de::value::StringDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Expected, IgnoredAny, IntoDeserializer, MapAccess,
    Unexpected, Visitor,
};
use serde::{Deserialize, Deserializer};
use url::Url;

/// Every setting of the gateway. A variable is named after the section and the field,
/// upper case: `GATEWAY__SERVER__PORT` sets `server.port`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Settings {
    /// The HTTP server.
    #[serde(default = "declared_defaults")]
    pub server: ServerSettings,
    /// The prediction store.
    #[serde(default = "declared_defaults")]
    pub store: StoreSettings,
    /// The model service client.
    #[serde(default = "declared_defaults")]
    pub model: ModelSettings,
    /// Console logs.
    #[serde(default = "declared_defaults")]
    pub log: LogSettings,
    /// Known here only so that they are not rejected as typos: `telemetry::init` reads and
    /// checks them with the `OTEL_*` variables, because they shape telemetry only.
    #[serde(default, rename = "TELEMETRY")]
    _telemetry: TelemetryVariables,
}

/// Console logs (what goes to OTLP is set by `OTEL_*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE")]
pub struct LogSettings {
    /// `text` (readable) or `json` (`GATEWAY__LOG__FORMAT`, default `text`).
    #[serde(default)]
    pub format: LogFormat,
}

/// How console logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The HTTP server and its admission limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE")]
pub struct ServerSettings {
    /// Address to bind (`GATEWAY__SERVER__HOST`, default `127.0.0.1`).
    #[serde(default = "default_host")]
    pub host: String,
    /// Port to bind, 0 for any free one (`GATEWAY__SERVER__PORT`, default 8080).
    #[serde(default = "u16_default::<8080>")]
    pub port: u16,
    /// Total deadline of one request, in milliseconds
    /// (`GATEWAY__SERVER__REQUEST_TIMEOUT_MS`, default 10000): a client is answered 504
    /// rather than left waiting on a stuck dependency.
    #[serde(rename = "REQUEST_TIMEOUT_MS", with = "millis")]
    #[serde(default = "millis::default::<10_000>")]
    pub request_timeout: Duration,
    /// Requests served at once (`GATEWAY__SERVER__MAX_IN_FLIGHT`, default 512): beyond
    /// it the gateway answers 503 with `Retry-After` at once instead of queueing without bound.
    #[serde(default = "usize_default::<512>", deserialize_with = "positive")]
    pub max_in_flight: usize,
    /// Largest accepted request body in bytes (`GATEWAY__SERVER__MAX_BODY_BYTES`, default
    /// 262144): room for a full batch of the longest ids; caps the memory one request can take.
    #[serde(default = "usize_default::<{ 256 * 1024 }>")]
    pub max_body_bytes: usize,
    /// Most ids in one batch request (`GATEWAY__SERVER__MAX_BATCH_SIZE`, default 1000):
    /// bounds the multi-get, the model call and the bulk write of one request.
    #[serde(default = "usize_default::<1_000>", deserialize_with = "positive")]
    pub max_batch_size: usize,
    /// Time in milliseconds a client has to send a whole request head once it sent its
    /// first byte (`GATEWAY__SERVER__HEADER_READ_TIMEOUT_MS`, default 10000): a client
    /// dribbling a head cannot hold a connection.
    #[serde(rename = "HEADER_READ_TIMEOUT_MS", with = "millis")]
    #[serde(default = "millis::default::<10_000>")]
    pub header_read_timeout: Duration,
    /// Time in milliseconds a connection may sit with no request in progress, fresh or kept
    /// alive (`GATEWAY__SERVER__IDLE_TIMEOUT_MS`, default 60000), then it is closed.
    #[serde(rename = "IDLE_TIMEOUT_MS", with = "millis")]
    #[serde(default = "millis::default::<60_000>")]
    pub idle_timeout: Duration,
    /// Open client connections at most (`GATEWAY__SERVER__MAX_CONNECTIONS`, default
    /// 10000, lowered to fit the process's open-file limit): at the cap the longest-idle
    /// connection is closed to make room, so idle sockets cannot lock new clients out.
    #[serde(default = "usize_default::<10_000>", deserialize_with = "positive")]
    pub max_connections: usize,
    /// After SIGTERM, how many milliseconds `/readyz` answers 503 while requests are still
    /// served (`GATEWAY__SERVER__SHUTDOWN_DRAIN_DELAY_MS`, default 5000): time for a load
    /// balancer to take the gateway out before it stops accepting.
    #[serde(rename = "SHUTDOWN_DRAIN_DELAY_MS", with = "millis")]
    #[serde(default = "millis::default::<5_000>")]
    pub shutdown_drain_delay: Duration,
    /// Then how many milliseconds in-flight requests have to finish before every remaining
    /// connection is closed (`GATEWAY__SERVER__SHUTDOWN_GRACE_MS`, default 15000). Drain
    /// delay, grace and the write-behind drain together stay inside Kubernetes' default 30 s.
    #[serde(rename = "SHUTDOWN_GRACE_MS", with = "millis")]
    #[serde(default = "millis::default::<15_000>")]
    pub shutdown_grace: Duration,
    /// Threads that serve client connections, each with a single-threaded runtime of its
    /// own (`GATEWAY__SERVER__WORKER_THREADS`, default 0: one per core the process may
    /// use, which a cgroup CPU quota lowers; `serving_threads.rs` says why).
    #[serde(default = "usize_default::<0>")]
    pub worker_threads: usize,
}

/// Where predictions are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE")]
pub struct StoreSettings {
    /// Elasticsearch URL, or the URLs of the cluster's nodes separated by commas
    /// (`GATEWAY__STORE__URL`; whitespace around the commas is ignored), each http or
    /// https with a host, all with the same credentials or none, checked at load; unset:
    /// the embedded in-memory store. Nodes are not sniffed: the list is the cluster.
    #[serde(default, deserialize_with = "optional_store_nodes")]
    pub url: Option<StoreNodes>,
    /// Alias the gateway reads and writes through (`GATEWAY__STORE__INDEX_ALIAS`,
    /// default `ml-predictions`); the versioned index behind it is `<alias>-v1`.
    #[serde(default = "default_index_alias", deserialize_with = "index_alias")]
    pub index_alias: String,
    /// Basic-auth user (`GATEWAY__STORE__USERNAME`, default none).
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password (`GATEWAY__STORE__PASSWORD` or `..._FILE`, default none).
    #[serde(default, deserialize_with = "secret")]
    pub password: Option<SecretString>,
    /// API key, base64 `id:key` as Kibana shows it (`GATEWAY__STORE__API_KEY` or
    /// `..._FILE`, default none).
    #[serde(default, deserialize_with = "secret")]
    pub api_key: Option<SecretString>,
    /// Timeout of one store request in milliseconds (`GATEWAY__STORE__TIMEOUT_MS`, default
    /// 2000): a slow store must not hold a request past the point where the model would
    /// have answered.
    #[serde(rename = "TIMEOUT_MS", with = "millis")]
    #[serde(default = "millis::default::<2_000>")]
    pub timeout: Duration,
    /// Ask the store for gzip-compressed answers (`GATEWAY__STORE__COMPRESSION`, default
    /// false): worth it only for a store across a slow or metered network; near the store,
    /// compressing a ~0.4 KB document costs the node and the gateway more than it saves.
    #[serde(default)]
    pub compression: bool,
    /// Idle connections kept open to each node by each thread's client
    /// (`GATEWAY__STORE__MAX_IDLE_CONNECTIONS_PER_NODE`, default 64): after a burst, the
    /// connections beyond it close once their request is done, rather than holding the
    /// gateway's memory and the node's sockets until they time out.
    #[serde(default = "usize_default::<64>")]
    pub max_idle_connections_per_node: usize,
    /// Back-off of a store node after its first failure in a row, in milliseconds
    /// (`GATEWAY__STORE__DEAD_NODE_BACKOFF_MS`, default 1000); it doubles with each
    /// further failure. Elastic's transports' `dead_node_backoff_factor` (1 s).
    #[serde(rename = "DEAD_NODE_BACKOFF_MS", with = "millis")]
    #[serde(default = "millis::default::<1_000>")]
    pub dead_node_backoff: Duration,
    /// Longest back-off of a failing store node, in milliseconds
    /// (`GATEWAY__STORE__MAX_DEAD_NODE_BACKOFF_MS`, default 30000). Elastic's
    /// transports' `max_dead_node_backoff` (30 s).
    #[serde(rename = "MAX_DEAD_NODE_BACKOFF_MS", with = "millis")]
    #[serde(default = "millis::default::<30_000>")]
    pub max_dead_node_backoff: Duration,
    /// Predictions waiting for a store write retry (`GATEWAY__STORE__WRITE_BEHIND_CAPACITY`,
    /// default 10000); beyond it they are dropped, counted and logged.
    #[serde(default = "usize_default::<10_000>")]
    pub write_behind_capacity: usize,
    /// Failed attempts the store answered (refusals, not outages) after which the
    /// write-behind queue gives a prediction up (`GATEWAY__STORE__WRITE_BEHIND_MAX_ATTEMPTS`,
    /// default 8: about 16 s of backoff). While the store cannot be reached at all,
    /// retries go on every 5 s until it can, or until shutdown.
    #[serde(default = "u32_default::<8>", deserialize_with = "positive")]
    pub write_behind_max_attempts: u32,
    /// Maximum age of a stored prediction in seconds (`GATEWAY__STORE__MAX_AGE_SECS`,
    /// unset by default: a prediction stays fresh until its model run is replaced). An
    /// older one is not served (recomputed, `Cache-Status: ...; fwd=stale`), and every
    /// answer says its remaining lifetime in `ttl` (RFC 9211 section 2.4).
    #[serde(
        rename = "MAX_AGE_SECS",
        default,
        deserialize_with = "seconds::optional_positive"
    )]
    pub max_age: Option<Duration>,
    /// How long in milliseconds a replica's lease on one key's computation holds unless
    /// released (`GATEWAY__STORE__LEASE_TTL_MS`, default 10000): replicas missing the same
    /// key wait this long at most for the holder's prediction, then take the lease over
    /// (a holder that died). Must be longer than `GATEWAY__MODEL__TIMEOUT_MS`, or a slow but
    /// alive computation loses its lease and a second replica computes; the default also
    /// leaves room for the store write (`GATEWAY__STORE__TIMEOUT_MS`). Not checked against
    /// the store timeout: `gateway purge` runs with a long one and never leases.
    #[serde(rename = "LEASE_TTL_MS", with = "millis")]
    #[serde(default = "millis::default::<10_000>")]
    pub lease_ttl: Duration,
}

/// The store's nodes (`GATEWAY__STORE__URL`), checked when parsed: at least one, each an
/// http(s) URL with a host, all carrying the same credentials or none. The credentials
/// are taken out of the URLs here, so no log, span or `Debug` output shows them.
#[derive(Debug, Clone)]
pub struct StoreNodes {
    /// Each node's base URL, in the order written, without user info.
    urls: Vec<Url>,
    /// The user and password the URLs carried (the same on every node), when they
    /// named a user; as written in the URL (percent-encoded).
    credentials: Option<(String, SecretString)>,
}

/// The variable [`StoreNodes`] is read from, named by its errors.
const STORE_URL: &str = "GATEWAY__STORE__URL";

impl StoreNodes {
    /// The nodes' base URLs, in order, without credentials; never empty.
    pub fn urls(&self) -> &[Url] {
        &self.urls
    }

    /// The user and password every node URL carried, if they named a user.
    pub fn credentials(&self) -> Option<(&str, &SecretString)> {
        self.credentials
            .as_ref()
            .map(|(user, password)| (user.as_str(), password))
    }

    /// One URL or a comma-separated list (whitespace around the commas ignored). Errors
    /// never repeat the text: it may hold credentials.
    fn parse<E: de::Error>(list: &str) -> Result<Self, E> {
        let mut urls = Vec::new();
        let mut credentials = None;
        for url in list.split(',').map(str::trim) {
            if url.is_empty() {
                return Err(E::invalid_value(
                    Unexpected::Other("list with an empty entry"),
                    &"one URL or a comma-separated list of node URLs",
                ));
            }
            let mut url = parse_http_url::<E>(url)?;
            let these = (url.username().to_owned(), url.password().map(str::to_owned));
            if credentials.get_or_insert_with(|| these.clone()) != &these {
                return Err(E::invalid_value(
                    Unexpected::Other("node URLs with different credentials"),
                    &"node URLs that all carry the same credentials, or none",
                ));
            }
            // Cannot fail: an http(s) URL has a host.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            urls.push(url);
        }
        let credentials = credentials
            .filter(|(user, _)| !user.is_empty())
            .map(|(user, password)| (user, SecretString::from(password.unwrap_or_default())));
        Ok(Self { urls, credentials })
    }
}

impl FromStr for StoreNodes {
    type Err = ConfigurationError;

    /// As `GATEWAY__STORE__URL` is read (for settings built in code, e.g. tests).
    fn from_str(list: &str) -> Result<Self, ConfigurationError> {
        Self::parse::<Rejection>(list).map_err(|rejection| rejection.named(STORE_URL))
    }
}

/// The model service and how the gateway follows its live version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "SCREAMING_SNAKE_CASE")]
pub struct ModelSettings {
    /// Base URL, http or https with a host, checked at load (`GATEWAY__MODEL__URL`,
    /// default `http://127.0.0.1:8001`); the API's absolute paths replace its path.
    #[serde(default = "default_model_url", deserialize_with = "http_url")]
    pub url: Url,
    /// Timeout of one model call in milliseconds (`GATEWAY__MODEL__TIMEOUT_MS`, default
    /// 5000); must be shorter than the request deadline.
    #[serde(rename = "TIMEOUT_MS", with = "millis")]
    #[serde(default = "millis::default::<5_000>")]
    pub timeout: Duration,
    /// TCP connect timeout in milliseconds (`GATEWAY__MODEL__CONNECT_TIMEOUT_MS`, default
    /// 1000): a down service is reported quickly.
    #[serde(rename = "CONNECT_TIMEOUT_MS", with = "millis")]
    #[serde(default = "millis::default::<1_000>")]
    pub connect_timeout: Duration,
    /// How often, in milliseconds, the live model version is re-read from `GET /model`
    /// (`GATEWAY__MODEL__VERSION_REFRESH_MS`, default 5000): the longest time an old
    /// version's predictions can still be served after a switch.
    #[serde(rename = "VERSION_REFRESH_MS", with = "millis")]
    #[serde(default = "millis::default::<5_000>")]
    pub version_refresh: Duration,
    /// Consecutive failures to reach the model that open the circuit breaker
    /// (`GATEWAY__MODEL__BREAKER_THRESHOLD`, default 5).
    #[serde(default = "u32_default::<5>")]
    pub breaker_threshold: u32,
    /// How many milliseconds the open circuit fails calls fast before a trial call
    /// (`GATEWAY__MODEL__BREAKER_COOL_DOWN_MS`, default 5000).
    #[serde(rename = "BREAKER_COOL_DOWN_MS", with = "millis")]
    #[serde(default = "millis::default::<5_000>")]
    pub breaker_cool_down: Duration,
}

/// `GATEWAY__TELEMETRY__BAGGAGE_MAX_{ENTRIES,BYTES}`, let through unread (see
/// [`Settings`]); the underscores keep the unread fields from counting as dead code.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetryVariables {
    #[serde(default, rename = "BAGGAGE_MAX_ENTRIES")]
    _baggage_max_entries: IgnoredAny,
    #[serde(default, rename = "BAGGAGE_MAX_BYTES")]
    _baggage_max_bytes: IgnoredAny,
}

// Serde takes a default as a function path; these let a number's default be written on
// its field (`default = "usize_default::<512>"`) instead of in a separate function.
const fn u16_default<const N: u16>() -> u16 {
    N
}
const fn u32_default<const N: u32>() -> u32 {
    N
}
const fn usize_default<const N: usize>() -> usize {
    N
}
fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_index_alias() -> String {
    "ml-predictions".into()
}
fn default_model_url() -> Url {
    Url::parse("http://127.0.0.1:8001").expect("the default model URL parses")
}

impl Default for Settings {
    /// Every setting at its declared default, as with no `GATEWAY__` variable set.
    fn default() -> Self {
        declared_defaults()
    }
}

/// A section (or all settings) with no variable set: each field's declared default.
fn declared_defaults<T: DeserializeOwned>() -> T {
    T::deserialize(Table::<Variable>(BTreeMap::new()))
        .expect("every setting has a valid default (checked by the unit tests)")
}

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    /// A variable's value does not parse as its setting's type. The value is not
    /// repeated: it may hold credentials (a URL's user info).
    #[error("{name}: expected {expected}")]
    InvalidValue {
        /// The variable.
        name: String,
        /// What was expected.
        expected: String,
    },
    /// A `GATEWAY__` variable that names no setting (a typo would otherwise go unnoticed).
    #[error("{0} is not a gateway setting")]
    UnknownSetting(String),
    /// Settings that each parse but cannot work together.
    #[error("{0}")]
    Inconsistent(String),
    /// A `..._FILE` secret could not be read.
    #[error("cannot read the secret file {path} named by {name}")]
    SecretFile {
        /// The variable.
        name: String,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

const PREFIX: &str = "GATEWAY__";
/// A secret's variable with this suffix names a file holding the secret (as Docker and
/// Kubernetes mount them), so the secret stays out of the environment.
const FILE_SUFFIX: &str = "_FILE";

impl Settings {
    /// Defaults overridden by the process environment.
    pub fn load() -> Result<Self, ConfigurationError> {
        Self::from_vars(std::env::vars())
    }

    /// Defaults overridden by `vars` (the environment, or a test's table).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigurationError> {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(PREFIX))
            .collect();
        // Sorted, `X_FILE` comes after `X`: when both are set, the file wins.
        vars.sort();
        let mut sections: BTreeMap<String, Table<Variable>> = BTreeMap::new();
        for (name, value) in vars {
            let Some((section, key)) = name[PREFIX.len()..].split_once("__") else {
                return Err(ConfigurationError::UnknownSetting(name));
            };
            let (key, from_file) = match key.strip_suffix(FILE_SUFFIX) {
                Some(key) => (key, true),
                None => (key, false),
            };
            let (section, key) = (section.to_owned(), key.to_owned());
            let variable = Variable {
                value: value.trim().to_owned(),
                name,
                from_file,
            };
            sections
                .entry(section)
                .or_insert_with(|| Table(BTreeMap::new()))
                .0
                .insert(key, variable);
        }
        let settings =
            Self::deserialize(Table(sections)).map_err(|rejection| rejection.named(PREFIX))?;
        settings.check()?;
        Ok(settings)
    }

    /// Rejects combinations that cannot work: a model call allowed to outlast the request
    /// that waits for it would be cut off by the request deadline on every slow answer; a
    /// computation lease not longer than a model call would be taken over while its holder
    /// still computes.
    /// [`Settings::load`] calls it; settings built in code (tests) call it themselves.
    pub fn check(&self) -> Result<(), ConfigurationError> {
        if self.model.timeout >= self.server.request_timeout {
            return Err(ConfigurationError::Inconsistent(format!(
                "GATEWAY__MODEL__TIMEOUT_MS ({}) must be shorter than \
                 GATEWAY__SERVER__REQUEST_TIMEOUT_MS ({})",
                self.model.timeout.as_millis(),
                self.server.request_timeout.as_millis()
            )));
        }
        if self.store.lease_ttl <= self.model.timeout {
            return Err(ConfigurationError::Inconsistent(format!(
                "GATEWAY__STORE__LEASE_TTL_MS ({}) must be longer than \
                 GATEWAY__MODEL__TIMEOUT_MS ({}): a computation lease must outlast a model call",
                self.store.lease_ttl.as_millis(),
                self.model.timeout.as_millis()
            )));
        }
        Ok(())
    }
}

impl ServerSettings {
    /// `host:port` to bind.
    pub fn bind_address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl StoreSettings {
    /// The versioned index behind the alias, created at start-up.
    pub fn index_name(&self) -> String {
        format!("{}-v1", self.index_alias)
    }

    /// The index of computation leases (`<alias>-leases`), created at start-up; outside
    /// the alias and its template's `<alias>-v*` pattern.
    pub fn lease_index(&self) -> String {
        format!("{}-leases", self.index_alias)
    }
}

// Field parsers named by `deserialize_with` above: the rules a type alone does not say.

/// A count that must not be 0 (0 requests in flight would refuse every request).
fn positive<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default + PartialEq,
{
    let count = T::deserialize(deserializer)?;
    if count == T::default() {
        return Err(de::Error::invalid_value(
            Unexpected::Unsigned(0),
            &"a positive count",
        ));
    }
    Ok(count)
}

/// Durations written as a whole number of milliseconds (the `..._MS` variables), read
/// into a [`Duration`] field by `#[serde(with = "millis")]`.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// `N` milliseconds, for a default written on its field
    /// (`default = "millis::default::<5_000>"`).
    pub const fn default<const N: u64>() -> Duration {
        Duration::from_millis(N)
    }

    /// A whole number of milliseconds (`1.5`, `2s` or `-1` are refused).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// Durations written as a whole number of seconds (the `..._SECS` variables).
mod seconds {
    use std::time::Duration;

    use serde::de::{self, Unexpected};
    use serde::{Deserialize, Deserializer};

    /// Seconds that, when set, must not be 0 (every stored prediction would be stale).
    pub fn optional_positive<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<u64>::deserialize(deserializer)? {
            Some(0) => Err(de::Error::invalid_value(
                Unexpected::Unsigned(0),
                &"a positive number of seconds",
            )),
            seconds => Ok(seconds.map(Duration::from_secs)),
        }
    }
}

/// The alias goes into request paths: only index-name characters.
fn index_alias<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let alias = String::deserialize(deserializer)?;
    let valid = !alias.is_empty()
        && alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
        && !alias.starts_with(['-', '_']);
    if !valid {
        return Err(de::Error::invalid_value(
            Unexpected::Str(&alias),
            &"an index name (a-z, 0-9, '-', '_')",
        ));
    }
    Ok(alias)
}

/// The model's base URL; the client joins the API's absolute paths onto it.
fn http_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    parse_http_url(&String::deserialize(deserializer)?)
}

/// The store's node list, when set.
fn optional_store_nodes<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<StoreNodes>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|list| StoreNodes::parse(&list))
        .transpose()
}

/// Both clients speak HTTP only: any other URL would fail at the first call, reported as
/// an unavailable dependency rather than as the setting it is. (An http(s) URL always has
/// a host and can be a base for the clients' paths.)
fn parse_http_url<E: de::Error>(url: &str) -> Result<Url, E> {
    // `Unexpected::Other`, not the text: a URL may hold credentials.
    match Url::parse(url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        Ok(_) => Err(E::invalid_value(
            Unexpected::Other("URL"),
            &"an http or https URL with a host",
        )),
        Err(error) => Err(E::invalid_value(
            Unexpected::Other("URL"),
            &format!("an http or https URL ({error})").as_str(),
        )),
    }
}

/// The newtype name through which a secret asks the loader for its `_FILE` form: only
/// fields parsed by [`secret`] accept a file, so `GATEWAY__MODEL__URL_FILE` stays a typo.
const SECRET: &str = "Secret";

/// A secret from its variable (empty: none) or from the file its `_FILE` variable names.
fn secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SecretString>, D::Error> {
    struct SecretVisitor;

    impl<'de> Visitor<'de> for SecretVisitor {
        type Value = Option<SecretString>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a secret")
        }

        fn visit_newtype_struct<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            Ok(Option::<String>::deserialize(deserializer)?.map(SecretString::from))
        }

        /// The contents of a secret file, kept even when empty (the file was named on purpose).
        fn visit_str<E: de::Error>(self, contents: &str) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(contents)))
        }
    }

    deserializer.deserialize_newtype_struct(SECRET, SecretVisitor)
}

// The loader: serde over the variables, grouped by section then key, values parsed only
// when the declared type asks (so a numeric password stays a string).

/// One `GATEWAY__` variable, on its way into the setting it names.
struct Variable {
    /// The full name, for errors.
    name: String,
    /// The value, trimmed; for a `_FILE` variable, the path of the file.
    value: String,
    /// Whether the variable had the `_FILE` suffix.
    from_file: bool,
}

/// Variables (or sections of them) by key, deserialized as a struct.
struct Table<T>(BTreeMap<String, T>);

/// What a [`Table`] holds: a section of variables, or one variable.
trait Entry {
    /// The variable an error about this entry names (for a section: its first).
    fn variable(&self) -> &Variable;

    /// The entry deserialized by `seed`, errors named after their variable.
    fn deserialize<'de, S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Rejection>;
}

impl Entry for Variable {
    fn variable(&self) -> &Variable {
        self
    }

    fn deserialize<'de, S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Rejection> {
        seed.deserialize(Value(&self))
            .map_err(|rejection| Rejection::Named(rejection.named(&self.name)))
    }
}

impl Entry for Table<Variable> {
    fn variable(&self) -> &Variable {
        self.0
            .values()
            .next()
            .expect("a section exists because one of its variables is set")
    }

    fn deserialize<'de, S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Rejection> {
        seed.deserialize(self)
    }
}

impl<'de, T: Entry> Deserializer<'de> for Table<T> {
    type Error = Rejection;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Rejection> {
        visitor.visit_map(Entries {
            entries: self.0.into_iter(),
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// The walk over a [`Table`].
struct Entries<T> {
    entries: btree_map::IntoIter<String, T>,
    /// The entry whose key was just handed out.
    value: Option<T>,
}

impl<'de, T: Entry> MapAccess<'de> for Entries<T> {
    type Error = Rejection;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Rejection> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let key: StringDeserializer<Rejection> = key.into_deserializer();
        let key = seed
            .deserialize(key)
            .map_err(|rejection| Rejection::Named(rejection.named(&value.variable().name)))?;
        self.value = Some(value);
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Rejection> {
        match self.value.take() {
            Some(value) => value.deserialize(seed),
            None => Err(de::Error::custom("a value after its key")),
        }
    }
}

/// One variable's value, parsed into whatever type its setting declares.
struct Value<'a>(&'a Variable);

impl Value<'_> {
    /// The value, unless the variable named a file for a setting that is not a secret.
    fn plain(&self) -> Result<&str, Rejection> {
        if self.0.from_file {
            return Err(Rejection::Unknown);
        }
        Ok(&self.0.value)
    }

    fn parse<T: std::str::FromStr>(&self, expected: &dyn Expected) -> Result<T, Rejection> {
        self.plain()?
            .parse()
            .map_err(|_| de::Error::invalid_value(Unexpected::Other("value"), expected))
    }
}

impl<'de> Deserializer<'de> for Value<'_> {
    type Error = Rejection;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Rejection> {
        visitor.visit_str(self.plain()?)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Rejection> {
        let value = self.parse(&visitor)?;
        visitor.visit_bool(value)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Rejection> {
        let value = self.parse(&visitor)?;
        visitor.visit_u16(value)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Rejection> {
        let value = self.parse(&visitor)?;
        visitor.visit_u32(value)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Rejection> {
        let value = self.parse(&visitor)?;
        visitor.visit_u64(value)
    }

    /// Set but empty counts as unset, as for the `OTEL_*` variables.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Rejection> {
        if self.plain()?.is_empty() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Rejection> {
        let variant: StringDeserializer<Rejection> = self.plain()?.to_owned().into_deserializer();
        visitor.visit_enum(variant)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Rejection> {
        if name != SECRET || !self.0.from_file {
            return visitor.visit_newtype_struct(self);
        }
        let path = &self.0.value;
        let contents = std::fs::read_to_string(path).map_err(|source| {
            Rejection::Named(ConfigurationError::SecretFile {
                name: self.0.name.clone(),
                path: path.clone(),
                source,
            })
        })?;
        // The line end an editor or `echo` leaves is not part of the secret.
        visitor.visit_str(contents.trim_end_matches(['\r', '\n']))
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u128 f32 f64 char str string bytes byte_buf unit unit_struct
        seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// Why a variable was refused, before the walk over the variables names it.
#[derive(Debug)]
enum Rejection {
    /// The variable names no setting.
    Unknown,
    /// The value does not parse; what was expected.
    Invalid(String),
    /// Already named after its variable.
    Named(ConfigurationError),
}

impl Rejection {
    /// The error, named after `name` unless a variable deeper in the walk named it.
    fn named(self, name: &str) -> ConfigurationError {
        match self {
            Self::Unknown => ConfigurationError::UnknownSetting(name.to_owned()),
            Self::Invalid(expected) => ConfigurationError::InvalidValue {
                name: name.to_owned(),
                expected,
            },
            Self::Named(error) => error,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown => f.write_str("not a gateway setting"),
            Self::Invalid(expected) => write!(f, "expected {expected}"),
            Self::Named(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for Rejection {}

impl de::Error for Rejection {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self::Invalid(message.to_string())
    }

    // What was found is left out of every message: it may be a credential.
    fn invalid_type(_found: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Self::Invalid(expected.to_string())
    }

    fn invalid_value(_found: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Self::Invalid(expected.to_string())
    }

    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        Self::Invalid(format!("one of {}", expected.join(", ")))
    }

    fn unknown_field(_field: &str, _expected: &'static [&'static str]) -> Self {
        Self::Unknown
    }
}

/// The address a client should use for a bound socket (`0.0.0.0` shown as loopback).
pub fn client_address(address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], address.port()))
    } else {
        address
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The store's node URLs as text, in order (none when unset).
    fn urls(store: &StoreSettings) -> Vec<&str> {
        store
            .url
            .iter()
            .flat_map(StoreNodes::urls)
            .map(Url::as_str)
            .collect()
    }

    #[test]
    fn defaults_use_the_embedded_store_and_the_local_model_service() {
        let settings = Settings::from_vars(vars(&[])).unwrap();
        assert!(settings.store.url.is_none());
        assert_eq!(settings.model.url.as_str(), "http://127.0.0.1:8001/");
        assert_eq!(settings.store.index_alias, "ml-predictions");
    }

    #[test]
    fn prefixed_variables_override_defaults() {
        let settings = Settings::from_vars(vars(&[
            ("GATEWAY__SERVER__PORT", "0"),
            ("GATEWAY__STORE__URL", "http://127.0.0.1:9200"),
            ("GATEWAY__MODEL__URL", "http://127.0.0.1:9/"),
            ("OTHER", "ignored"),
        ]))
        .unwrap();
        assert_eq!(settings.server.port, 0);
        assert_eq!(urls(&settings.store), ["http://127.0.0.1:9200/"]);
        assert_eq!(settings.model.url.as_str(), "http://127.0.0.1:9/");
    }

    #[test]
    fn an_unknown_gateway_variable_is_an_error() {
        let error = Settings::from_vars(vars(&[("GATEWAY__SERVER__PROT", "1")])).unwrap_err();
        assert!(matches!(error, ConfigurationError::UnknownSetting(_)));
    }

    #[test]
    fn a_value_of_the_wrong_type_is_an_error() {
        let error = Settings::from_vars(vars(&[("GATEWAY__SERVER__PORT", "eighty")])).unwrap_err();
        assert!(error.to_string().contains("GATEWAY__SERVER__PORT"));
    }

    #[test]
    fn an_index_alias_with_path_characters_is_an_error() {
        for alias in ["a/b", "_all", "*", "UPPER", ""] {
            assert!(
                Settings::from_vars(vars(&[("GATEWAY__STORE__INDEX_ALIAS", alias)])).is_err(),
                "{alias:?}"
            );
        }
    }

    #[test]
    fn a_model_timeout_not_shorter_than_the_request_deadline_is_rejected() {
        for (model, request) in [("10000", "10000"), ("12000", "10000")] {
            let error = Settings::from_vars(vars(&[
                ("GATEWAY__MODEL__TIMEOUT_MS", model),
                ("GATEWAY__SERVER__REQUEST_TIMEOUT_MS", request),
            ]))
            .unwrap_err();
            assert!(
                matches!(error, ConfigurationError::Inconsistent(_)),
                "{model} vs {request}"
            );
            assert!(error.to_string().contains("GATEWAY__MODEL__TIMEOUT_MS"));
        }
    }

    #[test]
    fn a_lease_ttl_not_longer_than_the_model_timeout_is_rejected() {
        // (lease TTL, model timeout, accepted, description)
        let cases = [
            ("5000", "5000", false, "exactly a model call"),
            ("3000", "5000", false, "shorter than a model call"),
            ("5001", "5000", true, "just longer"),
        ];
        for (ttl, model, accepted, description) in cases {
            let result = Settings::from_vars(vars(&[
                ("GATEWAY__STORE__LEASE_TTL_MS", ttl),
                ("GATEWAY__MODEL__TIMEOUT_MS", model),
            ]));
            match result {
                Ok(_) => assert!(accepted, "{description}"),
                Err(error) => {
                    assert!(!accepted, "{description}: {error}");
                    assert!(
                        error.to_string().contains("GATEWAY__STORE__LEASE_TTL_MS"),
                        "{description}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_maximum_age_of_stored_predictions_is_off_unless_set_to_a_positive_count() {
        assert_eq!(Settings::from_vars(vars(&[])).unwrap().store.max_age, None);
        let set = Settings::from_vars(vars(&[("GATEWAY__STORE__MAX_AGE_SECS", "3600")])).unwrap();
        assert_eq!(set.store.max_age, Some(Duration::from_secs(3600)));
        for value in ["0", "-5", "1h"] {
            assert!(
                Settings::from_vars(vars(&[("GATEWAY__STORE__MAX_AGE_SECS", value)])).is_err(),
                "{value}"
            );
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let settings =
            Settings::from_vars(vars(&[("GATEWAY__STORE__PASSWORD", "hunter2")])).unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert_eq!(settings.store.password.unwrap().expose_secret(), "hunter2");
    }

    /// A file of the test's own, removed when dropped.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("gateway-settings-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }

        fn path(&self) -> String {
            self.0.display().to_string()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn every_setting_has_its_documented_default() {
        let Settings {
            server,
            store,
            model,
            log,
            ..
        } = Settings::from_vars(vars(&[])).unwrap();
        assert_eq!(server.bind_address(), "127.0.0.1:8080");
        assert_eq!(server.request_timeout, Duration::from_secs(10));
        assert_eq!(server.max_in_flight, 512);
        assert_eq!(server.max_body_bytes, 262_144);
        assert_eq!(server.max_batch_size, 1_000);
        assert_eq!(server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(server.idle_timeout, Duration::from_secs(60));
        assert_eq!(server.max_connections, 10_000);
        assert_eq!(server.shutdown_drain_delay, Duration::from_secs(5));
        assert_eq!(server.shutdown_grace, Duration::from_secs(15));
        assert!(store.username.is_none() && store.password.is_none() && store.api_key.is_none());
        assert_eq!(store.timeout, Duration::from_secs(2));
        assert!(!store.compression);
        assert_eq!(store.write_behind_capacity, 10_000);
        assert_eq!(store.write_behind_max_attempts, 8);
        assert_eq!(store.dead_node_backoff, Duration::from_secs(1));
        assert_eq!(store.max_dead_node_backoff, Duration::from_secs(30));
        assert_eq!(store.lease_ttl, Duration::from_secs(10));
        assert_eq!(store.lease_index(), "ml-predictions-leases");
        assert_eq!(model.timeout, Duration::from_secs(5));
        assert_eq!(model.connect_timeout, Duration::from_secs(1));
        assert_eq!(model.version_refresh, Duration::from_secs(5));
        assert_eq!(model.breaker_threshold, 5);
        assert_eq!(model.breaker_cool_down, Duration::from_secs(5));
        assert_eq!(log.format, LogFormat::Text);
        let default = Settings::default();
        assert_eq!(default.model.url, model.url);
        assert_eq!(default.server.port, server.port);
    }

    #[test]
    fn durations_parse_from_whole_milliseconds() {
        let settings = Settings::from_vars(vars(&[
            ("GATEWAY__SERVER__REQUEST_TIMEOUT_MS", " 1500 "),
            ("GATEWAY__MODEL__TIMEOUT_MS", "250"),
            ("GATEWAY__MODEL__BREAKER_COOL_DOWN_MS", "75"),
            ("GATEWAY__STORE__TIMEOUT_MS", "0"),
        ]))
        .unwrap();
        assert_eq!(settings.server.request_timeout, Duration::from_millis(1500));
        assert_eq!(settings.model.timeout, Duration::from_millis(250));
        assert_eq!(settings.model.breaker_cool_down, Duration::from_millis(75));
        assert_eq!(settings.store.timeout, Duration::ZERO);
        for value in ["1.5", "2s", "-1", ""] {
            let error = Settings::from_vars(vars(&[("GATEWAY__SERVER__IDLE_TIMEOUT_MS", value)]))
                .unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("GATEWAY__SERVER__IDLE_TIMEOUT_MS"),
                "{value:?}: {error}"
            );
        }
    }

    #[test]
    fn the_store_url_takes_a_comma_separated_list_of_nodes() {
        let settings = Settings::from_vars(vars(&[(
            "GATEWAY__STORE__URL",
            "http://es-0:9200 , https://es-1:9243,http://es-2:9200",
        )]))
        .unwrap();
        assert_eq!(
            urls(&settings.store),
            [
                "http://es-0:9200/",
                "https://es-1:9243/",
                "http://es-2:9200/"
            ]
        );
        let one = Settings::from_vars(vars(&[("GATEWAY__STORE__URL", "http://es:9200")])).unwrap();
        assert_eq!(urls(&one.store), ["http://es:9200/"]);
        assert!(Settings::default().store.url.is_none());
    }

    #[test]
    fn a_node_list_with_an_empty_entry_or_mixed_credentials_is_rejected() {
        let cases = [
            ("http://es-0:9200,", "a trailing comma"),
            ("http://es-0:9200, ,http://es-1:9200", "a blank entry"),
            ("http://es-0:9200,es-1:9200", "an entry without a scheme"),
            (
                "http://u:hunter2@es-0:9200,http://es-1:9200",
                "credentials on one node only",
            ),
            (
                "http://u:hunter2@es-0:9200,http://u:hunter3@es-1:9200",
                "different passwords",
            ),
        ];
        for (value, description) in cases {
            let error = Settings::from_vars(vars(&[("GATEWAY__STORE__URL", value)])).unwrap_err();
            assert!(
                matches!(&error, ConfigurationError::InvalidValue { name, .. } if name == "GATEWAY__STORE__URL"),
                "{description}: {error:?}"
            );
            assert!(
                !error.to_string().contains("hunter"),
                "{description}: {error}"
            );
        }
        let same = "http://u:hunter2@es-0:9200,http://u:hunter2@es-1:9200";
        assert!(Settings::from_vars(vars(&[("GATEWAY__STORE__URL", same)])).is_ok());
    }

    #[test]
    fn a_bad_url_is_rejected_at_load_naming_its_variable() {
        let cases = [
            ("GATEWAY__MODEL__URL", "not a url", "no scheme"),
            (
                "GATEWAY__MODEL__URL",
                "127.0.0.1:8001",
                "host taken for a scheme",
            ),
            ("GATEWAY__MODEL__URL", "ftp://127.0.0.1/", "not HTTP"),
            (
                "GATEWAY__STORE__URL",
                "localhost:9200",
                "host taken for a scheme",
            ),
            ("GATEWAY__STORE__URL", "http://", "no host"),
            (
                "GATEWAY__STORE__URL",
                "https://user:hunter2@[::1",
                "bad host, with credentials",
            ),
            ("GATEWAY__MODEL__URL", "http://", "no host"),
            (
                "GATEWAY__MODEL__URL",
                "http://model:99999",
                "a port out of range",
            ),
            (
                "GATEWAY__MODEL__URL",
                "mailto:model@example.com",
                "a URL no path joins onto",
            ),
            (
                "GATEWAY__MODEL__URL",
                "https://user:hunter2@model:99999",
                "a bad port, with credentials",
            ),
            ("GATEWAY__STORE__URL", "ftp://search.local", "not HTTP"),
            (
                "GATEWAY__STORE__URL",
                "http://a:9200,http://[::1",
                "a second URL that does not parse",
            ),
            (
                "GATEWAY__STORE__URL",
                "http://u:hunter2@a:9200,ftp://u:hunter2@b",
                "a second URL not HTTP, with credentials",
            ),
        ];
        for (name, value, description) in cases {
            let error = Settings::from_vars(vars(&[(name, value)])).unwrap_err();
            assert!(
                matches!(&error, ConfigurationError::InvalidValue { name: n, .. } if n == name),
                "{description}: {error:?}"
            );
            assert!(
                !error.to_string().contains("hunter2"),
                "{description}: {error}"
            );
        }
    }

    #[test]
    fn every_duration_is_read_in_the_unit_its_variable_names() {
        // Each variable alone set to 7000 (no default is 7000; all settings stay
        // consistent), read back from the field it must set.
        type Field = fn(&Settings) -> Duration;
        let cases: [(&str, Field); 13] = [
            ("GATEWAY__SERVER__REQUEST_TIMEOUT_MS", |s| {
                s.server.request_timeout
            }),
            ("GATEWAY__SERVER__HEADER_READ_TIMEOUT_MS", |s| {
                s.server.header_read_timeout
            }),
            ("GATEWAY__SERVER__IDLE_TIMEOUT_MS", |s| {
                s.server.idle_timeout
            }),
            ("GATEWAY__SERVER__SHUTDOWN_DRAIN_DELAY_MS", |s| {
                s.server.shutdown_drain_delay
            }),
            ("GATEWAY__SERVER__SHUTDOWN_GRACE_MS", |s| {
                s.server.shutdown_grace
            }),
            ("GATEWAY__STORE__TIMEOUT_MS", |s| s.store.timeout),
            ("GATEWAY__STORE__DEAD_NODE_BACKOFF_MS", |s| {
                s.store.dead_node_backoff
            }),
            ("GATEWAY__STORE__MAX_DEAD_NODE_BACKOFF_MS", |s| {
                s.store.max_dead_node_backoff
            }),
            ("GATEWAY__STORE__LEASE_TTL_MS", |s| s.store.lease_ttl),
            ("GATEWAY__MODEL__TIMEOUT_MS", |s| s.model.timeout),
            ("GATEWAY__MODEL__CONNECT_TIMEOUT_MS", |s| {
                s.model.connect_timeout
            }),
            ("GATEWAY__MODEL__VERSION_REFRESH_MS", |s| {
                s.model.version_refresh
            }),
            ("GATEWAY__MODEL__BREAKER_COOL_DOWN_MS", |s| {
                s.model.breaker_cool_down
            }),
        ];
        for (name, field) in cases {
            let settings = Settings::from_vars(vars(&[(name, "7000")])).unwrap();
            assert_eq!(field(&settings), Duration::from_millis(7000), "{name}");
        }
        let set = Settings::from_vars(vars(&[("GATEWAY__STORE__MAX_AGE_SECS", "7000")])).unwrap();
        assert_eq!(set.store.max_age, Some(Duration::from_secs(7000)));
    }

    #[test]
    fn store_node_credentials_are_taken_out_of_the_urls_and_never_printed() {
        let settings = Settings::from_vars(vars(&[(
            "GATEWAY__STORE__URL",
            "https://elastic:hunter2@es-0:9243/, https://elastic:hunter2@es-1:9243",
        )]))
        .unwrap();
        let nodes = settings.store.url.as_ref().unwrap();
        assert_eq!(
            urls(&settings.store),
            ["https://es-0:9243/", "https://es-1:9243/"]
        );
        let (user, password) = nodes.credentials().unwrap();
        assert_eq!((user, password.expose_secret()), ("elastic", "hunter2"));
        assert!(!format!("{settings:?}").contains("hunter2"));
        let anonymous: StoreNodes = "http://es-0:9200".parse().unwrap();
        assert!(anonymous.credentials().is_none());
    }

    #[test]
    fn a_node_list_built_in_code_is_checked_as_the_variable_is() {
        let error = "http://u:hunter2@es-0:9200,"
            .parse::<StoreNodes>()
            .unwrap_err();
        assert!(
            matches!(&error, ConfigurationError::InvalidValue { name, .. } if name == "GATEWAY__STORE__URL"),
            "{error:?}"
        );
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn unknown_variables_are_rejected_by_name() {
        let cases = [
            ("GATEWAY__SERVER__PROT", "a typo in the key"),
            ("GATEWAY__SERVR__PORT", "a typo in the section"),
            ("GATEWAY__PORT", "no section"),
            ("GATEWAY__server__port", "lower case"),
            ("GATEWAY__SERVER__PORT__X", "one level too deep"),
            (
                "GATEWAY__MODEL__URL_FILE",
                "a file for a setting that is not a secret",
            ),
            (
                "GATEWAY__TELEMETRY__BAGGAGE_MAX_ITEMS",
                "a typo in a telemetry cap",
            ),
        ];
        for (name, description) in cases {
            let error = Settings::from_vars(vars(&[(name, "1")])).unwrap_err();
            assert!(
                matches!(&error, ConfigurationError::UnknownSetting(n) if n == name),
                "{description}: {error:?}"
            );
        }
    }

    #[test]
    fn the_baggage_caps_read_by_telemetry_are_let_through() {
        Settings::from_vars(vars(&[
            ("GATEWAY__TELEMETRY__BAGGAGE_MAX_ENTRIES", "3"),
            ("GATEWAY__TELEMETRY__BAGGAGE_MAX_BYTES", "512"),
        ]))
        .unwrap();
    }

    #[test]
    fn values_are_parsed_by_their_declared_type() {
        let settings = Settings::from_vars(vars(&[
            ("GATEWAY__STORE__COMPRESSION", "true"),
            ("GATEWAY__STORE__PASSWORD", "12345"),
            ("GATEWAY__STORE__USERNAME", ""),
            ("GATEWAY__LOG__FORMAT", "json"),
        ]))
        .unwrap();
        assert!(settings.store.compression);
        assert_eq!(settings.store.password.unwrap().expose_secret(), "12345");
        assert!(settings.store.username.is_none());
        assert_eq!(settings.log.format, LogFormat::Json);
        for (name, value) in [
            ("GATEWAY__LOG__FORMAT", "xml"),
            ("GATEWAY__STORE__COMPRESSION", "yes"),
            ("GATEWAY__SERVER__MAX_IN_FLIGHT", "0"),
            ("GATEWAY__STORE__WRITE_BEHIND_MAX_ATTEMPTS", "0"),
        ] {
            let error = Settings::from_vars(vars(&[(name, value)])).unwrap_err();
            assert!(error.to_string().contains(name), "{name}={value}: {error}");
        }
    }

    #[test]
    fn a_secret_is_read_from_the_file_its_file_variable_names() {
        let file = TempFile::new("api-key", "aWQ6a2V5\n");
        let password = TempFile::new("password", "from-file\r\n");
        let settings = Settings::from_vars(vars(&[
            ("GATEWAY__STORE__API_KEY_FILE", &file.path()),
            ("GATEWAY__STORE__PASSWORD", "from-variable"),
            ("GATEWAY__STORE__PASSWORD_FILE", &password.path()),
        ]))
        .unwrap();
        assert_eq!(settings.store.api_key.unwrap().expose_secret(), "aWQ6a2V5");
        assert_eq!(
            settings.store.password.unwrap().expose_secret(),
            "from-file"
        );

        let missing = format!("{}.missing", file.path());
        let error =
            Settings::from_vars(vars(&[("GATEWAY__STORE__PASSWORD_FILE", &missing)])).unwrap_err();
        assert!(
            matches!(&error, ConfigurationError::SecretFile { name, .. } if name == "GATEWAY__STORE__PASSWORD_FILE"),
            "{error:?}"
        );
    }

    #[test]
    fn debug_prints_no_secret() {
        let file = TempFile::new("debug", "from-a-file");
        let settings = Settings::from_vars(vars(&[
            ("GATEWAY__STORE__PASSWORD", "hunter2"),
            ("GATEWAY__STORE__API_KEY_FILE", &file.path()),
        ]))
        .unwrap();
        let printed = format!("{settings:?} {settings:#?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("from-a-file"), "{printed}");
    }
}

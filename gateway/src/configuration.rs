//! Typed settings: documented defaults, then `GATEWAY__SECTION__KEY` environment overrides.
//!
//! Telemetry is not configured here: exporters, sampling and resource come from
//! the standard `OTEL_*` variables (see `telemetry`).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Every setting of the gateway.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The HTTP server.
    pub server: ServerSettings,
    /// The prediction store.
    pub store: StoreSettings,
    /// The model service client.
    pub model: ModelSettings,
    /// Console logs.
    pub log: LogSettings,
}

/// Console logs (what goes to OTLP is set by `OTEL_*`).
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `text` (readable) or `json` (`GATEWAY__LOG__FORMAT`, default `text`).
    pub format: LogFormat,
}

/// How console logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The HTTP server and its admission limits.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address to bind (`GATEWAY__SERVER__HOST`, default `127.0.0.1`).
    pub host: String,
    /// Port to bind, 0 for any free one (`GATEWAY__SERVER__PORT`, default 8080).
    pub port: u16,
    /// Total deadline of one request (`GATEWAY__SERVER__REQUEST_TIMEOUT_MS`, default 10000):
    /// a client is answered 504 rather than left waiting on a stuck dependency.
    pub request_timeout_ms: u64,
    /// Requests served at once (`GATEWAY__SERVER__MAX_IN_FLIGHT`, default 512): beyond
    /// it the gateway answers 503 with `Retry-After` at once instead of queueing without bound.
    pub max_in_flight: usize,
    /// Largest accepted request body (`GATEWAY__SERVER__MAX_BODY_BYTES`, default 262144):
    /// room for a full batch of the longest ids; caps the memory one request can take.
    pub max_body_bytes: usize,
    /// Most ids in one batch request (`GATEWAY__SERVER__MAX_BATCH_SIZE`, default 1000):
    /// bounds the multi-get, the model call and the bulk write of one request.
    pub max_batch_size: usize,
    /// Time a client has to send a whole request head once it sent its first byte
    /// (`GATEWAY__SERVER__HEADER_READ_TIMEOUT_MS`, default 10000): a client dribbling a
    /// head cannot hold a connection.
    pub header_read_timeout_ms: u64,
    /// Time a connection may sit with no request in progress, fresh or kept alive
    /// (`GATEWAY__SERVER__IDLE_TIMEOUT_MS`, default 60000), then it is closed.
    pub idle_timeout_ms: u64,
    /// Open client connections at most (`GATEWAY__SERVER__MAX_CONNECTIONS`, default
    /// 10000, lowered to fit the process's open-file limit): at the cap the longest-idle
    /// connection is closed to make room, so idle sockets cannot lock new clients out.
    pub max_connections: usize,
    /// After SIGTERM, how long `/readyz` answers 503 while requests are still served
    /// (`GATEWAY__SERVER__SHUTDOWN_DRAIN_DELAY_MS`, default 5000): time for a load balancer
    /// to take the gateway out before it stops accepting.
    pub shutdown_drain_delay_ms: u64,
    /// Then how long in-flight requests have to finish before every remaining connection
    /// is closed (`GATEWAY__SERVER__SHUTDOWN_GRACE_MS`, default 15000). Drain delay, grace
    /// and the write-behind drain together stay inside Kubernetes' default 30 s.
    pub shutdown_grace_ms: u64,
}

/// Where predictions are kept.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Elasticsearch URL (`GATEWAY__STORE__URL`); unset: the embedded in-memory store.
    pub url: Option<String>,
    /// Alias the gateway reads and writes through (`GATEWAY__STORE__INDEX_ALIAS`,
    /// default `ml-predictions`); the versioned index behind it is `<alias>-v1`.
    pub index_alias: String,
    /// Basic-auth user (`GATEWAY__STORE__USERNAME`).
    pub username: Option<String>,
    /// Basic-auth password (`GATEWAY__STORE__PASSWORD` or `..._FILE`).
    pub password: Option<Secret>,
    /// API key, base64 `id:key` as Kibana shows it (`GATEWAY__STORE__API_KEY` or `..._FILE`).
    pub api_key: Option<Secret>,
    /// Timeout of one store request (`GATEWAY__STORE__TIMEOUT_MS`, default 2000): a slow
    /// store must not hold a request past the point where the model would have answered.
    pub timeout_ms: u64,
    /// Ask the store for gzip-compressed answers (`GATEWAY__STORE__COMPRESSION`, default
    /// false): worth it only for a store across a slow or metered network; near the store,
    /// compressing a ~0.4 KB document costs the node and the gateway more than it saves.
    pub compression: bool,
    /// Predictions waiting for a store write retry (`GATEWAY__STORE__WRITE_BEHIND_CAPACITY`,
    /// default 10000); beyond it they are dropped, counted and logged.
    pub write_behind_capacity: usize,
    /// Failed attempts the store answered (refusals, not outages) after which the
    /// write-behind queue gives a prediction up (`GATEWAY__STORE__WRITE_BEHIND_MAX_ATTEMPTS`,
    /// default 8: about 16 s of backoff). While the store cannot be reached at all,
    /// retries go on every 5 s until it can, or until shutdown.
    pub write_behind_max_attempts: u32,
    /// Maximum age of a stored prediction in seconds (`GATEWAY__STORE__MAX_AGE_SECS`,
    /// unset by default: a prediction stays fresh until its model run is replaced). An
    /// older one is not served (recomputed, `Cache-Status: ...; fwd=stale`), and every
    /// answer says its remaining lifetime in `ttl` (RFC 9211 section 2.4).
    pub max_age_secs: Option<u64>,
}

/// The model service and how the gateway follows its live version.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    /// Base URL (`GATEWAY__MODEL__URL`, default `http://127.0.0.1:8001`).
    pub url: String,
    /// Timeout of one model call (`GATEWAY__MODEL__TIMEOUT_MS`, default 5000).
    pub timeout_ms: u64,
    /// TCP connect timeout (`GATEWAY__MODEL__CONNECT_TIMEOUT_MS`, default 1000): a down
    /// service is reported quickly.
    pub connect_timeout_ms: u64,
    /// How often the live model version is re-read from `GET /model`
    /// (`GATEWAY__MODEL__VERSION_REFRESH_MS`, default 5000): the longest time an old
    /// version's predictions can still be served after a switch.
    pub version_refresh_ms: u64,
    /// Consecutive failures to reach the model that open the circuit breaker
    /// (`GATEWAY__MODEL__BREAKER_THRESHOLD`, default 5).
    pub breaker_threshold: u32,
    /// How long the open circuit fails calls fast before a trial call
    /// (`GATEWAY__MODEL__BREAKER_COOL_DOWN_MS`, default 5000).
    pub breaker_cool_down_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings {
                host: "127.0.0.1".into(),
                port: 8080,
                request_timeout_ms: 10_000,
                max_in_flight: 512,
                max_body_bytes: 256 * 1024,
                max_batch_size: 1_000,
                header_read_timeout_ms: 10_000,
                idle_timeout_ms: 60_000,
                max_connections: 10_000,
                shutdown_drain_delay_ms: 5_000,
                shutdown_grace_ms: 15_000,
            },
            store: StoreSettings {
                url: None,
                index_alias: "ml-predictions".into(),
                username: None,
                password: None,
                api_key: None,
                timeout_ms: 2_000,
                compression: false,
                write_behind_capacity: 10_000,
                write_behind_max_attempts: 8,
                max_age_secs: None,
            },
            model: ModelSettings {
                url: "http://127.0.0.1:8001".into(),
                timeout_ms: 5_000,
                connect_timeout_ms: 1_000,
                version_refresh_ms: 5_000,
                breaker_threshold: 5,
                breaker_cool_down_ms: 5_000,
            },
            log: LogSettings {
                format: LogFormat::Text,
            },
        }
    }
}

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    /// A variable's value does not parse as the setting's type.
    #[error("{name}={value:?} is not a valid {expected}")]
    InvalidValue {
        /// The variable.
        name: String,
        /// Its value (never a secret: secrets are not parsed).
        value: String,
        /// What was expected.
        expected: &'static str,
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

impl Settings {
    /// Defaults overridden by the process environment.
    pub fn load() -> Result<Self, ConfigurationError> {
        Self::from_vars(std::env::vars())
    }

    /// Defaults overridden by `vars` (the environment, or a test's table).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigurationError> {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(PREFIX))
            .collect();
        let mut settings = Self::default();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            settings.apply(name, &vars[name])?;
        }
        settings.check()?;
        Ok(settings)
    }

    /// Rejects combinations that cannot work: a model call allowed to outlast the request
    /// that waits for it would be cut off by the request deadline on every slow answer.
    fn check(&self) -> Result<(), ConfigurationError> {
        if self.model.timeout_ms >= self.server.request_timeout_ms {
            return Err(ConfigurationError::Inconsistent(format!(
                "GATEWAY__MODEL__TIMEOUT_MS ({}) must be shorter than \
                 GATEWAY__SERVER__REQUEST_TIMEOUT_MS ({})",
                self.model.timeout_ms, self.server.request_timeout_ms
            )));
        }
        Ok(())
    }

    fn apply(&mut self, name: &str, value: &str) -> Result<(), ConfigurationError> {
        let key = &name[PREFIX.len()..];
        match key {
            "SERVER__HOST" => self.server.host = value.to_owned(),
            "SERVER__PORT" => self.server.port = parse(name, value, "port number")?,
            "SERVER__REQUEST_TIMEOUT_MS" => {
                self.server.request_timeout_ms = parse(name, value, "number of milliseconds")?
            }
            "SERVER__MAX_IN_FLIGHT" => {
                self.server.max_in_flight = parse(name, value, "positive count")?;
                if self.server.max_in_flight == 0 {
                    return Err(invalid(name, value, "positive count"));
                }
            }
            "SERVER__MAX_BODY_BYTES" => {
                self.server.max_body_bytes = parse(name, value, "number of bytes")?
            }
            "SERVER__MAX_BATCH_SIZE" => {
                self.server.max_batch_size = parse(name, value, "positive count")?;
                if self.server.max_batch_size == 0 {
                    return Err(invalid(name, value, "positive count"));
                }
            }
            "SERVER__HEADER_READ_TIMEOUT_MS" => {
                self.server.header_read_timeout_ms = parse(name, value, "number of milliseconds")?
            }
            "SERVER__IDLE_TIMEOUT_MS" => {
                self.server.idle_timeout_ms = parse(name, value, "number of milliseconds")?
            }
            "SERVER__MAX_CONNECTIONS" => {
                self.server.max_connections = parse(name, value, "positive count")?;
                if self.server.max_connections == 0 {
                    return Err(invalid(name, value, "positive count"));
                }
            }
            "SERVER__SHUTDOWN_DRAIN_DELAY_MS" => {
                self.server.shutdown_drain_delay_ms = parse(name, value, "number of milliseconds")?
            }
            "SERVER__SHUTDOWN_GRACE_MS" => {
                self.server.shutdown_grace_ms = parse(name, value, "number of milliseconds")?
            }
            "STORE__URL" => self.store.url = non_empty(value),
            "STORE__INDEX_ALIAS" => {
                // The alias goes into request paths: only index-name characters.
                let ok = !value.is_empty()
                    && value.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_')
                    })
                    && !value.starts_with(['-', '_']);
                if !ok {
                    return Err(invalid(name, value, "index name (a-z, 0-9, '-', '_')"));
                }
                self.store.index_alias = value.to_owned();
            }
            "STORE__USERNAME" => self.store.username = non_empty(value),
            "STORE__PASSWORD" => self.store.password = non_empty(value).map(Secret),
            "STORE__PASSWORD_FILE" => self.store.password = Some(read_secret(name, value)?),
            "STORE__API_KEY" => self.store.api_key = non_empty(value).map(Secret),
            "STORE__API_KEY_FILE" => self.store.api_key = Some(read_secret(name, value)?),
            "STORE__TIMEOUT_MS" => {
                self.store.timeout_ms = parse(name, value, "number of milliseconds")?
            }
            "STORE__COMPRESSION" => self.store.compression = parse(name, value, "true or false")?,
            "STORE__WRITE_BEHIND_CAPACITY" => {
                self.store.write_behind_capacity = parse(name, value, "count")?
            }
            "STORE__WRITE_BEHIND_MAX_ATTEMPTS" => {
                self.store.write_behind_max_attempts = parse(name, value, "positive count")?;
                if self.store.write_behind_max_attempts == 0 {
                    return Err(invalid(name, value, "positive count"));
                }
            }
            "STORE__MAX_AGE_SECS" => {
                self.store.max_age_secs = match non_empty(value) {
                    None => None,
                    Some(_) => match parse(name, value, "positive number of seconds")? {
                        0 => return Err(invalid(name, value, "positive number of seconds")),
                        seconds => Some(seconds),
                    },
                }
            }
            "MODEL__URL" => self.model.url = value.trim_end_matches('/').to_owned(),
            "MODEL__TIMEOUT_MS" => {
                self.model.timeout_ms = parse(name, value, "number of milliseconds")?
            }
            "MODEL__CONNECT_TIMEOUT_MS" => {
                self.model.connect_timeout_ms = parse(name, value, "number of milliseconds")?
            }
            "MODEL__VERSION_REFRESH_MS" => {
                self.model.version_refresh_ms = parse(name, value, "number of milliseconds")?
            }
            "MODEL__BREAKER_THRESHOLD" => {
                self.model.breaker_threshold = parse(name, value, "positive count")?
            }
            "MODEL__BREAKER_COOL_DOWN_MS" => {
                self.model.breaker_cool_down_ms = parse(name, value, "number of milliseconds")?
            }
            "LOG__FORMAT" => {
                self.log.format = match value.trim() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(invalid(name, value, "log format (text or json)")),
                }
            }
            // Baggage caps: read by `telemetry::init` with the `OTEL_*` variables.
            "TELEMETRY__BAGGAGE_MAX_ENTRIES" | "TELEMETRY__BAGGAGE_MAX_BYTES" => {}
            _ => return Err(ConfigurationError::UnknownSetting(name.to_owned())),
        }
        Ok(())
    }
}

impl ServerSettings {
    /// `host:port` to bind.
    pub fn bind_address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Total deadline of one request.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Time to send a whole request head.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// Time a connection may sit with no request in progress.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// How long requests are still served after SIGTERM, with readiness failing.
    pub fn shutdown_drain_delay(&self) -> Duration {
        Duration::from_millis(self.shutdown_drain_delay_ms)
    }

    /// How long in-flight requests may take to finish once the gateway stops accepting.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

impl StoreSettings {
    /// Timeout of one store request.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Maximum age of a stored prediction, when one is configured.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age_secs.map(Duration::from_secs)
    }

    /// The versioned index behind the alias, created at start-up.
    pub fn index_name(&self) -> String {
        format!("{}-v1", self.index_alias)
    }
}

impl ModelSettings {
    /// Timeout of one model call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// TCP connect timeout of the model client.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// How long the open circuit fails calls fast.
    pub fn breaker_cool_down(&self) -> Duration {
        Duration::from_millis(self.breaker_cool_down_ms)
    }

    /// Interval between two reads of the live model version.
    pub fn version_refresh(&self) -> Duration {
        Duration::from_millis(self.version_refresh_ms.max(1))
    }
}

/// A secret value: never printed by `Debug` or `Display`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

fn parse<T: std::str::FromStr>(
    name: &str,
    value: &str,
    expected: &'static str,
) -> Result<T, ConfigurationError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(name, value, expected))
}

fn invalid(name: &str, value: &str, expected: &'static str) -> ConfigurationError {
    ConfigurationError::InvalidValue {
        name: name.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.trim().is_empty()).then(|| value.trim().to_owned())
}

fn read_secret(name: &str, path: &str) -> Result<Secret, ConfigurationError> {
    std::fs::read_to_string(path)
        .map(|text| Secret(text.trim_end_matches(['\r', '\n']).to_owned()))
        .map_err(|source| ConfigurationError::SecretFile {
            name: name.to_owned(),
            path: path.to_owned(),
            source,
        })
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

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_use_the_embedded_store_and_the_local_model_service() {
        let settings = Settings::from_vars(vars(&[])).unwrap();
        assert!(settings.store.url.is_none());
        assert_eq!(settings.model.url, "http://127.0.0.1:8001");
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
        assert_eq!(settings.store.url.as_deref(), Some("http://127.0.0.1:9200"));
        assert_eq!(settings.model.url, "http://127.0.0.1:9");
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
    fn the_maximum_age_of_stored_predictions_is_off_unless_set_to_a_positive_count() {
        assert_eq!(
            Settings::from_vars(vars(&[])).unwrap().store.max_age(),
            None
        );
        let set = Settings::from_vars(vars(&[("GATEWAY__STORE__MAX_AGE_SECS", "3600")])).unwrap();
        assert_eq!(set.store.max_age(), Some(Duration::from_secs(3600)));
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
        assert_eq!(settings.store.password.unwrap().expose(), "hunter2");
    }
}

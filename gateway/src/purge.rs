//! `gateway purge --keep N`: deletes the stored predictions of model runs no longer kept.

use serde::Serialize;

use crate::configuration::Settings;
use crate::metrics::Metrics;
use crate::model_client::{ModelClient, ModelClientError};
use crate::store::{ElasticsearchStore, StoreError};

/// The command line of the subcommand, after `purge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeArgs {
    /// Runs kept besides the live one, the most recent first.
    pub keep: usize,
}

/// Why the command line is not a purge; the message is the usage line's complement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurgeArgsError {
    /// `--keep` missing: there is no safe default for how much history to delete.
    #[error("--keep N is required")]
    MissingKeep,
    /// `--keep` not followed by a count.
    #[error("--keep takes a number of runs, got {0:?}")]
    InvalidKeep(String),
    /// Anything else.
    #[error("unexpected argument {0:?}")]
    Unexpected(String),
}

/// Why a purge did not complete. Nothing is deleted unless the delete itself ran.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// `GATEWAY__STORE__URL` is unset: the embedded store lives in a gateway's memory.
    #[error("GATEWAY__STORE__URL is not set; only an Elasticsearch store can be purged")]
    NoStore,
    /// The live model could not be learned.
    #[error("cannot learn the live model from the model service")]
    Model(#[source] ModelClientError),
    /// The store failed (listing runs or deleting).
    #[error("the prediction store failed")]
    Store(#[source] StoreError),
}

/// What a purge did, printed as one JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgeSummary {
    /// The run the model service serves.
    pub live_run_id: String,
    /// Every run whose predictions were kept (the live one first).
    pub kept_run_ids: Vec<String>,
    /// Predictions deleted.
    pub deleted: u64,
}

impl PurgeArgs {
    /// Parses `--keep N` (also `--keep=N`).
    pub fn parse(args: &[String]) -> Result<Self, PurgeArgsError> {
        let mut keep = None;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let value = match arg.strip_prefix("--keep") {
                Some("") => args.next().cloned().unwrap_or_default(),
                Some(rest) if rest.starts_with('=') => rest[1..].to_owned(),
                _ => return Err(PurgeArgsError::Unexpected(arg.clone())),
            };
            keep = Some(
                value
                    .parse()
                    .map_err(|_| PurgeArgsError::InvalidKeep(value))?,
            );
        }
        keep.map(|keep| Self { keep })
            .ok_or(PurgeArgsError::MissingKeep)
    }
}

/// Runs the purge against the store and model service of `settings`.
///
/// `gateway purge --keep N`: deletes the stored predictions of model runs no longer kept
/// (SPEC "Cache semantics", retention), for a scheduled job such as a Kubernetes CronJob.
///
/// Kept: the run the model service serves now (`GET /model`) and the `N` other runs with
/// the most recent predictions (rollback targets). Everything else in the alias goes, in
/// one delete-by-query. Without an answer from the model service nothing is deleted: the
/// live run is the one thing a purge must never guess.
pub async fn purge(settings: &Settings, args: PurgeArgs) -> Result<PurgeSummary, PurgeError> {
    if settings.store.url.is_none() {
        return Err(PurgeError::NoStore);
    }
    let metrics = Metrics::new();
    let store =
        ElasticsearchStore::new(&settings.store, metrics.clone()).map_err(PurgeError::Store)?;
    let model = ModelClient::new(&settings.model, metrics).map_err(PurgeError::Model)?;
    let live = model.model_info().await.map_err(PurgeError::Model)?;
    // One more than kept: the live run may be among the most recent.
    let recent = store
        .recent_runs(args.keep + 1)
        .await
        .map_err(PurgeError::Store)?;
    let mut kept = vec![live.run_id.clone()];
    kept.extend(
        recent
            .into_iter()
            .filter(|run| *run != live.run_id)
            .take(args.keep),
    );
    let deleted = store
        .delete_runs_except(&kept)
        .await
        .map_err(PurgeError::Store)?;
    tracing::info!(
        ml.run_id = %live.run_id,
        kept_run_ids = ?kept,
        deleted,
        "purged the predictions of runs no longer kept"
    );
    Ok(PurgeSummary {
        live_run_id: live.run_id,
        kept_run_ids: kept,
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Result<PurgeArgs, PurgeArgsError> {
        PurgeArgs::parse(&line.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn keep_is_read_in_both_forms() {
        assert_eq!(args(&["--keep", "2"]), Ok(PurgeArgs { keep: 2 }));
        assert_eq!(args(&["--keep=0"]), Ok(PurgeArgs { keep: 0 }));
    }

    #[test]
    fn a_purge_without_a_valid_keep_is_refused() {
        let cases = [
            ("nothing", &[][..], PurgeArgsError::MissingKeep),
            (
                "no value",
                &["--keep"][..],
                PurgeArgsError::InvalidKeep(String::new()),
            ),
            (
                "negative",
                &["--keep", "-1"][..],
                PurgeArgsError::InvalidKeep("-1".into()),
            ),
            (
                "other flag",
                &["--all"][..],
                PurgeArgsError::Unexpected("--all".into()),
            ),
            (
                "prefix only",
                &["--keeper"][..],
                PurgeArgsError::Unexpected("--keeper".into()),
            ),
        ];
        for (description, line, expected) in cases {
            assert_eq!(args(line), Err(expected), "{description}");
        }
    }
}

//! Validated domain types: what the rest of the gateway works with instead of raw input.

mod cache_directives;
mod cache_status;
mod data_id;
mod prediction;

pub use cache_directives::{MAX_DELTA_SECONDS, RequestDirectives};
pub use cache_status::{
    CACHE_IDENTIFIER, CacheStatus, Forward, ForwardReason, HIT_CACHE_STATUS, Handling,
};
pub use data_id::{DataId, DataIdError};
pub use prediction::{CacheResult, ModelInfo, Prediction, PredictionKey, StoredPrediction};

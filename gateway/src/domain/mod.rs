//! Validated domain types: what the rest of the gateway works with instead of raw input.

mod data_id;
mod prediction;

pub use data_id::{DataId, DataIdError};
pub use prediction::{CacheResult, ModelInfo, Prediction, PredictionKey, StoredPrediction};

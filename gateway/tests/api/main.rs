//! API tests: the real router on port 0, in process, through `helpers::spawn_app`.

mod cache_controls;
mod cancellation;
mod connections;
mod health;
mod helpers;
mod hostile_ids;
mod openapi;
mod predict;
mod predict_batch;
mod predictions;
mod replicas;
mod store_cluster;

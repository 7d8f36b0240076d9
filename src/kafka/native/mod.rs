//! native: logcatch's own Kafka producer.
mod producer;
pub use producer::*;

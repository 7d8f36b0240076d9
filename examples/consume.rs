//! Reads a topic from offset 0 by assigning every partition (no consumer
//! group to wait for; tansu, which does not deliver through groups, works
//! too) and prints the message count.
//!
//! `cargo run --example consume -- BROKERS TOPIC [QUIET_SECS]`

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let brokers = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:9092");
    let topic = args.get(2).map(String::as_str).unwrap_or("logs");
    let quiet: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "logcatch-example")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut count = 0u64;
    let mut last = Instant::now();
    let mut first: Option<String> = None;
    let mut latest = String::new();
    while last.elapsed() < Duration::from_secs(quiet) {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            first.get_or_insert_with(|| v.clone());
            latest = v;
            count += 1;
            last = Instant::now();
        }
    }
    println!("{count} messages in {topic}");
    if let Some(f) = first {
        println!("first: {f}\nlast:  {latest}");
    }
    Ok(())
}

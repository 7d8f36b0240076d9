//! A broker that ends SASL sessions (`connections.max.reauth.ms`, KIP-368):
//! it closes a connection whose session expired at its next request.
//! librdkafka re-authenticates in time; the native client does not (yet):
//! its connection is lost once per session lifetime and the batches in
//! flight are sent again on a new one, with the same sequence numbers.
//! Either way every line arrives exactly once; the native client's resends
//! are printed.

use std::time::Duration;

use super::{secure_root, Access, SecureCase};
use crate::common::secure::SecureBroker;
use crate::common::*;

const WAIT: Duration = Duration::from_secs(90);

#[test]
fn expiring_sasl_sessions_keep_delivery_exactly_once_both_clients() {
    let b = SecureBroker::start_with_props(&["connections.max.reauth.ms=3000"]);
    let root = secure_root();
    for client in ["native", "librdkafka"] {
        let case = SecureCase::new(
            root.path(),
            client,
            format!("sec-reauth-{client}"),
            b.password(),
        );
        let access = Access::Sasl("SCRAM-SHA-512");
        write_numbered(&case.log, 0, 500);
        let mut d = Daemon::with(&case.dir, &case.config(&b, client, access, &b.pki().ca));
        // 10 s of lines: three sessions' lifetimes and more.
        let writer = write_numbered_slowly(&case.log, 500, 10_500, 250, Duration::from_millis(250));
        writer.join().expect("writer");
        let msgs = d
            .consume(&b.addr(), &case.topic)
            .until_count(10_500)
            .timeout(WAIT)
            .run();
        assert_exactly_once(&msgs, 0..10_500);
        eprintln!(
            "reauth {client}: 10,500 lines exactly once; {} resend warnings",
            d.log_count("sending them again in this session")
        );
        d.stop();
    }
}

//! Declaring JetStream streams that several pods declare at the same moment.
//!
//! The pods of a rollout start together and each declares the same streams (a namespace's
//! history, the presence and read-position buckets, the documents' log) the first time it needs
//! them. Two things go wrong when they do it the plain way (nats-server 2.9, seen in CI and in
//! `tests/nats_bus.rs`):
//! - a create that comes while another client's create of the same stream is under way is
//!   refused with "subjects overlap with an existing stream" (10065): that other stream;
//! - an update that comes while the stream is being created crashes the server (a nil
//!   dereference in `updateWithAdvisory`): a declare must not update what needs no change.
//!
//! So a declare reads the stream first, creates it if missing (after losing such a race, reads
//! again: the winner's stream), and updates it only when the settings the gateway gives differ
//! from the server's ([`create_or_update`]; settings it does not give stay as an operator set
//! them). A real overlap (another stream owns these subjects) still fails. Pods that declare
//! one stream with different settings at the same moment (a rollout that changes them) can
//! still meet the server's crash; a rollout replaces pods a few at a time.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamError, GetStreamErrorKind};
use async_nats::jetstream::{self, stream};

/// The stream `config` names, created if it does not exist; an existing one is left as it is.
pub async fn get_or_create(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, async_nats::Error> {
    for lost_before in [false, true] {
        match found(js, &config.name).await {
            Ok(s) => return Ok(s),
            Err(e) if !not_found(&e) => return Err(e.into()),
            Err(_) => {}
        }
        match js.create_stream(config.clone()).await {
            Ok(s) => return Ok(s),
            Err(e)
                if !lost_before
                    && matches!(e.kind(), CreateStreamErrorKind::JetStream(j)
                        if j.error_code() == ErrorCode::STREAM_SUBJECT_OVERLAP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the second round returns")
}

/// The stream `config` names, created, or updated when its settings differ from `config`'s.
pub async fn create_or_update(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Info, async_nats::Error> {
    let stream = get_or_create(js, config.clone()).await?;
    let info = stream.cached_info();
    if same_settings(&config, &info.config) {
        return Ok(info.clone());
    }
    Ok(js.update_stream(&config).await?)
}

/// The stream `name`, once the server has finished creating it. nats-server 2.9 lists a
/// stream being created before it sets its creation time (the room bus's epoch): read it again
/// while that is still the zero time (Go's year 1), for up to a second.
async fn found(js: &jetstream::Context, name: &str) -> Result<stream::Stream, GetStreamError> {
    let mut s = js.get_stream(name).await?;
    for _ in 0..50 {
        if s.cached_info().created.unix_timestamp() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        s = js.get_stream(name).await?;
    }
    Ok(s)
}

fn not_found(e: &GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(j)
        if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Whether the server's config `have` has every setting the gateway gives in `want` (the
/// server fills in what `want` leaves at its default: an unset limit reads back as -1, a
/// replica count of 0 as 1).
fn same_settings(want: &stream::Config, have: &stream::Config) -> bool {
    let limit = |v: i64| v.max(0);
    want.subjects == have.subjects
        && want.description == have.description
        && want.storage == have.storage
        && want.num_replicas.max(1) == have.num_replicas.max(1)
        && limit(want.max_messages_per_subject) == limit(have.max_messages_per_subject)
        && limit(want.max_messages) == limit(have.max_messages)
        && limit(want.max_bytes) == limit(have.max_bytes)
        && want.max_age == have.max_age
        && want.discard == have.discard
        && want.allow_direct == have.allow_direct
        && want.allow_rollup == have.allow_rollup
        && want.deny_delete == have.deny_delete
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wanted() -> stream::Config {
        stream::Config {
            name: "SB_ROOMS_CHAT".into(),
            description: Some("history".into()),
            subjects: vec!["sb.room.chat.>".into()],
            max_messages_per_subject: 100,
            max_age: Duration::from_secs(600),
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        }
    }

    #[test]
    fn the_servers_defaults_for_what_the_gateway_leaves_unset_are_the_same_settings() {
        let have = stream::Config {
            max_messages: -1,
            max_bytes: -1,
            num_replicas: 1,
            max_consumers: -1,
            duplicate_window: Duration::from_secs(120),
            ..wanted()
        };
        assert!(same_settings(&wanted(), &have));
    }

    #[test]
    fn a_changed_retention_or_replica_count_is_a_different_setting() {
        let have = wanted();
        for want in [
            stream::Config {
                max_messages_per_subject: 50,
                ..wanted()
            },
            stream::Config {
                max_age: Duration::from_secs(60),
                ..wanted()
            },
            stream::Config {
                num_replicas: 3,
                ..wanted()
            },
        ] {
            assert!(!same_settings(&want, &have), "{want:?}");
        }
    }
}

//! The file format: a round trip through the pool's export and import, the quota-day filter on
//! load, fingerprints instead of secrets, and corrupt files refused. Time is an input.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::config::{self, KeySpec, Strategy};
use crate::pool::{KeyPool, Now, Outcome};
use crate::quota_day::QuotaClock;
use crate::secret::ApiKey;
use crate::usage::{TokenTotals, TokenUsage, Tokens};

const FLASH: &str = "gemini-2.5-flash";
const PRO: &str = "gemini-2.5-pro";

fn key(i: usize) -> ApiKey {
    ApiKey::new(format!("AIzaFAKE-test-key-{i:022}"))
}

fn pool_cfg(n: usize) -> config::Pool {
    config::Pool {
        strategy: Strategy::RoundRobin,
        keys: (0..n)
            .map(|i| KeySpec {
                key: key(i),
                name: None,
                project: None,
                models: None,
                daily_limit: None,
            })
            .collect(),
        failure_threshold: 3,
        cooldown: Duration::from_secs(60),
        max_attempts: 3,
        retry: config::RetryPolicy::default(),
        upload_group: config::UPLOAD_GROUP,
    }
}

fn wall(rfc3339: &str) -> SystemTime {
    let ts: jiff::Timestamp = rfc3339.parse().expect("test timestamp");
    SystemTime::from(ts)
}

fn today(w: SystemTime) -> Option<crate::quota_day::QuotaDay> {
    QuotaClock::new().day(w).map(|(d, _)| d)
}

/// Noon in Los Angeles (20:00 UTC in winter).
const NOON: &str = "2026-01-15T20:00:00Z";

/// A pool that learned: key 0 out for the day on flash, key 1 resting 30 s on flash after 2
/// requests, key 2 disabled; one client token used 3 times.
fn learned(now: Now) -> (KeyPool, TokenUsage) {
    let pool = KeyPool::new();
    let view = pool.bind(&pool_cfg(3));
    view.learn_models([FLASH, PRO]);
    let lease = view.pick_at(FLASH, now, &[]).expect("key 0");
    assert_eq!(lease.index, 0);
    view.report_at(&lease, &Outcome::QuotaDaily, now);
    for _ in 0..2 {
        let lease = view.pick_at(FLASH, now, &[0, 2]).expect("key 1");
        assert_eq!(lease.index, 1);
        view.report_at(&lease, &Outcome::Success, now);
        view.record_tokens_at(
            &lease,
            Some(Tokens {
                prompt: 10,
                completion: 5,
                thoughts: 1,
            }),
            now,
        );
    }
    let lease = view.pick_at(FLASH, now, &[0, 2]).expect("key 1");
    view.report_at(
        &lease,
        &Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        },
        now,
    );
    let lease = view.pick_at(PRO, now, &[0, 1]).expect("key 2");
    assert_eq!(lease.index, 2);
    view.report_at(
        &lease,
        &Outcome::KeyInvalid {
            reason: "API key not valid".into(),
        },
        now,
    );
    let usage = TokenUsage::new();
    for _ in 0..3 {
        usage.record_at(Some("cline"), Tokens::default(), now.wall);
    }
    (pool, usage)
}

fn file_of(pool: &KeyPool, usage: &TokenUsage, salt: Salt, now: Now) -> FileState {
    FileState::build(
        salt,
        today(now.wall),
        &pool.export(now),
        usage.export_at(now.wall),
    )
}

#[test]
fn a_snapshot_round_trips_through_the_file_into_a_fresh_pool() {
    let t0 = Instant::now();
    let now = Now::new(t0, wall(NOON));
    let (pool, usage) = learned(now);
    let salt = Salt([7; 32]);
    let file = file_of(&pool, &usage, salt, now);
    let bytes = file.encode().expect("encodes");
    let back = FileState::decode(&bytes).expect("decodes");
    assert_eq!(back, file);

    // Restarted 10 s later, in another process (another `Instant` origin).
    let t1 = Instant::now() + Duration::from_secs(1000);
    let later = Now::new(t1, wall(NOON) + Duration::from_secs(10));
    let keys: Vec<ApiKey> = (0..3).map(key).collect();
    let names = vec!["cline".to_string()];
    let (saved, tokens) = back.restore(&keys, &names, today(later.wall), later.wall);
    assert_eq!(saved.len(), 3, "{saved:?}");
    let fresh = KeyPool::new();
    let view = fresh.bind(&pool_cfg(3));
    view.learn_models([FLASH, PRO]);
    fresh.import(&saved, later);
    let fresh_usage = TokenUsage::new();
    let (day, totals) = tokens.expect("the ledger of today");
    fresh_usage.import_at(day, &totals, later.wall);
    assert_eq!(
        fresh_usage.snapshot_at(later.wall),
        vec![(
            "cline".to_string(),
            TokenTotals {
                requests: 3,
                ..TokenTotals::default()
            }
        )]
    );

    let status = view.status_at(later);
    let flash = |i: usize| {
        status[i]
            .models
            .iter()
            .find(|m| m.model == FLASH)
            .cloned()
            .expect("flash entry")
    };
    assert_eq!(flash(0).state, "exhausted");
    assert_eq!(flash(1).state, "cooling");
    assert_eq!(flash(1).daily_requests, 3);
    assert_eq!(flash(1).prompt_tokens, 20);
    let left = flash(1).cooldown_remaining.expect("resting");
    assert!(
        left <= Duration::from_secs(20) && left >= Duration::from_secs(19),
        "{left:?}"
    );
    assert!(status[2].disabled.is_some());

    // Exporting the restored pool gives the same file back (rests end at the same wall time).
    let again = file_of(&fresh, &fresh_usage, salt, later);
    assert_eq!(again.keys, file.keys);
    // Only key 1 serves flash, once its rest (20 s left) is over.
    assert!(view.pick_at(FLASH, later, &[]).is_err());
    let after = Now::new(
        t1 + Duration::from_secs(21),
        later.wall + Duration::from_secs(21),
    );
    assert_eq!(view.pick_at(FLASH, after, &[]).expect("key 1").index, 1);
}

#[test]
fn entries_of_an_earlier_quota_day_and_rests_over_are_dropped_on_load() {
    let now = Now::new(Instant::now(), wall(NOON));
    let (pool, usage) = learned(now);
    let file = file_of(&pool, &usage, Salt([1; 32]), now);
    let keys: Vec<ApiKey> = (0..3).map(key).collect();
    let names = vec!["cline".to_string()];

    // The same day, one minute later: the 30 s rest is over, the day-out and counts stay.
    let minute = wall(NOON) + Duration::from_secs(60);
    let (saved, tokens) = file.restore(&keys, &names, today(minute), minute);
    let rests: Vec<bool> = saved
        .iter()
        .flat_map(|k| &k.models)
        .filter_map(|m| m.rest.map(|r| r.daily))
        .collect();
    assert_eq!(rests, vec![true], "{saved:?}");
    assert!(saved.iter().any(|k| k.disabled.is_some()));
    assert!(tokens.is_some());

    // The next quota day (midnight in Los Angeles has passed): nothing is left.
    let tomorrow = wall("2026-01-16T08:00:01Z");
    let (saved, tokens) = file.restore(&keys, &names, today(tomorrow), tomorrow);
    assert!(saved.is_empty(), "{saved:?}");
    assert!(tokens.is_none());
    // And the pool's own import drops them too.
    let fresh = KeyPool::new();
    let view = fresh.bind(&pool_cfg(3));
    let at = Now::new(Instant::now(), tomorrow);
    fresh.import(&pool.export(now), at);
    assert!(view.status_at(at).iter().all(|k| k
        .models
        .iter()
        .all(|m| m.daily_requests == 0 && m.cooldown_remaining.is_none())));
}

#[test]
fn the_file_names_keys_and_tokens_only_by_salted_fingerprint() {
    let now = Now::new(Instant::now(), wall(NOON));
    let (pool, usage) = learned(now);
    let a = file_of(&pool, &usage, Salt([1; 32]), now);
    let b = file_of(&pool, &usage, Salt([2; 32]), now);
    let text = String::from_utf8(a.encode().expect("encodes")).expect("utf-8");
    for i in 0..3 {
        let k = key(i);
        assert!(!text.contains(k.expose()), "{text}");
        assert!(!text.contains(&**k.masked()), "{text}");
        // Not even a fragment of the key's random part.
        assert!(
            !text.contains(&k.expose()[k.expose().len() - 8..]),
            "{text}"
        );
    }
    assert!(!text.contains("cline"), "{text}");
    // Another deployment's salt gives other fingerprints; a key from another file's salt
    // matches nothing.
    assert_ne!(a.keys[0].fp, b.keys[0].fp);
    let keys: Vec<ApiKey> = (0..3).map(key).collect();
    let mut mixed = a.clone();
    mixed.salt = b.salt.clone();
    assert!(mixed
        .restore(&keys, &[], today(now.wall), now.wall)
        .0
        .is_empty());
    // Unknown keys are ignored.
    let others: Vec<ApiKey> = (10..13).map(key).collect();
    assert!(a
        .restore(&others, &[], today(now.wall), now.wall)
        .0
        .is_empty());
}

#[test]
fn corrupt_or_foreign_files_are_refused() {
    for bad in [
        &b""[..],
        b"not json",
        b"{\"version\":1}",
        b"{\"version\":2,\"salt\":\"00\",\"quota_day\":null,\"keys\":[],\"tokens\":[]}",
        b"{\"version\":1,\"salt\":\"zz\",\"quota_day\":null,\"keys\":[],\"tokens\":[]}",
    ] {
        assert!(
            FileState::decode(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let ok = FileState::build(Salt([3; 32]), None, &[], None);
    assert_eq!(FileState::decode(&ok.encode().expect("encodes")), Ok(ok));
}

#[test]
fn writes_replace_the_file_whole_with_mode_0600() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gemini-rotator.state");
    file::write_atomic(&path, b"one").expect("write");
    file::write_atomic(&path, b"two").expect("write");
    assert_eq!(std::fs::read(&path).expect("read"), b"two");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No temp file left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn pins_round_trip_by_fingerprint_and_drop_what_no_longer_holds() {
    use crate::affinity::Pin;
    let salt = Salt([7; 32]);
    let now = wall(NOON);
    let pin = |k: usize, owner: &str, secs: u64, upstream: Option<&str>| Pin {
        key: key(k),
        owner: Arc::from(owner),
        expires: now + Duration::from_secs(secs),
        upstream: upstream.map(Arc::from),
    };
    let pins = vec![
        ("cachedContents/c".to_string(), pin(1, "", 60, None)),
        ("files/a".to_string(), pin(0, "cline", 3600, None)),
        ("files/gone".to_string(), pin(0, "cline", 1, None)),
        ("files/removed-token".to_string(), pin(0, "bob", 3600, None)),
        ("files/removed-key".to_string(), pin(9, "cline", 3600, None)),
        (
            "uploads/0f0f".to_string(),
            pin(2, "admin", 3600, Some("/upload/v1beta/files?upload_id=x")),
        ),
    ];
    let file = FileState::build(salt, None, &[], None).with_pins(pin_records(salt, &pins));
    let text = String::from_utf8(file.encode().expect("encodes")).expect("UTF-8");
    assert!(!text.contains("AIza") && !text.contains("cline"), "{text}");
    let back = FileState::decode(text.as_bytes()).expect("decodes");
    let keys: Vec<ApiKey> = (0..3).map(key).collect();
    let later = now + Duration::from_secs(10);
    let got = back.restore_pins(&keys, &["cline".to_string()], later);
    let want: Vec<(String, Pin)> = pins
        .into_iter()
        .filter(|(n, _)| !n.contains("gone") && !n.contains("removed"))
        .collect();
    assert_eq!(got, want);
    // A file without pins is written as before (no `pins` field).
    let bare = FileState::build(salt, None, &[], None);
    let text = String::from_utf8(bare.encode().expect("encodes")).expect("UTF-8");
    assert!(!text.contains("pins"), "{text}");
}

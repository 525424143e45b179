//! Pool behaviour with time as an input: every test passes explicit `Instant`s and never sleeps.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::config::{KeySpec, ModelGlobs, Strategy};

const PRO: &str = "gemini-2.5-pro";
const FLASH: &str = "gemini-2.5-flash";

fn key(i: usize) -> ApiKey {
    ApiKey::new(format!("AIzaFAKE-test-key-{i:022}"))
}

fn spec(i: usize) -> KeySpec {
    KeySpec {
        key: key(i),
        name: None,
        project: None,
        models: None,
        daily_limit: None,
    }
}

fn cfg(keys: Vec<KeySpec>) -> config::Pool {
    config::Pool {
        strategy: Strategy::RoundRobin,
        keys,
        failure_threshold: 3,
        cooldown: Duration::from_secs(60),
        max_attempts: 3,
        retry: config::RetryPolicy::default(),
        upload_group: config::UPLOAD_GROUP,
    }
}

/// Binds `c`, with the test models known (as a config or Google's list would make them).
fn bind(pool: &KeyPool, c: &config::Pool) -> PoolView {
    let view = pool.bind(c);
    view.learn_models([PRO, FLASH, "gemini-2.0-flash"]);
    view
}

fn pool(n: usize) -> (KeyPool, PoolView) {
    let pool = KeyPool::new();
    let view = bind(&pool, &cfg((0..n).map(spec).collect()));
    (pool, view)
}

fn globs(list: &[&str]) -> Option<ModelGlobs> {
    Some(ModelGlobs(
        list.iter()
            .map(|g| glob::Pattern::new(g).expect("test glob"))
            .collect(),
    ))
}

fn pick(view: &PoolView, model: &str, now: Instant) -> Result<usize, NoKey> {
    view.pick(model, now, &[]).map(|l| l.index)
}

/// Picks `n` times and reports success, returning how often each index was used.
fn spread(view: &PoolView, model: &str, now: Instant, n: usize) -> HashMap<usize, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let lease = view.pick(model, now, &[]).expect("a usable key");
        view.report(&lease, &Outcome::Success, now);
        *seen.entry(lease.index).or_default() += 1;
    }
    seen
}

fn rate_limited(secs: u64) -> Outcome {
    Outcome::RateLimited {
        retry_after: Some(Duration::from_secs(secs)),
    }
}

fn no_key(retry_after: Option<u64>) -> NoKey {
    NoKey {
        retry_after: retry_after.map(Duration::from_secs),
        all_daily: false,
        all_disabled: false,
        none_allowed: false,
    }
}

#[test]
fn rotation_is_even_and_per_model() {
    let (_pool, view) = pool(4);
    let t = Instant::now();
    let pro = spread(&view, PRO, t, 400);
    assert_eq!(pro.len(), 4);
    assert!(pro.values().all(|&c| c == 100), "{pro:?}");
    // Flash has its own cursor: its first pick is key 0, whatever pro did.
    assert_eq!(pick(&view, FLASH, t), Ok(0));
    assert_eq!(pick(&view, FLASH, t), Ok(1));
    assert_eq!(pick(&view, PRO, t), Ok(0));
}

#[test]
fn skipping_a_resting_key_keeps_the_spread_even() {
    let (_pool, view) = pool(4);
    let t = Instant::now();
    let lease = view.pick(PRO, t, &[]).expect("key");
    view.report(&lease, &rate_limited(3600), t);
    let seen = spread(&view, PRO, t, 300);
    assert_eq!(seen.get(&lease.index), None);
    assert!(seen.values().all(|&c| c == 100), "{seen:?}");
}

#[test]
fn rate_limited_key_rests_exactly_its_delay() {
    let (_pool, view) = pool(2);
    let t = Instant::now();
    let lease = view.pick(PRO, t, &[]).expect("key");
    assert_eq!(lease.index, 0);
    view.report(&lease, &rate_limited(54), t);
    for s in [0, 1, 30, 53] {
        assert_eq!(
            pick(&view, PRO, t + Duration::from_secs(s)),
            Ok(1),
            "at {s}s"
        );
    }
    // The rest is per model: flash still uses key 0.
    assert_eq!(pick(&view, FLASH, t), Ok(0));
    let back = t + Duration::from_secs(54);
    let seen = spread(&view, PRO, back, 2);
    assert_eq!(seen.get(&0), Some(&1));
}

#[test]
fn rate_limited_without_delay_rests_cooldown() {
    let (_pool, view) = pool(1);
    let t = Instant::now();
    let lease = view.pick(PRO, t, &[]).expect("key");
    view.report(&lease, &Outcome::RateLimited { retry_after: None }, t);
    assert_eq!(
        pick(&view, PRO, t + Duration::from_secs(59)),
        Err(no_key(Some(1)))
    );
    assert_eq!(pick(&view, PRO, t + Duration::from_secs(60)), Ok(0));
}

#[test]
fn a_shorter_delay_does_not_cut_a_longer_rest() {
    let (_pool, view) = pool(1);
    let t = Instant::now();
    let lease = view.pick(PRO, t, &[]).expect("key");
    view.report(&lease, &rate_limited(100), t);
    view.report(&lease, &rate_limited(5), t);
    assert_eq!(
        pick(&view, PRO, t + Duration::from_secs(50)),
        Err(no_key(Some(50)))
    );
}

#[test]
fn invalid_key_is_never_picked_again() {
    let (_pool, view) = pool(3);
    let t = Instant::now();
    let lease = view.pick(PRO, t, &[]).expect("key");
    let reason = "400 INVALID_ARGUMENT (API_KEY_INVALID): API key not valid.".to_string();
    view.report(&lease, &Outcome::KeyInvalid { reason }, t);
    let later = t + Duration::from_secs(86_400 * 30);
    for model in [PRO, FLASH, "gemini-2.0-flash"] {
        let seen = spread(&view, model, later, 20);
        assert_eq!(seen.get(&lease.index), None, "{model}");
    }
    let st = &view.status(later)[lease.index];
    assert!(!st.available);
    assert!(st
        .disabled
        .as_deref()
        .is_some_and(|r| r.contains("API_KEY_INVALID")));
    assert!(!st.masked.contains("test-key"));
}

#[test]
fn failure_threshold_then_rest_then_back() {
    let (_pool, view) = pool(2);
    let t = Instant::now();
    let fail = Outcome::Transient {
        reason: "500 INTERNAL".into(),
    };
    let lease = view.pick(PRO, t, &[]).expect("key");
    view.report(&lease, &fail, t);
    view.report(&lease, &fail, t);
    // A success in between resets the count: two more failures do not reach the threshold.
    view.report(&lease, &Outcome::Success, t);
    view.report(&lease, &fail, t);
    view.report(&lease, &fail, t);
    assert_eq!(view.status(t)[0].models[0].consecutive_failures, 2);
    assert_eq!(pick(&view, PRO, t), Ok(1));
    assert_eq!(
        pick(&view, PRO, t),
        Ok(0),
        "below the threshold the key still serves"
    );
    view.report(&lease, &fail, t);
    let st = &view.status(t)[0].models[0];
    assert_eq!(st.state, "cooling");
    assert_eq!(st.consecutive_failures, 0);
    assert_eq!(st.cooldown_remaining, Some(Duration::from_secs(60)));
    let seen = spread(&view, PRO, t + Duration::from_secs(59), 4);
    assert_eq!(seen.get(&0), None);
    let seen = spread(&view, PRO, t + Duration::from_secs(60), 4);
    assert_eq!(seen.get(&0), Some(&2));
}

#[test]
fn overloaded_and_client_errors_do_not_count() {
    let (_pool, view) = pool(1);
    let t = Instant::now();
    let lease = view.pick(PRO, t, &[]).expect("key");
    for _ in 0..10 {
        view.report(&lease, &Outcome::Overloaded, t);
        view.report(&lease, &Outcome::ClientError, t);
    }
    assert_eq!(pick(&view, PRO, t), Ok(0));
    assert_eq!(view.status(t)[0].failure_count, 0);
}

#[test]
fn exclude_skips_keys_already_tried() {
    let (_pool, view) = pool(3);
    let t = Instant::now();
    for _ in 0..6 {
        let lease = view.pick(PRO, t, &[0, 2]).expect("key 1");
        assert_eq!(lease.index, 1);
    }
    // All excluded and usable: nothing to pick, but nothing is "all out" either.
    assert_eq!(
        view.pick(PRO, t, &[0, 1, 2]).map(|l| l.index),
        Err(no_key(None))
    );
}

#[test]
fn no_key_reports_the_earliest_return() {
    let (_pool, view) = pool(3);
    let t = Instant::now();
    for secs in [30, 10, 20] {
        let lease = view.pick(PRO, t, &[]).expect("key");
        view.report(&lease, &rate_limited(secs), t);
    }
    assert_eq!(
        pick(&view, PRO, t + Duration::from_secs(4)),
        Err(no_key(Some(6)))
    );
    assert_eq!(pick(&view, PRO, t + Duration::from_secs(10)), Ok(1));
}

#[test]
fn no_key_flags() {
    let t = Instant::now();
    let reason = || Outcome::KeyInvalid {
        reason: "403".into(),
    };

    let (_pool, view) = pool(2);
    for _ in 0..2 {
        let lease = view.pick(PRO, t, &[]).expect("key");
        view.report(&lease, &reason(), t);
    }
    let err = pick(&view, PRO, t).expect_err("all disabled");
    assert!(err.all_disabled && !err.all_daily && !err.none_allowed);
    assert_eq!(err.retry_after, None);

    let (_pool, view) = pool(2);
    let a = view.pick(PRO, t, &[]).expect("key");
    let b = view.pick(PRO, t, &[]).expect("key");
    view.report(&a, &reason(), t);
    view.report(&b, &Outcome::NoQuota, t);
    let err = pick(&view, PRO, t).expect_err("out for the day");
    assert!(err.all_daily && !err.all_disabled && !err.none_allowed);
    assert_eq!(err.retry_after, None);
    // limit: 0 is per model.
    assert_eq!(pick(&view, FLASH, t), Ok(1));

    let (_pool, view) = pool(1);
    let a = view.pick(PRO, t, &[]).expect("key");
    view.report(&a, &Outcome::QuotaDaily, t);
    let err = pick(&view, PRO, t).expect_err("daily");
    assert!(err.all_daily);
    assert!(err.retry_after.is_some());
}

#[test]
fn globs_restrict_keys_to_models() {
    let pool = KeyPool::new();
    let mut keys: Vec<KeySpec> = (0..3).map(spec).collect();
    keys[0].models = globs(&["gemini-2.5-*"]);
    keys[1].models = globs(&["gemini-2.0-*"]);
    let view = bind(&pool, &cfg(keys));
    let t = Instant::now();
    let pro = spread(&view, PRO, t, 10);
    assert_eq!(pro.get(&1), None);
    assert_eq!(pro.get(&0), Some(&5));
    let old = spread(&view, "gemini-2.0-flash", t, 10);
    assert_eq!(old.get(&0), None);
    assert_eq!(old.get(&1), Some(&5));

    let mut keys: Vec<KeySpec> = (0..2).map(spec).collect();
    keys[0].models = globs(&["gemini-2.5-*"]);
    keys[1].models = globs(&["gemini-2.5-*"]);
    let view = bind(&pool, &cfg(keys));
    let err = pick(&view, "gemini-1.5-pro", t).expect_err("none allowed");
    assert!(err.none_allowed && !err.all_disabled && !err.all_daily);
}

#[test]
fn state_survives_a_reload_for_keys_that_stay() {
    let pool = KeyPool::new();
    let v1 = bind(&pool, &cfg((0..3).map(spec).collect()));
    let t = Instant::now();
    // Rest key 1 (the second pick) for an hour.
    let _ = v1.pick(PRO, t, &[]).expect("key 0");
    let k1 = v1.pick(PRO, t, &[]).expect("key 1");
    assert_eq!(k1.key, key(1));
    v1.report(&k1, &rate_limited(3600), t);

    // Key 0 removed, key 1 stays (now at index 0), keys 3 and 4 added.
    let v2 = bind(&pool, &cfg(vec![spec(1), spec(2), spec(3), spec(4)]));
    let seen = spread(&v2, PRO, t, 30);
    assert_eq!(seen.get(&0), None, "key 1 still rests after the reload");
    assert_eq!(seen.len(), 3);
    let st = &v2.status(t)[0];
    assert_eq!(st.masked, key(1).masked().to_string());
    assert_eq!(st.models[0].state, "cooling");

    // A lease from the old view still reports into the shared cell.
    let k2_old = v1.pick(FLASH, t, &[2]).expect("key");
    v1.report(&k2_old, &rate_limited(3600), t);
    let flash = spread(&v2, FLASH, t, 9);
    let moved = k2_old.key.clone();
    let idx = (0..v2.len()).find(|&i| v2.status(t)[i].masked == *moved.masked().as_ref());
    if let Some(idx) = idx {
        assert_eq!(flash.get(&idx), None);
    }
    assert_eq!(
        lock(&pool.shared.cells).len(),
        4,
        "removed keys leave the registry"
    );
}

#[test]
fn rotation_continues_across_reloads() {
    let pool = KeyPool::new();
    let v1 = bind(&pool, &cfg((0..4).map(spec).collect()));
    let t = Instant::now();
    assert_eq!(pick(&v1, PRO, t), Ok(0));
    assert_eq!(pick(&v1, PRO, t), Ok(1));
    let v2 = bind(&pool, &cfg((0..4).map(spec).collect()));
    assert_eq!(pick(&v2, PRO, t), Ok(2));
}

#[test]
fn a_reload_forgives_disabled_keys() {
    let pool = KeyPool::new();
    let v1 = bind(&pool, &cfg(vec![spec(0)]));
    let t = Instant::now();
    let lease = v1.pick(PRO, t, &[]).expect("key");
    v1.report(
        &lease,
        &Outcome::KeyInvalid {
            reason: "401".into(),
        },
        t,
    );
    assert!(pick(&v1, PRO, t).is_err());
    let v2 = bind(&pool, &cfg(vec![spec(0)]));
    assert_eq!(pick(&v2, PRO, t), Ok(0));
}

#[test]
fn admin_resets() {
    let (_pool, view) = pool(3);
    let t = Instant::now();
    for _ in 0..3 {
        let lease = view.pick(PRO, t, &[]).expect("key");
        view.report(&lease, &rate_limited(3600), t);
        let lease = view.pick(FLASH, t, &[]).expect("key");
        view.report(&lease, &rate_limited(3600), t);
    }
    assert!(pick(&view, PRO, t).is_err());
    let masked = key(1).masked().to_string();
    assert_eq!(view.reset(Some(&masked), Some(PRO)), 1);
    assert_eq!(pick(&view, PRO, t), Ok(1));
    assert!(pick(&view, FLASH, t).is_err());
    assert_eq!(view.reset(Some("nomatch-at-all"), None), 0);
    assert_eq!(view.reset_all(), 3);
    assert_eq!(spread(&view, FLASH, t, 3).len(), 3);
}

#[test]
fn status_and_health() {
    let (_pool, view) = pool(3);
    let t = Instant::now();
    let before = SystemTime::now();
    assert_eq!(view.available_count(t), 3);
    let lease = view.pick(PRO, t, &[]).expect("key");
    view.report(
        &lease,
        &Outcome::KeyInvalid {
            reason: "403".into(),
        },
        t,
    );
    let lease = view.pick(PRO, t, &[]).expect("key");
    view.report(&lease, &rate_limited(10), t);
    assert_eq!(lease.index, 1);
    // Cooling on one model only: still usable for the other known ones.
    assert_eq!(view.available_count(t), 2);
    assert!(view.status(t)[1].available);
    let lease = view.pick_at(FLASH, Now::at(t), &[0, 2]).expect("key 1");
    view.report(&lease, &rate_limited(10), t);
    let lease = view
        .pick_at("gemini-2.0-flash", Now::at(t), &[0, 2])
        .expect("key 1");
    view.report(&lease, &rate_limited(10), t);
    // Out on every known model.
    assert_eq!(view.available_count(t), 1);
    assert!(!view.status(t)[1].available);
    assert_eq!(view.available_count(t + Duration::from_secs(10)), 2);
    let st = view.status(t);
    assert_eq!(st.len(), 3);
    assert_eq!(st[1].models[0].state, "cooling");
    assert_eq!(st[1].models[0].daily_requests, 1);
    assert_eq!(st[1].models[0].last_error.as_deref(), Some("rate_limited"));
    assert!(st[1].last_used.is_some_and(|u| u >= before));
    assert_eq!(st[0].models[0].state, "disabled");
    assert_eq!(st[2].last_used, None);
}

#[test]
fn picks_stay_cheap_with_ten_thousand_keys() {
    let (_pool, view) = pool(10_000);
    let t = Instant::now();
    // Warm the route, then time picks: O(1) when keys are usable.
    let _ = pick(&view, PRO, t);
    let started = Instant::now();
    for _ in 0..10_000 {
        let lease = view.pick(PRO, t, &[]).expect("key");
        view.report(&lease, &Outcome::Success, t);
    }
    let per_pick = started.elapsed() / 10_000;
    eprintln!("per pick+report: {per_pick:?}");
    assert!(
        per_pick < Duration::from_micros(50),
        "{per_pick:?} per pick"
    );
}

// ---- Phase 2: quota day, projects, least_used, daily_limit, probes ----

/// A fixed starting moment on both clocks; `after` moves both together.
struct Clock {
    t0: Instant,
    w0: SystemTime,
}

impl Clock {
    fn at(rfc3339: &str) -> Clock {
        let ts: jiff::Timestamp = rfc3339.parse().expect("test timestamp");
        Clock {
            t0: Instant::now(),
            w0: SystemTime::from(ts),
        }
    }

    fn after(&self, secs: u64) -> Now {
        let d = Duration::from_secs(secs);
        Now::new(self.t0 + d, self.w0 + d)
    }
}

const HOUR: u64 = 3600;

fn pick_at(view: &PoolView, model: &str, now: Now) -> Result<usize, NoKey> {
    view.pick_at(model, now, &[]).map(|l| l.index)
}

fn check_daily_rest(start: &str, secs_to_midnight: u64) {
    let (_pool, view) = pool(1);
    let clock = Clock::at(start);
    let lease = view.pick_at(PRO, clock.after(0), &[]).expect("key");
    view.report_at(&lease, &Outcome::QuotaDaily, clock.after(0));
    let err = pick_at(&view, PRO, clock.after(0)).expect_err("out for the day");
    assert!(err.all_daily, "{start}");
    assert_eq!(
        err.retry_after,
        Some(Duration::from_secs(secs_to_midnight)),
        "{start}"
    );
    assert!(pick_at(&view, PRO, clock.after(secs_to_midnight - 1)).is_err());
    assert_eq!(
        view.status_at(clock.after(1))[0].models[0].state,
        "exhausted"
    );
    assert_eq!(
        pick_at(&view, PRO, clock.after(secs_to_midnight)),
        Ok(0),
        "{start}"
    );
}

#[test]
fn per_day_quota_lasts_until_midnight_in_los_angeles() {
    check_daily_rest("2026-01-15T20:00:00Z", 12 * HOUR);
    // Spring forward (2026-03-08): the quota day has 23 hours.
    check_daily_rest("2026-03-08T00:30:00-08:00", 22 * HOUR + 1800);
    // Fall back (2026-11-01): 25 hours.
    check_daily_rest("2026-11-01T00:30:00-07:00", 24 * HOUR + 1800);
}

#[test]
fn daily_counters_reset_at_midnight_in_los_angeles() {
    let (_pool, view) = pool(1);
    // 23:58 PDT.
    let clock = Clock::at("2026-07-15T06:58:00Z");
    for _ in 0..3 {
        let lease = view.pick_at(PRO, clock.after(0), &[]).expect("key");
        view.report_at(&lease, &Outcome::Success, clock.after(0));
    }
    assert_eq!(
        view.status_at(clock.after(119))[0].models[0].daily_requests,
        3
    );
    assert_eq!(
        view.status_at(clock.after(120))[0].models[0].daily_requests,
        0
    );
    let _ = view.pick_at(PRO, clock.after(120), &[]).expect("key");
    assert_eq!(
        view.status_at(clock.after(121))[0].models[0].daily_requests,
        1
    );
}

#[test]
fn daily_limit_per_model_until_the_day_ends() {
    let pool = KeyPool::new();
    let mut keys = vec![spec(0)];
    keys[0].daily_limit = Some(2);
    let view = bind(&pool, &cfg(keys));
    // 22:00 PST: two hours left in the quota day.
    let clock = Clock::at("2026-01-16T06:00:00Z");
    assert_eq!(pick_at(&view, PRO, clock.after(0)), Ok(0));
    assert_eq!(pick_at(&view, PRO, clock.after(1)), Ok(0));
    let err = pick_at(&view, PRO, clock.after(2)).expect_err("at the limit");
    assert!(err.all_daily);
    assert_eq!(err.retry_after, Some(Duration::from_secs(2 * HOUR - 2)));
    assert_eq!(
        pick_at(&view, FLASH, clock.after(2)),
        Ok(0),
        "limits are per model"
    );
    assert_eq!(
        view.status_at(clock.after(3))[0].models[0].state,
        "exhausted"
    );
    assert_eq!(pick_at(&view, PRO, clock.after(2 * HOUR)), Ok(0));
}

#[test]
fn a_project_shares_its_quota() {
    let pool = KeyPool::new();
    let mut keys: Vec<KeySpec> = (0..4).map(spec).collect();
    keys[0].project = Some("proj-a".into());
    keys[1].project = Some("proj-a".into());
    keys[2].project = Some("proj-b".into());
    let view = bind(&pool, &cfg(keys));
    let clock = Clock::at("2026-01-15T20:00:00Z");
    let lease = view.pick_at(PRO, clock.after(0), &[]).expect("key");
    assert_eq!(lease.index, 0);
    view.report_at(&lease, &rate_limited(30), clock.after(0));
    let seen = {
        let mut seen = HashMap::new();
        for _ in 0..20 {
            let l = view.pick_at(PRO, clock.after(29), &[]).expect("key");
            view.report_at(&l, &Outcome::Success, clock.after(29));
            *seen.entry(l.index).or_insert(0) += 1;
        }
        seen
    };
    assert_eq!(seen.get(&0), None);
    assert_eq!(seen.get(&1), None, "same project, same bucket");
    assert_eq!(seen.len(), 2);
    // Other models are untouched, and the sibling's own counters too.
    let st = view.status_at(clock.after(1));
    assert_eq!(st[1].models[0].state, "cooling");
    assert_eq!(
        st[1].models[0].cooldown_remaining,
        Some(Duration::from_secs(29))
    );
    assert_eq!(st[1].models[0].daily_requests, 0);
    assert_eq!(
        view.pick_at(FLASH, clock.after(1), &[2, 3])
            .map(|l| l.index),
        Ok(0)
    );
    // Transient failures stay with the key that had them.
    let b = view
        .pick_at(FLASH, clock.after(1), &[0, 2, 3])
        .expect("key 1");
    for _ in 0..3 {
        view.report_at(
            &b,
            &Outcome::Transient {
                reason: "500".into(),
            },
            clock.after(1),
        );
    }
    assert_eq!(
        view.pick_at(FLASH, clock.after(2), &[2, 3])
            .map(|l| l.index),
        Ok(0)
    );

    // A per-day 429 takes the whole project out until midnight, same deadline.
    let lease = view.pick_at(PRO, clock.after(30), &[]).expect("key");
    let lease = if lease.index == 0 {
        lease
    } else {
        view.pick_at(PRO, clock.after(30), &[1, 2, 3])
            .expect("key 0")
    };
    view.report_at(&lease, &Outcome::QuotaDaily, clock.after(30));
    let st = view.status_at(clock.after(30));
    assert_eq!(st[0].models[0].state, "exhausted");
    assert_eq!(st[1].models[0].state, "exhausted");
    assert_eq!(
        st[0].models[0].cooldown_remaining,
        st[1].models[0].cooldown_remaining
    );
}

#[test]
fn least_used_prefers_fewest_requests_today_then_least_recent() {
    let pool = KeyPool::new();
    let mut c = cfg((0..3).map(spec).collect());
    c.strategy = Strategy::LeastUsed;
    let view = bind(&pool, &c);
    let clock = Clock::at("2026-01-15T20:00:00Z");
    let mut order = Vec::new();
    for s in 0..6 {
        let l = view.pick_at(PRO, clock.after(s), &[]).expect("key");
        view.report_at(&l, &Outcome::Success, clock.after(s));
        order.push(l.index);
    }
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    // Key 1 rests while the others serve; back, it gets traffic until it catches up.
    let l = view.pick_at(PRO, clock.after(10), &[0, 2]).expect("key 1");
    view.report_at(&l, &rate_limited(10), clock.after(10));
    for s in 11..15 {
        let l = view.pick_at(PRO, clock.after(s), &[]).expect("key");
        view.report_at(&l, &Outcome::Success, clock.after(s));
    }
    // Counts now: 0 -> 4, 1 -> 3, 2 -> 4.
    let l = view.pick_at(PRO, clock.after(20), &[]).expect("key");
    assert_eq!(l.index, 1);
    view.report_at(&l, &Outcome::Success, clock.after(20));
    // All at 4: the least recently used (key 0 at 13s or earlier) goes first.
    let l = view.pick_at(PRO, clock.after(21), &[]).expect("key");
    let st = view.status_at(clock.after(21));
    assert!(st.iter().all(|k| k.models[0].daily_requests >= 4));
    assert_ne!(l.index, 1);
    // Per model: flash starts from zero on every key.
    assert_eq!(pick_at(&view, FLASH, clock.after(22)), Ok(0));
    // NoKey still explained.
    assert_eq!(
        view.pick_at(PRO, clock.after(22), &[0, 1, 2])
            .map(|l| l.index),
        Err(no_key(None))
    );
}

#[test]
fn a_key_back_from_rest_gets_one_probe_first() {
    let (_pool, view) = pool(2);
    let clock = Clock::at("2026-01-15T20:00:00Z");
    let a = view.pick_at(PRO, clock.after(0), &[]).expect("key 0");
    view.report_at(&a, &rate_limited(10), clock.after(0));
    // Back at 10s: the first request is the probe; while it is in flight the key is skipped.
    let probe = view
        .pick_at(PRO, clock.after(10), &[1])
        .expect("key 0 probe");
    assert_eq!(probe.index, 0);
    for s in 10..14 {
        assert_eq!(pick_at(&view, PRO, clock.after(s)), Ok(1));
    }
    // Only key 0, probing: no key, but no flag claims it is out.
    assert_eq!(
        view.pick_at(PRO, clock.after(14), &[1]).map(|l| l.index),
        Err(no_key(None))
    );
    view.report_at(&probe, &Outcome::Success, clock.after(15));
    let seen = spread(&view, PRO, clock.after(16).instant, 4);
    assert_eq!(seen.get(&0), Some(&2));

    // A failed probe rests again; an abandoned one frees the slot; a lost one times out.
    view.report_at(&a, &rate_limited(10), clock.after(20));
    let probe = view.pick_at(PRO, clock.after(30), &[1]).expect("probe");
    view.report_at(&probe, &rate_limited(10), clock.after(31));
    assert!(view.pick_at(PRO, clock.after(40), &[1]).is_err());
    let probe = view.pick_at(PRO, clock.after(41), &[1]).expect("probe");
    assert!(view.pick_at(PRO, clock.after(42), &[1]).is_err());
    view.abandon(&probe);
    let probe = view
        .pick_at(PRO, clock.after(42), &[1])
        .expect("probe again");
    assert!(view.pick_at(PRO, clock.after(101), &[1]).is_err());
    assert_eq!(
        view.pick_at(PRO, clock.after(102), &[1]).map(|l| l.index),
        Ok(0),
        "an unreported probe stops blocking after a minute"
    );
    drop(probe);
}

#[test]
fn all_daily_counts_disabled_keys_as_gone_too() {
    let (_pool, view) = pool(3);
    let clock = Clock::at("2026-01-15T20:00:00Z");
    let now = clock.after(0);
    let a = view.pick_at(PRO, now, &[]).expect("key");
    view.report_at(
        &a,
        &Outcome::KeyInvalid {
            reason: "401".into(),
        },
        now,
    );
    let b = view.pick_at(PRO, now, &[]).expect("key");
    view.report_at(&b, &Outcome::QuotaDaily, now);
    let c = view.pick_at(PRO, now, &[]).expect("key");
    view.report_at(&c, &rate_limited(5), now);
    let err = pick_at(&view, PRO, now).expect_err("none");
    assert!(!err.all_daily, "one key is back in 5 s");
    assert_eq!(err.retry_after, Some(Duration::from_secs(5)));
    view.report_at(&c, &Outcome::NoQuota, now);
    let err = pick_at(&view, PRO, now).expect_err("none");
    assert!(err.all_daily && !err.all_disabled);
    assert_eq!(err.retry_after, Some(Duration::from_secs(12 * HOUR)));
}

// ---- Explain, token counts, and the tokio paused clock ----

fn states(e: &Explanation) -> Vec<&'static str> {
    e.keys.iter().map(|k| k.verdict.state()).collect()
}

#[test]
fn explain_names_the_next_key_and_why_not_the_others() {
    let pool = KeyPool::new();
    let mut keys: Vec<KeySpec> = (0..8).map(spec).collect();
    keys[5].models = globs(&["gemini-2.0-*"]);
    keys[6].daily_limit = Some(1);
    keys[7].name = Some("spare".into());
    let view = bind(&pool, &cfg(keys));
    let clock = Clock::at("2026-01-15T20:00:00Z");
    let now = clock.after(0);
    let take = |i: usize| {
        let others: Vec<usize> = (0..8).filter(|&j| j != i).collect();
        view.pick_at(PRO, now, &others).expect("that key")
    };
    view.report_at(&take(0), &rate_limited(42), now);
    view.report_at(
        &take(1),
        &Outcome::KeyInvalid {
            reason: "403 PERMISSION_DENIED: Your API key was reported as leaked.".into(),
        },
        now,
    );
    view.report_at(&take(2), &Outcome::QuotaDaily, now);
    view.report_at(&take(3), &Outcome::NoQuota, now);
    // Key 4 rested and is back with its probe in flight; key 6 used its one request today.
    view.report_at(&take(4), &rate_limited(1), now);
    let probe = view.pick_at(PRO, clock.after(1), &[6, 7]).expect("probe");
    assert_eq!(probe.index, 4);
    let six = take(6);
    view.report_at(&six, &Outcome::Success, now);

    let at = clock.after(2);
    let e = view.explain_at(PRO, at);
    assert_eq!(
        states(&e),
        [
            "cooling",
            "disabled",
            "out_for_day",
            "no_quota",
            "probing",
            "not_allowed",
            "daily_limit",
            "next"
        ]
    );
    assert_eq!(e.next, Some(7));
    assert_eq!(
        e.keys[0].verdict,
        Verdict::Out(Why::Cooling {
            left: Duration::from_secs(40),
            last_error: Some("rate_limited".into()),
        })
    );
    assert_eq!(
        e.keys[2].verdict,
        Verdict::Out(Why::OutForDay {
            left: Duration::from_secs(12 * HOUR - 2),
            last_error: Some("quota_daily".into()),
        })
    );
    assert_eq!(
        e.keys[6].verdict,
        Verdict::Out(Why::DailyLimit {
            limit: 1,
            left: Duration::from_secs(12 * HOUR - 2),
        })
    );
    assert!(
        matches!(&e.keys[1].verdict, Verdict::Out(Why::Disabled { reason }) if reason.contains("leaked"))
    );
    assert_eq!(e.keys[6].daily_requests, 1);
    assert_eq!(e.keys[7].name.as_deref(), Some("spare"));
    assert!(e.keys.iter().all(|k| !k.masked.contains("test-key")));
    assert!(e.no_key.is_none());

    // Asking changes nothing: the next pick is the explained one, and asking again agrees.
    assert_eq!(states(&view.explain_at(PRO, at)), states(&e));
    assert_eq!(pick_at(&view, PRO, at), Ok(7));

    // Only key 7 could serve; while it is out too, the answer is what a request would be told.
    view.report_at(&take(7), &rate_limited(5), at);
    let e = view.explain_at(PRO, clock.after(3));
    assert_eq!(e.next, None);
    assert_eq!(
        e.no_key,
        Some(pick_at(&view, PRO, clock.after(3)).expect_err("no key"))
    );
    assert_eq!(
        e.no_key.and_then(|n| n.retry_after),
        Some(Duration::from_secs(4))
    );
    drop(probe);
}

#[test]
fn explain_follows_the_rotation_and_least_used() {
    let (_pool, view) = pool(3);
    let clock = Clock::at("2026-01-15T20:00:00Z");
    for expected in [0, 1, 2, 0] {
        let e = view.explain_at(PRO, clock.after(0));
        assert_eq!(e.next, Some(expected));
        assert_eq!(
            e.keys
                .iter()
                .filter(|k| k.verdict == Verdict::Ready)
                .count(),
            2
        );
        assert_eq!(pick_at(&view, PRO, clock.after(0)), Ok(expected));
    }

    let pool = KeyPool::new();
    let mut c = cfg((0..3).map(spec).collect());
    c.strategy = Strategy::LeastUsed;
    let view = bind(&pool, &c);
    for s in 0..5 {
        let e = view.explain_at(PRO, clock.after(s));
        let next = e.next.expect("a key");
        let l = view.pick_at(PRO, clock.after(s), &[]).expect("key");
        assert_eq!(l.index, next, "at {s}s");
        view.report_at(&l, &Outcome::Success, clock.after(s));
    }
    // A model nobody may serve.
    let pool = KeyPool::new();
    let mut keys = vec![spec(0)];
    keys[0].models = globs(&["gemini-2.0-*"]);
    let view = bind(&pool, &cfg(keys));
    let e = view.explain_at(PRO, clock.after(0));
    assert_eq!(states(&e), ["not_allowed"]);
    assert!(e.no_key.is_some_and(|n| n.none_allowed));
}

#[test]
fn tokens_are_counted_per_key_model_and_token_per_quota_day() {
    let (_pool, view) = pool(2);
    // Client tokens are counted in their own ledger (`usage`), next to the pool.
    let ledger = crate::usage::TokenUsage::default();
    // 23:59 PST.
    let clock = Clock::at("2026-01-16T07:59:00Z");
    let tokens = crate::usage::Tokens {
        prompt: 100,
        completion: 20,
        thoughts: 7,
    };
    for _ in 0..2 {
        let l = view.pick_at(PRO, clock.after(0), &[1]).expect("key 0");
        view.report_at(&l, &Outcome::Success, clock.after(0));
        view.record_tokens_at(&l, Some(tokens), clock.after(0));
        ledger.record_at(Some("cline"), tokens, clock.after(0).wall);
    }
    let l = view.pick_at(FLASH, clock.after(0), &[1]).expect("key 0");
    view.record_tokens_at(&l, None, clock.after(0));
    ledger.record_at(None, Tokens::default(), clock.after(0).wall);

    let st = view.status_at(clock.after(1));
    let pro = st[0].models.iter().find(|m| m.model == PRO).expect("pro");
    assert_eq!(
        (
            pro.daily_requests,
            pro.prompt_tokens,
            pro.completion_tokens,
            pro.thoughts_tokens
        ),
        (2, 200, 40, 14)
    );
    let flash = st[0]
        .models
        .iter()
        .find(|m| m.model == FLASH)
        .expect("flash");
    assert_eq!((flash.daily_requests, flash.prompt_tokens), (1, 0));
    assert!(st[1].models.is_empty());

    let day = ledger.snapshot_at(clock.after(1).wall);
    let names: Vec<(&str, u64, u64)> = day
        .iter()
        .map(|(n, t)| (n.as_str(), t.requests, t.prompt_tokens))
        .collect();
    assert_eq!(names, [(crate::usage::OPEN, 1, 0), ("cline", 2, 200)]);

    // Midnight in Los Angeles: every daily count starts over.
    let st = view.status_at(clock.after(60));
    let pro = st[0].models.iter().find(|m| m.model == PRO).expect("pro");
    assert_eq!((pro.daily_requests, pro.prompt_tokens), (0, 0));
    assert!(ledger.snapshot_at(clock.after(60).wall).is_empty());
}

/// The whole chain on tokio's paused clock: Google's per-minute 429 body, classified, rests the
/// key exactly as long as its RetryInfo says (54 s), then one probe, then full traffic.
#[tokio::test(start_paused = true)]
async fn retry_info_rest_on_the_paused_clock() {
    let (_pool, view) = pool(2);
    let body = include_str!("../../tests/fixtures/google/429_per_minute_free.json");
    let now = || tokio::time::Instant::now().into_std();
    let lease = view.pick(PRO, now(), &[1]).expect("key 0");
    view.report(
        &lease,
        &crate::classify::classify(429, body.as_bytes()),
        now(),
    );
    tokio::time::advance(Duration::from_millis(53_999)).await;
    assert_eq!(pick(&view, PRO, now()), Ok(1));
    let err = view.pick(PRO, now(), &[1]).expect_err("key 0 still rests");
    assert_eq!(err.retry_after, Some(Duration::from_millis(1)));
    tokio::time::advance(Duration::from_millis(1)).await;
    let probe = view.pick(PRO, now(), &[1]).expect("key 0 is back");
    assert_eq!(probe.index, 0);
    assert_eq!(
        view.explain_at(PRO, Now::at(now())).keys[0].verdict.state(),
        "probing"
    );
    view.report(&probe, &Outcome::Success, now());
    let seen = spread(&view, PRO, now(), 4);
    assert_eq!(seen.get(&0), Some(&2));
}

// ---------------------------------------------------------------------------------------------
// Client-chosen model names (issue #14 item 2) and stream outcomes (item 5)

fn not_found_names(view: &PoolView, n: usize, now: Now) {
    for i in 0..n {
        let junk = format!("junk-model-{i}");
        let lease = view
            .pick_at(&junk, now, &[])
            .expect("a key for an unknown name");
        view.report_at(&lease, &Outcome::ClientError, now);
    }
}

#[test]
fn junk_names_answered_not_found_leave_no_state() {
    let (pool, view) = pool(2);
    let clock = Clock::at("2026-01-15T20:00:00Z");
    not_found_names(&view, 10_000, clock.after(0));
    for key in view.status_at(clock.after(0)) {
        assert!(key.models.is_empty(), "junk names got entries: {key:?}");
        assert!(key.available);
    }
    let known = pool.known_models();
    assert!(!known.is_model("junk-model-1") && !known.is_label("junk-model-1"));
    assert!(
        read(&view.routes).len() <= 3,
        "junk names were routed for good"
    );
    assert!(
        lock(&pool.shared.cursors).len() <= 3,
        "junk names got cursors"
    );
}

#[test]
fn an_unknown_name_counts_once_google_confirms_it() {
    let pool = KeyPool::new();
    let mut keys = vec![spec(0)];
    keys[0].daily_limit = Some(2);
    let view = bind(&pool, &cfg(keys));
    let clock = Clock::at("2026-01-15T20:00:00Z");
    let model = "gemini-new-model";
    let lease = view.pick_at(model, clock.after(0), &[]).expect("key");
    let again = lease.clone();
    view.report_at(&lease, &Outcome::Success, clock.after(0));
    // Reported twice through clones (a buffered body's in-band error): counted once.
    view.report_at(&again, &Outcome::ClientError, clock.after(0));
    assert!(pool.known_models().is_model(model));
    let st = view.status_at(clock.after(0));
    assert_eq!(st[0].models.len(), 1);
    assert_eq!(st[0].models[0].daily_requests, 1);
    // Known now: counted at lease time, and the limit holds.
    assert_eq!(pick_at(&view, model, clock.after(1)), Ok(0));
    assert!(pick_at(&view, model, clock.after(2)).is_err());
}

#[test]
fn a_stream_answered_at_its_headers_counts_once_and_fails_at_its_end() {
    let pool = KeyPool::new();
    let mut c = cfg(vec![spec(0), spec(1)]);
    c.failure_threshold = 2;
    let view = pool.bind(&c);
    let t = Instant::now();
    let model = "gemini-streamed";
    for _ in 0..2 {
        let lease = view.pick_at(model, Now::at(t), &[1]).expect("key 0");
        view.answered(&lease);
        view.report(
            &lease,
            &Outcome::Transient {
                reason: "reset".into(),
            },
            t,
        );
    }
    let st = view.status(t);
    let m = &st[0].models[0];
    assert_eq!((m.model.as_str(), m.state), (model, "cooling"));
    assert_eq!(m.daily_requests, 2);
    assert_eq!(
        pick(&view, model, t),
        Ok(1),
        "rested after two broken streams"
    );
}

#[test]
fn entries_holding_todays_counts_are_never_recycled() {
    let pool = KeyPool::new();
    let mut keys = vec![spec(0)];
    keys[0].daily_limit = Some(2);
    let view = bind(&pool, &cfg(keys));
    let clock = Clock::at("2026-01-15T20:00:00Z");
    for s in 0..2 {
        let lease = view.pick_at(PRO, clock.after(s), &[]).expect("key");
        view.report_at(&lease, &Outcome::Success, clock.after(s));
    }
    // 70 other real models (confirmed by Google), each used once today: the table fills, and
    // the last ones share the overflow entry, whose daily limit is theirs together.
    let mut served = 0;
    for i in 0..70 {
        let name = format!("gemini-real-{i}");
        if let Ok(lease) = view.pick_at(&name, clock.after(3), &[]) {
            view.report_at(&lease, &Outcome::Success, clock.after(3));
            served += 1;
        }
    }
    assert_eq!(served, MAX_MODELS_FOR_TESTS - 1 + 2);
    assert!(
        pick_at(&view, PRO, clock.after(4)).is_err(),
        "PRO's daily count was evicted"
    );
    let st = view.status_at(clock.after(4));
    assert_eq!(st[0].models.len(), MAX_MODELS_FOR_TESTS + 1);
    assert_eq!(st[0].models[0].model, PRO);
    assert_eq!(st[0].models[0].daily_requests, 2);
    let other = st[0]
        .models
        .iter()
        .find(|m| m.model == cell::OVERFLOW)
        .expect("the overflow entry");
    assert_eq!((other.daily_requests, other.state), (2, "exhausted"));
    assert!(pick_at(&view, "gemini-real-69", clock.after(5)).is_err());
    // The next quota day, yesterday's entries are recycled again.
    let day2 = clock.after(24 * HOUR);
    let lease = view
        .pick_at("gemini-real-69", day2, &[])
        .expect("a new day");
    view.report_at(&lease, &Outcome::Success, day2);
    let st = view.status_at(day2);
    assert!(st[0].models.iter().any(|m| m.model == "gemini-real-69"));
    assert!(st[0].models.iter().all(|m| m.model != cell::OVERFLOW));
}

const MAX_MODELS_FOR_TESTS: usize = 64;

#[test]
fn health_count_is_cached_for_a_second() {
    let (_pool, view) = pool(2);
    let t = Instant::now();
    assert_eq!(view.health_count(t), 2);
    let lease = view.pick(PRO, t, &[]).expect("key");
    view.report(&lease, &Outcome::KeyInvalid { reason: "x".into() }, t);
    assert_eq!(
        view.health_count(t + Duration::from_millis(500)),
        2,
        "cached"
    );
    assert_eq!(
        view.health_count(t + Duration::from_secs(1)),
        1,
        "recomputed"
    );
}

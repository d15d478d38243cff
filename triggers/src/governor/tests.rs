//! Table tests of the governor: each case is a script of timed steps with the decision expected
//! at every step, on an injected clock.

use std::time::Duration;

use super::*;

const MS: u64 = 1_000_000;

#[derive(Clone, Copy, Debug)]
enum Step {
    /// At this ms, a trigger (source, signature) expecting this outcome.
    Fire(u64, Source, &'static str, Want),
    /// At this ms, a trigger the kernel already froze for.
    Frozen(u64, &'static str, Want),
    /// At this ms, the pending snapshot finished (frozen then).
    Finish(u64),
    /// At this ms, a manual freeze.
    Manual(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Admitted as snapshot number N (ids are "s1", "s2", ...).
    Admit(u32),
    /// Joined snapshot N.
    Join(u32),
    /// Suppressed for this reason, retry hint in ms.
    Sup(SuppressReason, u64),
}

use Source::*;
use Step::*;
use SuppressReason::*;
use Want::*;

fn config() -> GovernorConfig {
    GovernorConfig {
        cooldown: Duration::from_millis(1000),
        host_budget: Budget {
            burst: 3,
            per_minute: 6,
        },
        source_budget: Budget {
            burst: 2,
            per_minute: 6,
        },
        dedupe_window: Duration::from_millis(5000),
        default_post: Duration::from_millis(0),
        max_post: Duration::from_millis(500),
        min_prefill: Duration::from_millis(100),
    }
}

fn run(name: &str, config: GovernorConfig, steps: &[Step]) -> Governor {
    let mut n = 0;
    let mut g = Governor::new(config, 0, move || {
        n += 1;
        format!("s{n}")
    });
    for (i, step) in steps.iter().enumerate() {
        let (at, t, want) = match *step {
            Fire(at, src, sig, want) => (at, Trigger::new(src, "why", sig), want),
            Frozen(at, sig, want) => {
                let mut t = Trigger::new(Rule, "why", sig);
                t.already_frozen = true;
                (at, t, want)
            }
            Finish(at) => {
                let id = g.pending().expect("a pending snapshot").to_owned();
                g.finished(&id, at * MS);
                continue;
            }
            Manual(at) => {
                g.note_freeze(at * MS);
                continue;
            }
        };
        let got = g.decide(at * MS, &t);
        let want = match want {
            Admit(n) => Decision::Admitted {
                snapshot_id: format!("s{n}"),
                post_ms: 0,
            },
            Join(n) => Decision::Joined {
                snapshot_id: format!("s{n}"),
            },
            Sup(reason, retry_after_ms) => Decision::Suppressed {
                reason,
                retry_after_ms,
            },
        };
        assert_eq!(got, want, "{name}: step {i} {step:?}");
    }
    g
}

#[test]
fn decisions() {
    let cases: &[(&str, GovernorConfig, &[Step])] = &[
        (
            "prefill before the rings recorded long enough",
            config(),
            &[
                Fire(50, Hook, "a", Sup(Prefill, 50)),
                Fire(100, Hook, "a", Admit(1)),
            ],
        ),
        (
            "coalescing: triggers during a snapshot join it, whatever their source",
            config(),
            &[
                Fire(200, Hook, "a", Admit(1)),
                Fire(201, Rule, "b", Join(1)),
                Fire(202, Cli, "c", Join(1)),
                Fire(203, Hook, "a", Join(1)),
                Finish(210),
                Fire(211, Hook, "d", Sup(Cooldown, 989)),
            ],
        ),
        (
            "cooldown counts from the admission",
            config(),
            &[
                Fire(200, Hook, "a", Admit(1)),
                Finish(300),
                Fire(1199, Hook, "b", Sup(Cooldown, 1)),
                Fire(1200, Hook, "b", Admit(2)),
            ],
        ),
        (
            "dedupe by signature, other signatures pass",
            config(),
            &[
                Fire(200, Hook, "/slow", Admit(1)),
                Finish(300),
                Fire(1500, Hook, "/slow", Sup(Duplicate, 3700)),
                Fire(1500, Cli, "/other", Admit(2)),
                Finish(1600),
                Fire(5200, Hook, "/slow", Admit(3)),
            ],
        ),
        (
            "prefill counts from the last freeze, manual ones included",
            config(),
            &[
                Fire(200, Hook, "a", Admit(1)),
                Finish(250),
                Manual(1250),
                Fire(1300, Hook, "b", Sup(Prefill, 50)),
                Fire(1350, Hook, "b", Admit(2)),
            ],
        ),
        (
            "a kernel-frozen trigger skips the prefill check",
            config(),
            &[Frozen(10, "rule:slow:app", Admit(1))],
        ),
        (
            "source budget: burst 2, then one token per 10 s",
            GovernorConfig {
                cooldown: Duration::from_millis(0),
                ..config()
            },
            &[
                Fire(200, Hook, "a", Admit(1)),
                Finish(200),
                Fire(400, Hook, "b", Admit(2)),
                Finish(400),
                Fire(600, Hook, "c", Sup(SourceBudget, 9600)),
                // Another source has its own bucket.
                Fire(600, Cli, "c", Admit(3)),
                Finish(600),
                Fire(10_200, Hook, "c", Admit(4)),
            ],
        ),
        (
            "host budget across sources; a refused host token does not spend the source's",
            GovernorConfig {
                cooldown: Duration::from_millis(0),
                host_budget: Budget {
                    burst: 2,
                    per_minute: 0,
                },
                ..config()
            },
            &[
                Fire(200, Hook, "a", Admit(1)),
                Finish(200),
                Fire(400, Rule, "b", Admit(2)),
                Finish(400),
                Fire(600, Cli, "c", Sup(HostBudget, u64::MAX)),
                Fire(800, Cli, "d", Sup(HostBudget, u64::MAX)),
            ],
        ),
    ];
    for (name, config, steps) in cases {
        run(name, config.clone(), steps);
    }
}

#[test]
fn counters_by_reason_and_source() {
    let g = run(
        "counters",
        config(),
        &[
            Fire(50, Hook, "a", Sup(Prefill, 50)),
            Fire(200, Hook, "a", Admit(1)),
            Fire(201, Rule, "b", Join(1)),
            Finish(300),
            Fire(400, Hook, "a", Sup(Cooldown, 800)),
            Fire(1300, Hook, "a", Sup(Duplicate, 3900)),
        ],
    );
    let c = g.counters();
    assert_eq!((c.admitted, c.coalesced), (1, 1));
    let sup: Vec<(&str, u64)> = c.suppressed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(sup, [("cooldown", 1), ("duplicate", 1), ("prefill", 1)]);
    assert_eq!(c.by_source["hook"].admitted, 1);
    assert_eq!(c.by_source["hook"].suppressed.values().sum::<u64>(), 3);
    assert_eq!(c.by_source["rule"].coalesced, 1);
}

#[test]
fn post_window_defaults_and_clamps() {
    let mut g = Governor::new(
        GovernorConfig {
            default_post: Duration::from_millis(100),
            cooldown: Duration::from_millis(0),
            ..config()
        },
        0,
        || "x".into(),
    );
    let mut t = Trigger::new(Hook, "why", "a");
    let post = |d: Decision| match d {
        Decision::Admitted { post_ms, .. } => post_ms,
        other => panic!("{other:?}"),
    };
    assert_eq!(post(g.decide(1000 * MS, &t)), 100);
    g.finished("x", 1000 * MS);
    t.signature = "b".into();
    t.post_ms = Some(10_000);
    assert_eq!(post(g.decide(2000 * MS, &t)), 500);
}

#[test]
fn a_flood_admits_exactly_the_budget() {
    // 10 000 distinct triggers within one second, each snapshot finishing at once: with no
    // cooldown, exactly the source burst gets through.
    let mut g = Governor::new(
        GovernorConfig {
            cooldown: Duration::from_millis(0),
            min_prefill: Duration::from_millis(0),
            ..config()
        },
        0,
        || "s".into(),
    );
    let mut admitted = 0;
    for i in 0..10_000u64 {
        let t = Trigger::new(Hook, "why", format!("/p{i}"));
        if let Decision::Admitted { .. } = g.decide(i * 100_000, &t) {
            admitted += 1;
            g.finished("s", i * 100_000);
        }
    }
    assert_eq!(admitted, 2);
    assert_eq!(g.counters().suppressed["source_budget"], 9998);
}

use super::*;
use crate::energy::{counter_delta, parse_stat_cpu_seconds};

fn record(at_ms: i64, model: &str, energy: Option<Energy>) -> UsageRecord {
    UsageRecord {
        at_ms,
        model: model.to_owned(),
        client: "cli".to_owned(),
        prompt_tokens: Some(10),
        completion_tokens: Some(5),
        load_ms: 100,
        prompt_ms: 20,
        generation_ms: 40,
        energy,
        remote: None,
    }
}

#[test]
fn round_trip() {
    let home = tempfile::tempdir().unwrap();
    let l = Ledger::open(home.path()).unwrap();
    let e = Energy {
        joules: 1.5,
        source: EnergySource::EstimatedCpuTime,
    };
    let r = record(now_ms(), "smollm2", Some(e));
    l.record(&r).unwrap();
    l.record(&record(now_ms(), "other", None)).unwrap();
    drop(l);
    let l = Ledger::open_existing(home.path()).unwrap().unwrap();
    let rows = l.records(None).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], r);
    assert_eq!(rows[1].energy, None);
    l.check_integrity().unwrap();
    let mode: String = l
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn remote_answers_are_marked_and_grouped_apart() {
    let home = tempfile::tempdir().unwrap();
    let l = Ledger::open(home.path()).unwrap();
    let at = now_ms();
    l.record(&record(at, "big", None)).unwrap();
    let remote = UsageRecord {
        remote: Some("gpu-box:8000".to_owned()),
        ..record(at, "big", None)
    };
    l.record(&remote).unwrap();
    assert_eq!(l.records(None).unwrap()[1], remote);
    let g = l.groups(None).unwrap();
    assert_eq!(g.len(), 2, "{g:?}");
    assert_eq!(g[0].remote, None);
    assert_eq!(g[1].remote.as_deref(), Some("gpu-box:8000"));
    assert_eq!((g[1].requests, g[1].prompt_tokens), (1, 10));
}

/// A ledger as hearth wrote it before remote answers existed.
fn version_1_ledger(home: &Path) {
    let c = Connection::open(Ledger::path_in(home)).unwrap();
    c.execute_batch(SCHEMA_V1).unwrap();
    c.pragma_update(None, "user_version", 1).unwrap();
    c.execute(
        "INSERT INTO requests (at_ms, model, client, prompt_tokens, completion_tokens, \
         load_ms, prompt_ms, generation_ms) VALUES (?1, 'old', 'cli', 3, 4, 0, 1, 2)",
        params![now_ms()],
    )
    .unwrap();
}

#[test]
fn a_version_1_ledger_is_read_as_it_is_and_migrated_when_written() {
    let home = tempfile::tempdir().unwrap();
    version_1_ledger(home.path());
    // Reading changes nothing and needs no new column.
    let l = Ledger::open_existing(home.path()).unwrap().unwrap();
    let rows = l.records(None).unwrap();
    assert_eq!((rows.len(), rows[0].remote.clone()), (1, None));
    assert_eq!(l.groups(None).unwrap()[0].remote, None);
    drop(l);
    let c = Connection::open(Ledger::path_in(home.path())).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 1);
    drop(c);
    // Writing brings it to version 2 and keeps the old rows.
    let l = Ledger::open(home.path()).unwrap();
    l.record(&UsageRecord {
        remote: Some("h:1".into()),
        ..record(now_ms(), "big", None)
    })
    .unwrap();
    let rows = l.records(None).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].model, "old");
    // A version 1 row was computed here: its counts were known and stay so.
    assert_eq!(
        (rows[0].prompt_tokens, rows[0].completion_tokens),
        (Some(3), Some(4))
    );
    assert_eq!(rows[1].remote.as_deref(), Some("h:1"));
    let v: i64 = l
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

/// A ledger as hearth wrote it before unknown counts existed: a local row, a remote answer
/// with its usage and one without (recorded then as 0 and 0).
fn version_2_ledger(home: &Path) {
    let c = Connection::open(Ledger::path_in(home)).unwrap();
    c.execute_batch(SCHEMA_V1).unwrap();
    c.execute_batch(SCHEMA_V2).unwrap();
    c.pragma_update(None, "user_version", 2).unwrap();
    for (model, prompt, completion, remote) in [
        ("local", 3, 4, None),
        ("big", 11, 3, Some("gpu-box:8000")),
        ("big", 0, 0, Some("gpu-box:8000")),
    ] {
        c.execute(
            "INSERT INTO requests (at_ms, model, client, prompt_tokens, completion_tokens, \
             load_ms, prompt_ms, generation_ms, remote_host) \
             VALUES (?1, ?2, 'openai', ?3, ?4, 0, 1, 2, ?5)",
            params![now_ms(), model, prompt, completion, remote],
        )
        .unwrap();
    }
}

/// Every file in `home` with its bytes: what a read must leave as it was.
fn snapshot(home: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(home)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn user_version(home: &Path) -> i64 {
    let c = Connection::open(Ledger::path_in(home)).unwrap();
    c.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_version_2_ledger_is_read_without_change_and_its_unreported_remote_rows_are_unknown() {
    let home = tempfile::tempdir().unwrap();
    version_2_ledger(home.path());
    let before = snapshot(home.path());
    let l = Ledger::open_existing(home.path()).unwrap().unwrap();
    let rows = l.records(None).unwrap();
    let counts: Vec<_> = rows
        .iter()
        .map(|r| (r.prompt_tokens, r.completion_tokens))
        .collect();
    assert_eq!(
        counts,
        [(Some(3), Some(4)), (Some(11), Some(3)), (None, None)]
    );
    let g = l.groups(None).unwrap();
    assert_eq!(g.len(), 2, "{g:?}");
    assert_eq!(
        (g[0].model.as_str(), g[0].unknown_token_requests),
        ("big", 1)
    );
    assert_eq!((g[0].requests, g[0].prompt_tokens), (2, 11));
    assert_eq!(
        (g[1].model.as_str(), g[1].unknown_token_requests),
        ("local", 0)
    );
    drop(l);
    assert_eq!(snapshot(home.path()), before, "reading wrote to the ledger");
    assert_eq!(user_version(home.path()), 2);
}

#[test]
fn a_version_2_ledger_is_migrated_when_written_keeping_every_row() {
    let home = tempfile::tempdir().unwrap();
    version_2_ledger(home.path());
    let read_before = Ledger::open_existing(home.path())
        .unwrap()
        .unwrap()
        .records(None)
        .unwrap();
    let l = Ledger::open(home.path()).unwrap();
    assert_eq!(user_version(home.path()), SCHEMA_VERSION);
    // The migration says of the old rows what reading them unmigrated said.
    assert_eq!(l.records(None).unwrap(), read_before);
    // The 0s are still there, beside the new column.
    let raw: Vec<(i64, i64, i64)> = l
        .conn
        .prepare(
            "SELECT prompt_tokens, completion_tokens, tokens_unknown FROM requests ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(raw, [(3, 4, 0), (11, 3, 0), (0, 0, 3)]);
    l.record(&UsageRecord {
        prompt_tokens: None,
        completion_tokens: None,
        remote: Some("gpu-box:8000".into()),
        ..record(now_ms(), "big", None)
    })
    .unwrap();
    let g = l.groups(None).unwrap();
    assert_eq!((g[0].requests, g[0].unknown_token_requests), (3, 2));
    drop(l);
    // Opening again migrates nothing twice.
    let l = Ledger::open(home.path()).unwrap();
    assert_eq!(l.count().unwrap(), 4);
    l.check_integrity().unwrap();
}

#[test]
fn a_version_1_ledger_is_read_without_change() {
    let home = tempfile::tempdir().unwrap();
    version_1_ledger(home.path());
    let before = snapshot(home.path());
    let l = Ledger::open_existing(home.path()).unwrap().unwrap();
    let r = &l.records(None).unwrap()[0];
    assert_eq!((r.prompt_tokens, r.completion_tokens), (Some(3), Some(4)));
    assert_eq!(l.groups(None).unwrap()[0].unknown_token_requests, 0);
    drop(l);
    assert_eq!(snapshot(home.path()), before, "reading wrote to the ledger");
}

#[test]
fn unknown_counts_round_trip_and_are_counted_apart() {
    let home = tempfile::tempdir().unwrap();
    let l = Ledger::open(home.path()).unwrap();
    let at = now_ms();
    let remote = |prompt, completion| UsageRecord {
        prompt_tokens: prompt,
        completion_tokens: completion,
        remote: Some("h:1".into()),
        ..record(at, "big", None)
    };
    let written = [
        remote(Some(10), Some(5)),
        remote(None, None),
        remote(Some(7), None),
        remote(None, Some(2)),
        // Known zeros are not unknown.
        remote(Some(0), Some(0)),
    ];
    for r in &written {
        l.record(r).unwrap();
    }
    assert_eq!(l.records(None).unwrap(), written);
    let g = l.groups(None).unwrap();
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0].requests, 5);
    assert_eq!(g[0].unknown_token_requests, 3);
    // Sums of what is known: lower bounds.
    assert_eq!((g[0].prompt_tokens, g[0].completion_tokens), (17, 7));
    // Local rows beside them stay fully known.
    l.record(&record(at, "big", None)).unwrap();
    let g = l.groups(None).unwrap();
    assert_eq!(g.len(), 2);
    let local = g.iter().find(|g| g.remote.is_none()).unwrap();
    assert_eq!(local.unknown_token_requests, 0);
}

#[test]
fn no_ledger_means_none_and_nothing_written() {
    let home = tempfile::tempdir().unwrap();
    assert!(Ledger::open_existing(home.path()).unwrap().is_none());
    assert!(std::fs::read_dir(home.path()).unwrap().next().is_none());
}

#[test]
fn groups_by_day_and_model_with_since() {
    let home = tempfile::tempdir().unwrap();
    let l = Ledger::open(home.path()).unwrap();
    // Noon UTC keeps the local day the same in every time zone from UTC-11 to UTC+11.
    let day = |d: &str| {
        NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    };
    let measured = Some(Energy {
        joules: 3.0,
        source: EnergySource::MeasuredRapl,
    });
    let estimated = Some(Energy {
        joules: 2.0,
        source: EnergySource::EstimatedCpuTime,
    });
    l.record(&record(day("2026-01-01"), "a", measured)).unwrap();
    l.record(&record(day("2026-01-01"), "a", estimated))
        .unwrap();
    l.record(&record(day("2026-01-01"), "b", None)).unwrap();
    l.record(&record(day("2026-01-03"), "a", estimated))
        .unwrap();
    let all = l.groups(None).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].day, "2026-01-01");
    assert_eq!(all[0].model, "a");
    assert_eq!(all[0].requests, 2);
    assert_eq!(all[0].prompt_tokens, 20);
    assert_eq!(all[0].completion_tokens, 10);
    assert_eq!(all[0].measured_joules, 3.0);
    assert_eq!(all[0].estimated_joules, 2.0);
    assert_eq!(all[0].unmetered_requests, 0);
    assert_eq!(all[1].model, "b");
    assert_eq!(all[1].unmetered_requests, 1);
    let since = NaiveDate::from_ymd_opt(2026, 1, 2);
    let later = l.groups(since).unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].day, "2026-01-03");
    assert_eq!(l.records(since).unwrap().len(), 1);
}

#[test]
fn corrupt_file_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        Ledger::path_in(home.path()),
        "this is not a database at all, just text ".repeat(200),
    )
    .unwrap();
    let err = Ledger::open(home.path()).err().unwrap();
    assert!(matches!(err, LedgerError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("move it aside"), "{err}");
    let err = Ledger::open_existing(home.path()).err().unwrap();
    assert!(matches!(err, LedgerError::Corrupt { .. }), "{err:?}");
}

#[test]
fn locked_ledger_fails_fast() {
    let home = tempfile::tempdir().unwrap();
    let l = Ledger::open(home.path()).unwrap();
    let other = Connection::open(Ledger::path_in(home.path())).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let t = std::time::Instant::now();
    let err = l.record(&record(now_ms(), "m", None)).err().unwrap();
    assert!(matches!(err, LedgerError::Locked { .. }), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    other.execute_batch("COMMIT").unwrap();
    l.record(&record(now_ms(), "m", None)).unwrap();
    assert_eq!(l.count().unwrap(), 1);
}

#[test]
fn newer_schema_is_refused() {
    let home = tempfile::tempdir().unwrap();
    drop(Ledger::open(home.path()).unwrap());
    let c = Connection::open(Ledger::path_in(home.path())).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let err = Ledger::open(home.path()).err().unwrap();
    assert!(matches!(err, LedgerError::NewerSchema { found: 99, .. }));
    assert!(err.to_string().contains("update hearth"));
    // Reading it is refused too, rather than misreading columns it does not know.
    let err = Ledger::open_existing(home.path()).err().unwrap();
    assert!(matches!(err, LedgerError::NewerSchema { found: 99, .. }));
    // The next version is already too new.
    let c = Connection::open(Ledger::path_in(home.path())).unwrap();
    c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(c);
    assert!(matches!(
        Ledger::open_existing(home.path()).err().unwrap(),
        LedgerError::NewerSchema { .. }
    ));
}

#[test]
fn settings_defaults_file_and_errors() {
    let home = tempfile::tempdir().unwrap();
    let s = Settings::load(home.path()).unwrap();
    assert_eq!(s, Settings::default());
    assert!(s.ledger);
    std::fs::write(
        Settings::path_in(home.path()),
        "ledger = false\nprice_per_kwh = 0.25\ncurrency = \"EUR\"\nbind = \"x\"\n",
    )
    .unwrap();
    let s = Settings::load(home.path()).unwrap();
    assert!(!s.ledger);
    assert_eq!(s.price_per_kwh, 0.25);
    assert_eq!(s.currency, "EUR");
    assert_eq!(s.cpu_watts, Settings::default().cpu_watts);
    std::fs::write(Settings::path_in(home.path()), "cpu_watts = -3\n").unwrap();
    let err = Settings::load(home.path()).unwrap_err().to_string();
    assert!(
        err.contains("cpu_watts") && err.contains("config.toml"),
        "{err}"
    );
    std::fs::write(Settings::path_in(home.path()), "ledger = maybe\n").unwrap();
    let err = Settings::load(home.path()).unwrap_err().to_string();
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn upstream_tables_are_read_and_checked() {
    let s = Settings::parse(
        "[[upstream]]\nname = \"big\"\nurl = \"http://gpu-box:8000/v1\"\nkey_env = \"VLLM_KEY\"\n\
         [[upstream]]\nname = \"other\"\nurl = \"https://h/v1\"\nca_file = \"ca.pem\"\n",
    )
    .unwrap();
    assert_eq!(
        s.upstreams,
        vec![
            UpstreamSetting {
                name: "big".into(),
                url: "http://gpu-box:8000/v1".into(),
                key_env: Some("VLLM_KEY".into()),
                ca_file: None,
            },
            UpstreamSetting {
                name: "other".into(),
                url: "https://h/v1".into(),
                key_env: None,
                ca_file: Some("ca.pem".into()),
            },
        ]
    );
    let err = Settings::parse("[[upstream]]\nname = \"big\"\nurl = \"\"\n").unwrap_err();
    assert!(
        err.contains("[[upstream]] number 1") && err.contains("url"),
        "{err}"
    );
    let err =
        Settings::parse("[[upstream]]\nname = \"b\"\nurl = \"http://h\"\nkey_env = \"A-B\"\n")
            .unwrap_err();
    assert!(err.contains("key_env"), "{err}");
    // A key written into the file is refused rather than silently ignored.
    let err = Settings::parse("[[upstream]]\nname = \"b\"\nurl = \"http://h\"\nkey = \"k\"\n")
        .unwrap_err();
    assert!(err.contains("key"), "{err}");
}

#[test]
fn shipped_prices_parse_and_user_table_wins() {
    let t = PriceTable::shipped();
    assert_eq!(t.origin, "shipped");
    assert!(!t.models.is_empty());
    assert!(t.note.contains("Reference"));
    let home = tempfile::tempdir().unwrap();
    assert_eq!(PriceTable::load(home.path()).unwrap().models, t.models);
    std::fs::write(
        PriceTable::path_in(home.path()),
        r#"{"note":"mine","currency":"USD","models":[{"model":"x","provider":"p",
            "input_per_million":1.0,"output_per_million":2.0,"as_of":"2026-01-01","source":"me"}]}"#,
    )
    .unwrap();
    let mine = PriceTable::load(home.path()).unwrap();
    assert_eq!(mine.models.len(), 1);
    assert!((mine.models[0].cost(1_000_000, 500_000) - 2.0).abs() < 1e-12);
    std::fs::write(PriceTable::path_in(home.path()), "{}").unwrap();
    let err = PriceTable::load(home.path()).unwrap_err().to_string();
    assert!(
        err.contains("prices.json") && err.contains("delete it"),
        "{err}"
    );
}

#[test]
fn rapl_counters_with_wraparound() {
    assert_eq!(counter_delta(10, 25, 100), 15);
    assert_eq!(counter_delta(90, 5, 100), 15);
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("intel-rapl:0");
    let sub = dir.path().join("intel-rapl:0:0");
    for z in [&zone, &sub] {
        std::fs::create_dir(z).unwrap();
        std::fs::write(z.join("energy_uj"), "999000000\n").unwrap();
        std::fs::write(z.join("max_energy_range_uj"), "1000000000\n").unwrap();
    }
    let m = EnergyMeter::with_powercap(dir.path(), 65.0, 8);
    assert_eq!(m.zones().len(), 1, "only package zones");
    assert!(m.measures());
    let start = m.start();
    // 1 J to the wrap, then 2 J past it.
    std::fs::write(zone.join("energy_uj"), "2000000\n").unwrap();
    let e = m.finish(&start).unwrap();
    assert_eq!(e.source, EnergySource::MeasuredRapl);
    assert!((e.joules - 3.0).abs() < 1e-9, "{}", e.joules);
}

#[test]
fn unreadable_rapl_falls_back_to_an_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let m = EnergyMeter::with_powercap(dir.path(), 80.0, 4);
    assert!(!m.measures());
    assert_eq!(m.estimate_joules(2.0), 40.0);
    let start = m.start();
    let mut x = 0u64;
    for i in 0..20_000_000u64 {
        x = x.wrapping_mul(31).wrapping_add(i);
    }
    std::hint::black_box(x);
    if cfg!(target_os = "linux") {
        let e = m.finish(&start).unwrap();
        assert_eq!(e.source, EnergySource::EstimatedCpuTime);
        assert!(e.joules >= 0.0);
    }
}

#[test]
fn proc_stat_parsing() {
    let line = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
    assert_eq!(parse_stat_cpu_seconds(line), Some(3.0));
    assert_eq!(parse_stat_cpu_seconds("garbage"), None);
    if cfg!(target_os = "linux") {
        assert!(energy::process_cpu_seconds().is_some());
    }
}

//! The CLI's side of the usage ledger: one row per answer of `hearth run`. A ledger that cannot
//! be opened or written (corrupt, locked, unwritable, a broken config.toml) prints one warning
//! on stderr and recording stops; the answer is never affected.

use ledger::{EnergyMeter, EnergyStart, Ledger, Settings, UsageRecord};
use std::time::Duration;

/// Records answers, or does nothing (off, or after a failure).
pub struct UsageLog {
    active: Option<Active>,
}

struct Active {
    ledger: Ledger,
    meter: EnergyMeter,
    model: String,
    client: &'static str,
    /// The model's load time, charged to the first answer recorded.
    pending_load: Option<Duration>,
}

/// A request's start, from [`UsageLog::start`].
pub struct Started(Option<EnergyStart>);

impl UsageLog {
    /// Records nothing.
    pub fn off() -> UsageLog {
        UsageLog { active: None }
    }

    /// The ledger in `HEARTH_HOME`, unless `no_ledger` or `ledger = false` in config.toml
    /// (then nothing is opened or created). A problem is one warning on stderr and no
    /// recording.
    pub fn open(no_ledger: bool, model: &str, client: &'static str, load: Duration) -> UsageLog {
        let Some((ledger, settings)) = open_ledger(no_ledger, warn) else {
            return UsageLog::off();
        };
        UsageLog {
            active: Some(Active {
                ledger,
                meter: EnergyMeter::new(settings.cpu_watts),
                model: model_label(model),
                client,
                pending_load: Some(load),
            }),
        }
    }

    /// Call when a request starts: reads the energy counters.
    pub fn start(&self) -> Started {
        Started(self.active.as_ref().map(|a| a.meter.start()))
    }

    /// Records one answer (its token counts and durations; never its text). A failure warns
    /// once and stops recording.
    pub fn record(
        &mut self,
        started: Started,
        prompt_tokens: usize,
        completion_tokens: usize,
        prompt_time: Duration,
        generation_time: Duration,
    ) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let energy = started.0.and_then(|s| a.meter.finish(&s));
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let record = UsageRecord {
            at_ms: ledger::now_ms(),
            model: a.model.clone(),
            client: a.client.to_owned(),
            prompt_tokens: Some(prompt_tokens as u64),
            completion_tokens: Some(completion_tokens as u64),
            load_ms: a.pending_load.take().map_or(0, ms),
            prompt_ms: ms(prompt_time),
            generation_ms: ms(generation_time),
            energy,
            remote: None,
        };
        if let Err(e) = a.ledger.record(&record) {
            warn(&e);
            self.active = None;
        }
    }
}

/// The ledger in `HEARTH_HOME` and the settings, unless `no_ledger` or `ledger = false` in
/// config.toml (then nothing is opened or created). A problem is told to `warn`, then None.
pub fn open_ledger(
    no_ledger: bool,
    warn: fn(&dyn std::fmt::Display),
) -> Option<(Ledger, Settings)> {
    if no_ledger {
        return None;
    }
    let home = store::home_dir().map_err(|e| warn(&e)).ok()?;
    // A config that cannot be read could say `ledger = false`: record nothing then.
    let settings = Settings::load(&home).map_err(|e| warn(&e)).ok()?;
    if !settings.ledger {
        return None;
    }
    let ledger = Ledger::open(&home).map_err(|e| warn(&e)).ok()?;
    Some((ledger, settings))
}

/// A store model is recorded by its full name (`smollm2` and `smollm2:135m` are one model); a
/// model named by path by its file name only: the directories it sits in are nobody's
/// business and would split one model into several rows.
pub fn model_label(model: &str) -> String {
    let path = std::path::Path::new(model);
    if path.is_file() {
        if let Some(name) = path.file_name() {
            return name.to_string_lossy().into_owned();
        }
    }
    store::ModelName::parse(model).map_or_else(|_| model.to_owned(), |n| n.to_string())
}

fn warn(e: &dyn std::fmt::Display) {
    eprintln!(
        "warning: usage ledger: {e}; this session's usage is not recorded \
         (--no-ledger or `ledger = false` in config.toml turns it off)"
    );
}

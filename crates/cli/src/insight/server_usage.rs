//! The server's side of the usage ledger: the inference worker reports each finished request
//! (`server::worker::UsageSink`); rows are written on a thread of their own so that a slow disk
//! never stalls decoding. Energy is measured over the worker's busy periods and charged to the
//! request that finishes, so concurrent requests share it instead of each counting it all. A
//! ledger that cannot be written warns once on stderr and recording stops; serving goes on.

use ledger::{EnergyMeter, EnergyStart, UsageRecord};
use server::worker::{Api, RemoteUsage, Summary, UsageSink};
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;
use std::time::Duration;

pub struct ServerUsage {
    rows: Mutex<Sender<UsageRecord>>,
    meter: EnergyMeter,
    /// Energy counters since the last row, while the worker is busy.
    since: Mutex<Option<EnergyStart>>,
}

impl ServerUsage {
    /// The ledger in `HEARTH_HOME`, unless `no_ledger` or `ledger = false` in config.toml
    /// (then None, and nothing is created). A problem is one warning and None.
    pub fn open(no_ledger: bool) -> Option<ServerUsage> {
        let (ledger, settings) = super::usage_log::open_ledger(no_ledger, warn)?;
        let (tx, rx) = channel::<UsageRecord>();
        std::thread::Builder::new()
            .name("hearth-ledger".into())
            .spawn(move || {
                for row in rx {
                    if let Err(e) = ledger.record(&row) {
                        warn(&e);
                        return;
                    }
                }
            })
            .ok()?;
        Some(ServerUsage {
            rows: Mutex::new(tx),
            meter: EnergyMeter::new(settings.cpu_watts),
            since: Mutex::new(None),
        })
    }
}

impl UsageSink for ServerUsage {
    fn record(&self, model: &str, api: Api, s: &Summary) {
        let energy = {
            let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
            let energy = since.as_ref().and_then(|start| self.meter.finish(start));
            *since = Some(self.meter.start());
            energy
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let row = UsageRecord {
            at_ms: ledger::now_ms(),
            model: super::usage_log::model_label(model),
            client: api.as_str().to_owned(),
            prompt_tokens: Some(s.prompt_tokens as u64),
            completion_tokens: Some(s.completion_tokens as u64),
            load_ms: ms(s.load_time),
            prompt_ms: ms(s.prompt_time),
            generation_ms: ms(s.generation_time),
            energy,
            remote: None,
        };
        // A closed channel: the writer stopped after a failure it reported.
        let _ = self
            .rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(row);
    }

    /// Another machine's answer: its tokens and time, no energy (none was spent here), and
    /// the host that answered. Counts the upstream did not report stay unknown (None): a 0
    /// would make every sum over them silently short.
    fn record_remote(&self, r: &RemoteUsage) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let row = UsageRecord {
            at_ms: ledger::now_ms(),
            model: r.model.clone(),
            client: r.api.as_str().to_owned(),
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            load_ms: 0,
            prompt_ms: 0,
            generation_ms: ms(r.elapsed),
            energy: None,
            remote: Some(r.host.clone()),
        };
        let _ = self
            .rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(row);
    }

    fn activity(&self, busy: bool) {
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        *since = busy.then(|| self.meter.start());
    }
}

fn warn(e: &dyn std::fmt::Display) {
    eprintln!(
        "warning: usage ledger: {e}; requests are served but not recorded \
         (--no-ledger or `ledger = false` in config.toml turns it off)"
    );
}

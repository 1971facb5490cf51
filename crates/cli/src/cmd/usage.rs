//! `hearth usage [--since DATE] [--json]`: what running models here used, from the usage
//! ledger: requests, tokens and time by model and by day; the electricity (measured by RAPL or
//! estimated from CPU time, and labelled so) and its cost; and what the same tokens would
//! have cost at cloud API prices (a dated reference table, or the user's own). Answers from
//! other machines (`hearth serve --upstream`) are shown apart: they used no electricity here
//! and saved no cloud cost by running locally, so they count in neither. An upstream that
//! reported no token counts leaves its rows' counts unknown: sums over them are printed as
//! lower bounds (`1234*`, or `?` when nothing in them is known), never as if complete.

use anyhow::Context;
use chrono::NaiveDate;
use ledger::{Group, Ledger, PriceTable, Settings};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Only requests on or after this day (YYYY-MM-DD, local time)
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// Print the cloud price table in effect (JSON, the format of HEARTH_HOME/prices.json) and
    /// nothing else
    #[arg(long, conflicts_with_all = ["since", "json"])]
    prices: bool,
}

const J_PER_KWH: f64 = 3.6e6;

#[derive(Serialize, Default, Clone)]
struct Totals {
    requests: u64,
    /// Sums of the known counts: lower bounds when `unknown_token_requests` > 0.
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Requests whose token counts are unknown (an upstream that did not report them).
    unknown_token_requests: u64,
    load_ms: u64,
    prompt_ms: u64,
    generation_ms: u64,
    /// kWh measured by RAPL counters.
    measured_kwh: f64,
    /// kWh estimated from CPU time × cpu_watts.
    estimated_kwh: f64,
    energy_kwh: f64,
    /// `measured`, `estimate`, `measured+estimate`, or `none`.
    energy_label: &'static str,
    /// Requests without any energy figure (not counted in the kWh).
    unmetered_requests: u64,
    electricity_cost: f64,
}

#[derive(Serialize)]
struct Keyed {
    key: String,
    #[serde(flatten)]
    totals: Totals,
}

#[derive(Serialize)]
struct CloudCost {
    model: String,
    provider: String,
    input_per_million: f64,
    output_per_million: f64,
    as_of: String,
    source: String,
    cost: f64,
    /// The cost of the known tokens only: some requests' counts are unknown.
    cost_is_lower_bound: bool,
}

#[derive(Serialize)]
struct Report {
    ledger_path: PathBuf,
    /// Whether new requests are recorded (config.toml `ledger`).
    recording: bool,
    since: Option<String>,
    /// Answers computed on this machine.
    total: Totals,
    by_model: Vec<Keyed>,
    by_day: Vec<Keyed>,
    /// Answers from upstream servers, by model and host (`model @ host`); not in `total`.
    remote: Vec<Keyed>,
    remote_total: Totals,
    price_per_kwh: f64,
    currency: String,
    /// How energy is measured or estimated on this machine now.
    energy_method: String,
    cloud_note: String,
    cloud_table: String,
    cloud_currency: String,
    cloud: Vec<CloudCost>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let home = store::home_dir()?;
    let prices = PriceTable::load(&home)?;
    if a.prices {
        crate::outln!("{}", serde_json::to_string_pretty(&prices)?)?;
        return Ok(());
    }
    let since = match &a.since {
        Some(s) => Some(
            NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
                anyhow::anyhow!("--since {s:?}: expected a date as YYYY-MM-DD, e.g. 2025-01-31")
            })?,
        ),
        None => None,
    };
    let settings = Settings::load(&home)?;
    let path = Ledger::path_in(&home);
    let all = match Ledger::open_existing(&home)
        .with_context(|| "cannot read the usage ledger".to_string())?
    {
        Some(l) => l.groups(since)?,
        None => Vec::new(),
    };
    let (remote_groups, groups): (Vec<Group>, Vec<Group>) =
        all.into_iter().partition(|g| g.remote.is_some());
    let price = settings.price_per_kwh;
    let total = totals(groups.iter(), price);
    let remote_total = totals(remote_groups.iter(), 0.0);
    let remote = {
        let mut m: BTreeMap<String, Vec<&Group>> = BTreeMap::new();
        for g in &remote_groups {
            let host = g.remote.as_deref().unwrap_or_default();
            m.entry(format!("{} @ {host}", g.model))
                .or_default()
                .push(g);
        }
        m.into_iter()
            .map(|(key, gs)| Keyed {
                key,
                totals: totals(gs.into_iter(), 0.0),
            })
            .collect::<Vec<_>>()
    };
    let by = |key: fn(&Group) -> &str| -> Vec<Keyed> {
        let mut m: BTreeMap<&str, Vec<&Group>> = BTreeMap::new();
        for g in &groups {
            m.entry(key(g)).or_default().push(g);
        }
        m.into_iter()
            .map(|(k, gs)| Keyed {
                key: k.to_owned(),
                totals: totals(gs.into_iter(), price),
            })
            .collect()
    };
    let meter = ledger::EnergyMeter::new(settings.cpu_watts);
    let n_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let energy_method = if meter.measures() {
        format!(
            "measured: RAPL counters of {} CPU package(s) (the whole package: other programs \
             running at the same time are counted too)",
            meter.zones().len()
        )
    } else {
        format!(
            "estimate: CPU time of hearth × {} W (cpu_watts) ÷ {n_cpus} logical CPUs; RAPL \
             counters under /sys/class/powercap are not readable here",
            settings.cpu_watts
        )
    };
    let report = Report {
        ledger_path: path,
        recording: settings.ledger,
        since: since.map(|d| d.format("%Y-%m-%d").to_string()),
        by_model: by(|g| &g.model),
        by_day: by(|g| &g.day),
        cloud: prices
            .models
            .iter()
            .map(|p| CloudCost {
                model: p.model.clone(),
                provider: p.provider.clone(),
                input_per_million: p.input_per_million,
                output_per_million: p.output_per_million,
                as_of: p.as_of.clone(),
                source: p.source.clone(),
                cost: p.cost(total.prompt_tokens, total.completion_tokens),
                cost_is_lower_bound: total.unknown_token_requests > 0,
            })
            .collect(),
        total,
        remote,
        remote_total,
        price_per_kwh: price,
        currency: settings.currency.clone(),
        energy_method,
        cloud_note: prices.note.clone(),
        cloud_table: prices.origin.clone(),
        cloud_currency: prices.currency.clone(),
    };
    if a.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_human(&report)?;
    }
    Ok(())
}

fn totals<'a>(groups: impl Iterator<Item = &'a Group>, price_per_kwh: f64) -> Totals {
    let mut t = Totals::default();
    for g in groups {
        t.requests += g.requests;
        t.prompt_tokens += g.prompt_tokens;
        t.completion_tokens += g.completion_tokens;
        t.unknown_token_requests += g.unknown_token_requests;
        t.load_ms += g.load_ms;
        t.prompt_ms += g.prompt_ms;
        t.generation_ms += g.generation_ms;
        t.measured_kwh += g.measured_joules / J_PER_KWH;
        t.estimated_kwh += g.estimated_joules / J_PER_KWH;
        t.unmetered_requests += g.unmetered_requests;
    }
    t.energy_kwh = t.measured_kwh + t.estimated_kwh;
    t.energy_label = match (t.measured_kwh > 0.0, t.estimated_kwh > 0.0) {
        (true, true) => "measured+estimate",
        (true, false) => "measured",
        (false, true) => "estimate",
        (false, false) if t.requests > t.unmetered_requests => "estimate",
        (false, false) => "none",
    };
    t.electricity_cost = t.energy_kwh * price_per_kwh;
    t
}

fn print_human(r: &Report) -> anyhow::Result<()> {
    let mut out = String::new();
    let span = match &r.since {
        Some(d) => format!("since {d}"),
        None => "all time".to_owned(),
    };
    out.push_str(&format!(
        "Usage, {span} (ledger {})\n",
        r.ledger_path.display()
    ));
    if !r.recording {
        out.push_str("note: recording is off (`ledger = false` in config.toml)\n");
    }
    if r.total.requests == 0 && r.remote_total.requests == 0 {
        out.push_str("no requests recorded");
        out.push_str(if r.since.is_some() {
            " in this period\n"
        } else {
            " yet\n"
        });
        crate::outln!("{}", out.trim_end())?;
        return Ok(());
    }
    let w = r
        .by_model
        .iter()
        .map(|k| k.key.chars().count())
        .max()
        .unwrap_or(0)
        .max(12);
    let table = |title: &str, rows: &[Keyed], out: &mut String| {
        out.push_str(&format!(
            "\n{title:<w$} {:>8} {:>12} {:>12} {:>10} {:>19}  {}\n",
            "requests", "prompt tok", "output tok", "gen time", "energy kWh", "electricity"
        ));
        for k in rows {
            out.push_str(&row(&k.key, w, &k.totals, &r.currency));
        }
    };
    table("by model", &r.by_model, &mut out);
    table("by day", &r.by_day, &mut out);
    out.push('\n');
    out.push_str(&row("total", w, &r.total, &r.currency));
    out.push_str(&format!("\nenergy       {}\n", r.energy_method));
    if r.total.unknown_token_requests > 0 {
        out.push_str(&format!(
            "tokens       {}\n",
            unknown_note(r.total.unknown_token_requests, "")
        ));
    }
    if r.total.unmetered_requests > 0 {
        out.push_str(&format!(
            "             {} request(s) had no energy figure (not counted)\n",
            r.total.unmetered_requests
        ));
    }
    out.push_str(&format!(
        "electricity  {:.6} kWh × {} {}/kWh (price_per_kwh in config.toml) = {} {}\n",
        r.total.energy_kwh,
        r.price_per_kwh,
        r.currency,
        money(r.total.electricity_cost),
        r.currency
    ));
    out.push_str(&format!(
        "\nThe same tokens at cloud API prices ({} prompt, {} output tokens):\n",
        marked(r.total.prompt_tokens, &r.total),
        marked(r.total.completion_tokens, &r.total)
    ));
    for c in &r.cloud {
        out.push_str(&format!(
            "  {:<22} {:<10} {:>12} {}   ({} in / {} out per M, {} as of {})\n",
            c.model,
            c.provider,
            mark(money(c.cost), c.cost == 0.0, &r.total),
            r.cloud_currency,
            c.input_per_million,
            c.output_per_million,
            c.source,
            c.as_of
        ));
    }
    let table_name = if r.cloud_table == "shipped" {
        "the table shipped with hearth".to_owned()
    } else {
        r.cloud_table.clone()
    };
    out.push_str(&format!(
        "prices: {} ({table_name}; `hearth usage --prices` prints it)\n",
        r.cloud_note
    ));
    if !r.remote.is_empty() {
        out.push_str(&remote_section(r));
    }
    crate::outln!("{}", out.trim_end())?;
    Ok(())
}

/// Answers from other machines: tokens and time only, outside every total above.
fn remote_section(r: &Report) -> String {
    let w = r
        .remote
        .iter()
        .map(|k| k.key.chars().count())
        .max()
        .unwrap_or(0)
        .max(12);
    let mut out = format!(
        "\nAnswered by other machines (--upstream; not in the totals, the electricity or the \
         cloud comparison above):\n{:<w$} {:>8} {:>12} {:>12} {:>10}\n",
        "remote", "requests", "prompt tok", "output tok", "time"
    );
    let line = |key: &str, t: &Totals| {
        format!(
            "{key:<w$} {:>8} {:>12} {:>12} {:>10}\n",
            t.requests,
            marked(t.prompt_tokens, t),
            marked(t.completion_tokens, t),
            format!("{:.1} s", t.generation_ms as f64 / 1000.0),
        )
    };
    for k in &r.remote {
        out.push_str(&line(&k.key, &k.totals));
    }
    if r.remote.len() > 1 {
        out.push_str(&line("remote total", &r.remote_total));
    }
    if r.remote_total.unknown_token_requests > 0 {
        out.push_str(&unknown_note(
            r.remote_total.unknown_token_requests,
            "remote ",
        ));
        out.push('\n');
    }
    out
}

/// Says how many answers' counts are missing from the sums, and how such sums are marked.
fn unknown_note(n: u64, which: &str) -> String {
    format!(
        "{n} {which}answer(s) reported no token counts; sums marked * are lower bounds \
         (? where no count is known)"
    )
}

/// A token sum as printed: `1234*` when some of the requests summed have unknown counts
/// (the sum is a lower bound), `?` when none of them is known.
fn marked(n: u64, t: &Totals) -> String {
    mark(n.to_string(), n == 0, t)
}

/// [`marked`] for any figure computed from token sums (a cost): `nothing` says the figure
/// is what no known count at all would give.
fn mark(figure: String, nothing: bool, t: &Totals) -> String {
    if t.unknown_token_requests == 0 {
        figure
    } else if nothing && t.unknown_token_requests >= t.requests {
        "?".to_owned()
    } else {
        format!("{figure}*")
    }
}

fn row(key: &str, w: usize, t: &Totals, currency: &str) -> String {
    let label = match t.energy_label {
        "measured" => "measured",
        "estimate" => "estimate",
        "measured+estimate" => "mixed",
        _ => "n/a",
    };
    format!(
        "{key:<w$} {:>8} {:>12} {:>12} {:>10} {:>19}  {} {currency}\n",
        t.requests,
        marked(t.prompt_tokens, t),
        marked(t.completion_tokens, t),
        format!("{:.1} s", t.generation_ms as f64 / 1000.0),
        format!("{:.6} {label}", t.energy_kwh),
        money(t.electricity_cost),
    )
}

/// Small sums keep their significant digits: 0.000123, 1.23.
fn money(x: f64) -> String {
    if x == 0.0 {
        "0".to_owned()
    } else if x < 0.01 {
        format!("{x:.6}")
    } else {
        format!("{x:.2}")
    }
}

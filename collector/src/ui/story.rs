//! What opens a snapshot page: the findings, the request's story with its thread's timeline,
//! and the slowest work calls and worst wakeups with who delayed them. All of it comes from
//! the analysis JSON (`flightrec analyze --json`, docs/analyses.md); times are wall-clock.

use std::fmt::Write as _;

use serde_json::Value;

use super::charts::states_svg;
use super::page::{esc, kv_table, ms, utc};

/// A CLOCK_MONOTONIC timestamp of the snapshot as wall-clock text.
#[derive(Clone, Copy)]
pub(super) struct Clock {
    /// realtime − monotonic, ns.
    pub offset: i64,
}

impl Clock {
    pub fn utc(self, mono: u64) -> String {
        utc(mono.saturating_add_signed(self.offset))
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// "comm (pid P, tid T)" and its cgroup when known.
fn who(w: &Value) -> String {
    let mut t = format!(
        "{} (pid {}, tid {})",
        esc(s(&w["comm"])),
        w["pid"],
        w["tid"]
    );
    if let Some(g) = w["cgroup"].as_str().filter(|g| !g.is_empty()) {
        let _ = write!(t, " in <code>{}</code>", esc(g));
    }
    t
}

/// The ranked findings, each a sentence with its numbers.
pub(super) fn findings(a: &Value) -> String {
    let mut b = String::from("<h2>Findings</h2>");
    let list = a["findings"].as_array().filter(|f| !f.is_empty());
    let Some(list) = list else {
        b.push_str("<p id=\"no-findings\">Nothing stands out: no slow work, long waits to run, slow disk or long interrupt in the window.</p>");
        return b;
    };
    b.push_str("<ol id=\"findings\">");
    for f in list {
        let _ = write!(
            b,
            "<li class=\"finding {}\">{}</li>",
            esc(s(&f["kind"])),
            esc(s(&f["text"]))
        );
    }
    b.push_str("</ol>");
    b
}

fn woken_by(w: &Value) -> String {
    match w["kind"].as_str() {
        Some("thread") => who(w),
        Some("irq") => format!("irq {} ({})", w["irq"], esc(s(&w["name"]))),
        Some("softirq") => format!("softirq {}", esc(s(&w["name"]))),
        _ => "nobody seen (a timer or an untraced interrupt)".into(),
    }
}

fn io(v: &Value) -> String {
    format!(
        "{} requests on {}, {} KiB, slowest {}",
        v["requests"],
        esc(s(&v["device"])),
        u(&v["bytes"]) / 1024,
        ms(u(&v["max_ns"]))
    )
}

/// The request's story: what it was, where its time went (with the thread-state timeline),
/// its blocked stretches with their wakers and wakeup chains, and who ran instead.
pub(super) fn request(a: &Value, clock: Clock) -> String {
    let st = &a["story"];
    if !st.is_object() {
        return String::new();
    }
    let mut b = String::from("<h2>The request</h2>");
    let _ = write!(b, "<p id=\"verdict\">{}</p>", esc(s(&st["verdict"])));
    let dur = u(&st["duration_ns"]).max(1);
    let part = |k: &str| {
        let v = u(&st[k]);
        format!("{} ({:.0}%)", ms(v), v as f64 * 100.0 / dur as f64)
    };
    let source = match s(&st["source"]) {
        "hook" => "the webserver's hook call",
        "rule" => "the kernel rule that fired",
        "accept_close" => "the slowest connection served (accept to close)",
        _ => "the thread asked for",
    };
    b.push_str(&kv_table(&[
        ("request", esc(s(&st["what"]))),
        ("told from", source.into()),
        ("thread", who(&st["who"])),
        ("started (UTC)", utc(u(&st["begin_realtime_ns"]))),
        ("took", ms(u(&st["duration_ns"]))),
        ("running", part("running_ns")),
        ("of which interrupts", part("interrupted_ns")),
        ("runnable (waiting for a CPU)", part("runnable_ns")),
        ("blocked", part("blocked_ns")),
        ("not seen", part("unknown_ns")),
    ]));
    b.push_str(&states_svg(st, clock, 800));
    let blocked = st["blocked"].as_array().filter(|v| !v.is_empty());
    if let Some(blocked) = blocked {
        b.push_str(
            "<h3>Blocked</h3><table id=\"blocked\"><tr><th>from (UTC)</th>\
             <th class=\"num\">for</th><th>in</th><th>woken by</th><th>behind it</th></tr>",
        );
        for k in blocked {
            let mut call = esc(k["syscall"].as_str().unwrap_or("-"));
            if let Some(fd) = k["fd"].as_i64() {
                let _ = write!(call, " on fd {fd}");
                if let Some(name) = k["fd_name"].as_str() {
                    let _ = write!(call, " ({})", esc(name));
                }
            }
            if k["timed_out"].as_bool() == Some(true) {
                call.push_str(", timed out: nothing answered");
            }
            if k["own_io"].is_object() {
                let _ = write!(call, "; its I/O: {}", io(&k["own_io"]));
            }
            let mut behind: Vec<String> = k["chain"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    let mut t = who(&l["who"]);
                    if let Some(sys) = l["syscall"].as_str() {
                        let _ = write!(t, " in {}", esc(sys));
                        if let Some(fd) = l["fd"].as_i64() {
                            let _ = write!(t, " on fd {fd}");
                        }
                        if let Some(name) = l["fd_name"].as_str() {
                            let _ = write!(t, " ({})", esc(name));
                        }
                    }
                    if l["io"].is_object() {
                        let _ = write!(t, " ({})", io(&l["io"]));
                    }
                    t
                })
                .collect();
            if behind.is_empty() && k["disk"].is_object() {
                behind.push(format!("disk busy: {}", io(&k["disk"])));
            }
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"num\">{}</td><td>{call}</td><td>{}</td><td>{}</td></tr>",
                clock.utc(u(&k["begin_ns"])),
                ms(u(&k["duration_ns"])),
                woken_by(&k["woken_by"]),
                if behind.is_empty() {
                    "-".into()
                } else {
                    behind.join(" ← ")
                }
            );
        }
        b.push_str("</table>");
    }
    let instead = st["ran_instead"].as_array().filter(|v| !v.is_empty());
    if let Some(instead) = instead {
        b.push_str(
            "<h3>Ran instead while it waited for a CPU</h3><table id=\"ran-instead\">\
             <tr><th>thread</th><th class=\"num\">ran</th></tr>",
        );
        for r in instead {
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
                who(&r["who"]),
                ms(u(&r["ns"]))
            );
        }
        b.push_str("</table>");
    }
    b
}

/// The slowest calls that did work (not idle waits), and the worst wakeups with who ran on
/// the CPU meanwhile.
pub(super) fn slowest(a: &Value, clock: Clock) -> String {
    let mut b = String::new();
    let work = a["syscalls"]["slowest_work"]
        .as_array()
        .filter(|v| !v.is_empty());
    if let Some(work) = work {
        b.push_str(
            "<h3>Slowest work calls</h3><table id=\"slowest-work\"><tr><th>at (UTC)</th>\
             <th>thread</th><th>syscall</th><th class=\"num\">took</th><th class=\"num\">result</th></tr>",
        );
        for c in work.iter().take(10) {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                clock.utc(u(&c["entry_ns"])),
                who(c),
                esc(s(&c["syscall"])),
                ms(u(&c["duration_ns"])),
                c["ret"]
            );
        }
        b.push_str("</table>");
    }
    let worst = a["sched"]["worst"].as_array().filter(|v| !v.is_empty());
    if let Some(worst) = worst {
        b.push_str(
            "<h3>Worst wakeups</h3><table id=\"worst-wakeups\"><tr><th>woken (UTC)</th>\
             <th>thread</th><th class=\"num\">waited to run</th><th>cpu</th><th>delayed by</th></tr>",
        );
        for w in worst.iter().take(10) {
            let by: Vec<String> = w["delayed_by"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    format!(
                        "{} (tid {}, <code>{}</code>) {}",
                        esc(s(&d["comm"])),
                        d["tid"],
                        esc(s(&d["cgroup"])),
                        ms(u(&d["ns"]))
                    )
                })
                .collect();
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                clock.utc(u(&w["wakeup_ns"])),
                who(w),
                ms(u(&w["latency_ns"])),
                w["cpu"],
                if by.is_empty() {
                    "-".into()
                } else {
                    by.join(", ")
                }
            );
        }
        b.push_str("</table>");
    }
    b
}

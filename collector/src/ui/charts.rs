//! Charts drawn into the pages: latency histograms and the per-CPU "who ran" timeline.

use std::fmt::Write as _;

use serde_json::Value;

use super::page::{esc, ms};
use crate::browse::Timeline;

pub(super) fn histogram(title: &str, h: &Value) -> String {
    let Some(buckets) = h["buckets"].as_array().filter(|b| !b.is_empty()) else {
        return String::new();
    };
    let max = buckets
        .iter()
        .filter_map(|b| b["count"].as_u64())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut b = format!(
        "<h3>{}</h3><table class=\"hist\"><tr><th>µs</th><th class=\"num\">count</th>\
         <th></th></tr>",
        esc(title)
    );
    for k in buckets {
        let count = k["count"].as_u64().unwrap_or(0);
        let w = 200 * count / max;
        let _ = write!(
            b,
            "<tr><td>{} – {}</td><td class=\"num\">{count}</td><td><svg width=\"200\" \
             height=\"10\"><rect class=\"bar\" width=\"{w}\" height=\"10\"/></svg></td></tr>",
            k["low"], k["high"]
        );
    }
    b.push_str("</table>");
    b
}

/// Colour of a task in timelines: stable per pid.
pub(super) fn colour(pid: u32) -> String {
    let h = pid.wrapping_mul(2_654_435_761) % 360;
    format!("hsl({h},55%,55%)")
}

pub(super) fn timeline_svg(t: &Timeline, width: u32) -> String {
    let row = 18;
    let label = 50;
    let height = row * t.cpus.len() as u32 + 20;
    let scale = f64::from(width) / f64::from(t.columns.max(1));
    let mut b = format!(
        "<svg class=\"timeline\" width=\"{}\" height=\"{height}\" \
         xmlns=\"http://www.w3.org/2000/svg\">",
        width + label
    );
    for (i, cpu) in t.cpus.iter().enumerate() {
        let y = i as u32 * row;
        let _ = write!(
            b,
            "<text x=\"0\" y=\"{}\" font-size=\"11\">cpu {}</text>",
            y + 12,
            cpu.cpu
        );
        for r in &cpu.runs {
            let _ = write!(
                b,
                "<rect x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\">\
                 <title>{} (pid {} tid {})</title></rect>",
                f64::from(label) + f64::from(r.from) * scale,
                (f64::from(r.to - r.from) * scale).max(0.5),
                row - 2,
                colour(r.pid),
                esc(&r.comm),
                r.pid,
                r.tid
            );
        }
    }
    let _ = write!(
        b,
        "<text x=\"{label}\" y=\"{}\" font-size=\"11\">{} window</text></svg>",
        height - 4,
        ms(t.end_ns - t.begin_ns)
    );
    b
}

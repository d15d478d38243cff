//! Charts drawn into the pages: latency histograms and the per-CPU "who ran" timeline.

use std::fmt::Write as _;

use serde_json::Value;

use super::page::{esc, ms};
use super::story::Clock;
use crate::browse::Timeline;

/// A log2 latency histogram as a table with bars on a log scale (a bucket of 1 against one of
/// 10,000 still shows), so the tail that matters is visible beside the bulk.
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
    let scale = (max as f64).ln_1p();
    let mut b = format!(
        "<h3>{}</h3><table class=\"hist\"><tr><th>µs</th><th class=\"num\">count</th>\
         <th>count, log scale</th></tr>",
        esc(title)
    );
    for k in buckets {
        let count = k["count"].as_u64().unwrap_or(0);
        let w = (200.0 * (count as f64).ln_1p() / scale).round() as u32;
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

/// Colours of the thread states, as the legend names them.
const STATES: [(&str, &str, &str); 3] = [
    ("running", "#2e8b57", "running"),
    ("runnable", "#f0ad4e", "runnable (waiting for a CPU)"),
    ("blocked", "#9aa5b8", "blocked (in a syscall or asleep)"),
];

/// The story's thread over its span: one bar of its states in colour (white where nothing
/// was seen), a time axis in ms from the start with the start's wall-clock time, a legend,
/// and a hover title on every stretch.
pub(super) fn states_svg(story: &Value, clock: Clock, width: u32) -> String {
    let (begin, end) = (
        story["begin_ns"].as_u64().unwrap_or(0),
        story["end_ns"].as_u64().unwrap_or(0),
    );
    let span = end.saturating_sub(begin).max(1);
    let (left, bar_y, bar_h) = (10u32, 22u32, 26u32);
    let x = |t: u64| {
        f64::from(left)
            + t.clamp(begin, end).saturating_sub(begin) as f64 * f64::from(width) / span as f64
    };
    let mut b = format!(
        "<svg class=\"states\" width=\"{}\" height=\"96\" xmlns=\"http://www.w3.org/2000/svg\">\
         <text x=\"{left}\" y=\"14\" font-size=\"12\">{} from {} UTC</text>\
         <rect x=\"{left}\" y=\"{bar_y}\" width=\"{width}\" height=\"{bar_h}\" fill=\"#fff\" stroke=\"#ccc\"/>",
        width + 2 * left,
        esc(story["who"]["comm"].as_str().unwrap_or("?")),
        clock.utc(begin)
    );
    for seg in story["timeline"].as_array().into_iter().flatten() {
        let state = seg["state"].as_str().unwrap_or("?");
        let colour = STATES.iter().find(|s| s.0 == state).map_or("#ddd", |s| s.1);
        let (a, z) = (
            seg["begin_ns"].as_u64().unwrap_or(0),
            seg["end_ns"].as_u64().unwrap_or(0),
        );
        let mut what = format!(
            "{state} {} from +{} (cpu {})",
            ms(z.saturating_sub(a)),
            ms(a.saturating_sub(begin)),
            seg["cpu"]
        );
        if let Some(sys) = seg["syscall"].as_str() {
            let _ = write!(what, " in {sys}");
        }
        let _ = write!(
            b,
            "<rect class=\"state {state}\" x=\"{:.1}\" y=\"{bar_y}\" width=\"{:.1}\" height=\"{bar_h}\" \
             fill=\"{colour}\"><title>{}</title></rect>",
            x(a),
            (x(z) - x(a)).max(0.5),
            esc(&what)
        );
    }
    // The axis: five ticks, labelled in ms from the start.
    let axis_y = bar_y + bar_h;
    for i in 0..=4u64 {
        let t = begin + span * i / 4;
        let tx = x(t);
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            b,
            "<line class=\"tick\" x1=\"{tx:.1}\" x2=\"{tx:.1}\" y1=\"{axis_y}\" y2=\"{}\" stroke=\"#666\"/>\
             <text x=\"{tx:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"{anchor}\">+{}</text>",
            axis_y + 4,
            axis_y + 16,
            ms(t - begin)
        );
    }
    let mut lx = left;
    for (_, colour, label) in STATES {
        let _ = write!(
            b,
            "<g class=\"legend\"><rect x=\"{lx}\" y=\"80\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"90\" font-size=\"11\">{}</text></g>",
            lx + 16,
            esc(label)
        );
        lx += 16 + 7 * label.len() as u32 + 18;
    }
    b.push_str("</svg>");
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

//! `[[rules]]`: kernel latency rules, evaluated inside the eBPF programs from per-key start
//! timestamps. This module holds their configuration and its strict validation; the recorder
//! turns validated rules into the kernel's rule table.
//!
//! ```toml
//! [[rules]]
//! name = "slow-fsync"
//! kind = "syscall"        # syscall | block | runqueue | irq
//! syscall = "fdatasync"
//! comm = "postgres"       # optional
//! threshold = "50ms"
//! ```

use serde::{Deserialize, Serialize};

use schemas::config::ConfigError;

use crate::trigger::{Source, Trigger};

/// Most rules the kernel table holds.
pub const MAX_RULES: usize = 8;

/// What a rule measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Time from `sys_enter` to `sys_exit` of one syscall of one thread.
    Syscall,
    /// Time from `block_rq_issue` to `block_rq_complete` of one request.
    Block,
    /// Time a woken or preempted thread waits on the run queue before it runs.
    Runqueue,
    /// Time from `irq_handler_entry` to `irq_handler_exit` on one CPU.
    Irq,
}

impl RuleKind {
    /// The `[events]` class whose programs see this kind's events.
    pub fn class(self) -> &'static str {
        match self {
            RuleKind::Syscall => "syscalls",
            RuleKind::Block => "block",
            RuleKind::Runqueue => "sched",
            RuleKind::Irq => "irq",
        }
    }
}

/// One `[[rules]]` entry as written in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name shown in logs and kept in the snapshot manifest.
    pub name: String,
    /// What is measured.
    pub kind: RuleKind,
    /// Latency at or above which the rule fires, e.g. "50ms", "500us", "1s".
    pub threshold: String,
    /// `syscall` rules: the syscall's name in the x86-64 table, e.g. "fdatasync".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// `syscall` and `runqueue` rules: only threads with this comm (at most 15 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// `syscall` and `runqueue` rules: only this process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `syscall` and `runqueue` rules: only tasks in this cgroup v2 path, e.g.
    /// "/system.slice/db.service" (for `runqueue`, the cgroup of the task that waited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// `block` rules: the whole disk as "MAJOR:MINOR" (e.g. "8:0"); any disk when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `irq` rules: only this interrupt number; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irq: Option<u32>,
    /// Keep recording this long after the match, then freeze, e.g. "200ms". 0 freezes inside
    /// the eBPF program at the matching event, so the window ends exactly there.
    #[serde(default, with = "schemas::units::duration")]
    pub post: std::time::Duration,
    /// Least time between two firings of this rule, checked in the kernel, e.g. "1s".
    #[serde(default = "default_min_interval")]
    pub min_interval: String,
}

fn default_min_interval() -> String {
    "1s".into()
}

/// A checked rule, with names and sizes resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name.
    pub name: String,
    /// What it measures.
    pub kind: RuleKind,
    /// Threshold, ns.
    pub threshold_ns: u64,
    /// Syscall number (`syscall` rules).
    pub syscall_nr: Option<u32>,
    /// Comm filter.
    pub comm: Option<String>,
    /// Process id filter.
    pub pid: Option<u32>,
    /// cgroup v2 path filter.
    pub cgroup: Option<String>,
    /// Kernel device number `major << 20 | minor` (`block` rules).
    pub device: Option<u32>,
    /// Interrupt number (`irq` rules).
    pub irq: Option<u32>,
    /// Post-trigger window, ms (0: the kernel freezes).
    pub post_ms: u64,
    /// Least time between two firings, ns.
    pub min_interval_ns: u64,
}

/// `text` in the duration grammar ([`schemas::units`]), in ns.
fn duration_ns(text: &str) -> Result<u64, ConfigError> {
    let d = schemas::units::parse_duration(text)?;
    u64::try_from(d.as_nanos())
        .map_err(|_| ConfigError::Invalid(format!("duration {text:?} is too long")))
}

fn parse_device(text: &str) -> Option<u32> {
    let (ma, mi) = text.trim().split_once(':')?;
    let (ma, mi): (u32, u32) = (ma.parse().ok()?, mi.parse().ok()?);
    (ma < (1 << 12) && mi < (1 << 20)).then_some((ma << 20) | mi)
}

impl RuleConfig {
    /// Checks the rule strictly: every field must make sense for its kind.
    pub fn check(&self) -> Result<Rule, ConfigError> {
        let err = |m: String| ConfigError::Invalid(format!("rule {:?}: {m}", self.name));
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(err(
                "name must be 1 to 64 letters, digits, '.', '_' or '-'".into()
            ));
        }
        let threshold_ns = duration_ns(&self.threshold).map_err(|e| err(e.to_string()))?;
        if threshold_ns == 0 {
            return Err(err("threshold must be above 0".into()));
        }
        let min_interval_ns = duration_ns(&self.min_interval).map_err(|e| err(e.to_string()))?;
        if min_interval_ns < 1_000_000 {
            return Err(err(
                "min_interval must be at least 1ms (it is the kernel's flood guard)".into(),
            ));
        }
        if self.post > std::time::Duration::from_secs(600) {
            return Err(err("post must be at most 10m".into()));
        }
        if let Some(comm) = &self.comm
            && (comm.is_empty() || comm.len() > 15)
        {
            return Err(err(format!(
                "comm {comm:?} must be 1 to 15 bytes (the kernel keeps 15)"
            )));
        }
        if let Some(cg) = &self.cgroup
            && !cg.starts_with('/')
        {
            return Err(err(format!(
                "cgroup {cg:?} must start with '/' (a path under the cgroup2 mount)"
            )));
        }
        let allowed: &[&str] = match self.kind {
            RuleKind::Syscall => &["syscall", "comm", "pid", "cgroup"],
            RuleKind::Block => &["device"],
            RuleKind::Runqueue => &["comm", "pid", "cgroup"],
            RuleKind::Irq => &["irq"],
        };
        let given = [
            ("syscall", self.syscall.is_some()),
            ("comm", self.comm.is_some()),
            ("pid", self.pid.is_some()),
            ("cgroup", self.cgroup.is_some()),
            ("device", self.device.is_some()),
            ("irq", self.irq.is_some()),
        ];
        for (field, set) in given {
            if set && !allowed.contains(&field) {
                return Err(err(format!(
                    "{field} does not apply to {:?} rules (they take: {})",
                    self.kind,
                    allowed.join(", ")
                )));
            }
        }
        let syscall_nr = match (self.kind, &self.syscall) {
            (RuleKind::Syscall, None) => {
                return Err(err(
                    "syscall rules need `syscall`, e.g. \"fdatasync\"".into()
                ));
            }
            (RuleKind::Syscall, Some(name)) => {
                let nr: syscalls::x86_64::Sysno = name
                    .parse()
                    .map_err(|_| err(format!("{name:?} is not an x86-64 syscall name")))?;
                Some(nr.id() as u32)
            }
            _ => None,
        };
        let device = match &self.device {
            Some(d) => Some(
                parse_device(d)
                    .ok_or_else(|| err(format!("device {d:?} must be \"MAJOR:MINOR\"")))?,
            ),
            None => None,
        };
        Ok(Rule {
            name: self.name.clone(),
            kind: self.kind,
            threshold_ns,
            syscall_nr,
            comm: self.comm.clone(),
            pid: self.pid,
            cgroup: self.cgroup.clone(),
            device,
            irq: self.irq,
            post_ms: self.post.as_millis() as u64,
            min_interval_ns,
        })
    }
}

/// Checks every rule and the set: at most [`MAX_RULES`], unique names.
pub fn check_rules(rules: &[RuleConfig]) -> Result<Vec<Rule>, ConfigError> {
    if rules.len() > MAX_RULES {
        return Err(ConfigError::Invalid(format!(
            "{} rules, more than the {MAX_RULES} the kernel table holds",
            rules.len()
        )));
    }
    let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
    for r in rules {
        let rule = r.check()?;
        if out.iter().any(|o| o.name == rule.name) {
            return Err(ConfigError::Invalid(format!(
                "two rules are named {:?}: names must be unique",
                rule.name
            )));
        }
        out.push(rule);
    }
    Ok(out)
}

/// The trigger a kernel rule hit becomes: its reason says what was slow in words, its fields
/// are the triggering event's (per kind: the syscall and its result, the waiting task, the
/// disk and sector, the interrupt), and its signature dedupes repeats of the same problem.
pub fn rule_trigger(rules: &[Rule], hit: &schemas::RuleHit) -> Trigger {
    let rule = rules.get(hit.rule as usize);
    let name = rule.map_or("unknown", |r| r.name.as_str());
    let comm = schemas::cstr_lossy(&hit.comm);
    let latency_ms = hit.latency_ns as f64 / 1e6;
    let mut fields = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        fields.insert(k.into(), v);
    };
    put("rule", name.into());
    put("latency_ns", hit.latency_ns.into());
    put("start_ns", hit.start_ns.into());
    put("ts_ns", hit.ts_ns.into());
    put("cpu", hit.cpu.into());
    put("frozen_by_rule", (hit.frozen != 0).into());
    let what = match rule.map(|r| r.kind) {
        Some(RuleKind::Syscall) => {
            let sys = schemas::event::syscall_name(hit.key)
                .map_or_else(|| format!("syscall_{}", hit.key), str::to_owned);
            put("kind", "syscall".into());
            put("syscall", sys.clone().into());
            put("syscall_nr", hit.key.into());
            put("ret", (hit.aux as i64).into());
            put("tid", hit.tid.into());
            put("pid", hit.pid.into());
            put("comm", comm.clone().into());
            format!("{sys} by {comm} ({}) took {latency_ms:.3} ms", hit.tid)
        }
        Some(RuleKind::Runqueue) => {
            put("kind", "runqueue".into());
            put("tid", hit.tid.into());
            put("pid", hit.pid.into());
            put("comm", comm.clone().into());
            format!("{comm} ({}) waited {latency_ms:.3} ms to run", hit.tid)
        }
        Some(RuleKind::Block) => {
            let dev = schemas::event::dev_name(hit.key as u32);
            put("kind", "block".into());
            put("device", dev.clone().into());
            put("sector", hit.aux.into());
            format!("block request on {dev} took {latency_ms:.3} ms")
        }
        Some(RuleKind::Irq) => {
            put("kind", "irq".into());
            put("irq", hit.key.into());
            format!("irq {} handler took {latency_ms:.3} ms", hit.key)
        }
        None => format!("rule #{} fired", hit.rule),
    };
    let signature = match rule.map(|r| r.kind) {
        Some(RuleKind::Syscall | RuleKind::Runqueue) => format!("rule:{name}:{comm}"),
        Some(RuleKind::Block) => format!("rule:{name}:{}", hit.key),
        _ => format!("rule:{name}"),
    };
    let mut t = Trigger::new(Source::Rule, format!("rule {name}: {what}"), signature);
    t.fields = fields;
    t.post_ms = rule.map(|r| r.post_ms);
    t.already_frozen = hit.frozen != 0;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Result<Rule, String> {
        let r: RuleConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        r.check().map_err(|e| e.to_string())
    }

    #[test]
    fn valid_rules() {
        let r =
            rule("name='fsync'\nkind='syscall'\nsyscall='fdatasync'\ncomm='pg'\nthreshold='50ms'")
                .unwrap();
        assert_eq!(r.syscall_nr, Some(75));
        assert_eq!(r.threshold_ns, 50_000_000);
        assert_eq!(r.min_interval_ns, 1_000_000_000);
        let r = rule("name='d'\nkind='block'\ndevice='8:16'\nthreshold='20ms'").unwrap();
        assert_eq!(r.device, Some((8 << 20) | 16));
        let r =
            rule("name='rq'\nkind='runqueue'\ncomm='app'\nthreshold='5ms'\npost='100ms'").unwrap();
        assert_eq!(r.post_ms, 100);
        assert!(rule("name='i'\nkind='irq'\nthreshold='1ms'").is_ok());
        // The cgroup of the task that waited, read from BTF-resolved offsets in the program.
        assert!(rule("name='c'\nkind='runqueue'\ncgroup='/db'\nthreshold='1ms'").is_ok());
    }

    #[test]
    fn invalid_rules() {
        let cases = [
            (
                "name='x'\nkind='syscall'\nthreshold='1ms'",
                "need `syscall`",
            ),
            (
                "name='x'\nkind='syscall'\nsyscall='fdatasink'\nthreshold='1ms'",
                "not an x86-64 syscall",
            ),
            (
                "name='x'\nkind='irq'\ncgroup='/a'\nthreshold='1ms'",
                "cgroup does not apply",
            ),
            (
                "name='x'\nkind='block'\ndevice='sda'\nthreshold='1ms'",
                "MAJOR:MINOR",
            ),
            ("name='x'\nkind='irq'\nthreshold='0ms'", "above 0"),
            (
                "name='x'\nkind='irq'\nthreshold='1ms'\nmin_interval='10us'",
                "at least 1ms",
            ),
            ("name='a b'\nkind='irq'\nthreshold='1ms'", "name must be"),
            ("name='x'\nkind='disk'\nthreshold='1ms'", "unknown variant"),
            (
                "name='x'\nkind='irq'\nthreshold='1ms'\nextra=1",
                "unknown field",
            ),
            (
                "name='x'\nkind='syscall'\nsyscall='read'\ncomm='a-very-long-comm'\nthreshold='1ms'",
                "1 to 15 bytes",
            ),
        ];
        for (text, want) in cases {
            let e = rule(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let r: RuleConfig = toml::from_str("name='x'\nkind='irq'\nthreshold='1ms'").unwrap();
        assert!(
            check_rules(&[r.clone(), r.clone()])
                .unwrap_err()
                .to_string()
                .contains("unique")
        );
        assert!(
            check_rules(&vec![r; 9])
                .unwrap_err()
                .to_string()
                .contains("more than the 8")
        );
    }
}

//! Thread states over a span, for every thread: what the story of one thread is built from.
//!
//! Every thread is always in one of three states, as Perfetto's thread-state track has them:
//! on a CPU (`running`), runnable but not on a CPU (`runnable`: woken, or preempted), or
//! blocked (switched out in `S` or `D` state, until a wakeup). `sched_switch` and
//! `sched_wakeup` move a thread between them; the state of each thread is followed from the
//! first event of the snapshot, so a thread already blocked when the span opens is known to
//! be, but intervals are kept only where they overlap the span: memory grows with the
//! scheduling events of the span, not of the snapshot.
//!
//! A wakeup names its waker: the thread current on the waking CPU, or the hard or soft
//! interrupt that CPU was handling (a disk completion, a network packet, a timer), since
//! a wakeup from interrupt context has nothing to do with the interrupted thread.

use std::collections::HashMap;

use schemas::event::{Event, EventData};

use super::Span;

/// Where a thread is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// On a CPU.
    Running,
    /// Runnable, waiting for a CPU.
    Runnable,
    /// Switched out until a wakeup.
    Blocked,
}

/// Who made a thread runnable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waker {
    /// This thread (0: the idle task, i.e. a wakeup the trace cannot attribute further).
    Thread(u32),
    /// Hard interrupt handler of this line.
    Irq(u32),
    /// Softirq of this vector.
    Softirq(u32),
}

/// Interrupt time a CPU spent, cumulative: a running interval's share is the difference of
/// two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IrqTime {
    /// Hard interrupt handlers.
    pub hard_ns: u64,
    /// Softirqs, per vector, without the hard interrupts nested in them.
    pub soft_ns: [u64; 10],
}

impl IrqTime {
    fn minus(&self, earlier: &IrqTime) -> IrqTime {
        let mut d = IrqTime {
            hard_ns: self.hard_ns.saturating_sub(earlier.hard_ns),
            ..IrqTime::default()
        };
        for (i, s) in d.soft_ns.iter_mut().enumerate() {
            *s = self.soft_ns[i].saturating_sub(earlier.soft_ns[i]);
        }
        d
    }

    /// All of it.
    pub fn total(&self) -> u64 {
        self.hard_ns + self.soft_ns.iter().sum::<u64>()
    }

    /// Adds the share `part / whole` of `o`.
    pub fn add_share(&mut self, o: &IrqTime, part: u64, whole: u64) {
        if whole == 0 {
            return;
        }
        let share = |ns: u64| (u128::from(ns) * u128::from(part) / u128::from(whole)) as u64;
        self.hard_ns += share(o.hard_ns);
        for (i, s) in self.soft_ns.iter_mut().enumerate() {
            *s += share(o.soft_ns[i]);
        }
    }

    /// Adds `o`.
    pub fn add(&mut self, o: &IrqTime) {
        self.hard_ns += o.hard_ns;
        for (i, s) in self.soft_ns.iter_mut().enumerate() {
            *s += o.soft_ns[i];
        }
    }
}

/// A syscall in progress: number and its first two arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InCall {
    pub nr: u64,
    pub arg0: u64,
    pub arg1: u64,
    pub entry_ns: u64,
}

/// One thread in one state, clipped to the span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Interval {
    pub tid: u32,
    pub state: State,
    pub start: u64,
    pub end: u64,
    /// CPU it ran on (running), or last ran on.
    pub cpu: u32,
    /// The syscall it was in, if any (blocked: the one it blocked in).
    pub call: Option<InCall>,
    /// Who ended a blocked interval, or made a runnable one runnable.
    pub waker: Option<Waker>,
    /// Runnable because it was preempted (rather than woken).
    pub preempted: bool,
    /// Interrupt time on its CPU while it ran (running only).
    pub irq: IrqTime,
}

/// A completed syscall of the subject thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    pub nr: u64,
    pub arg0: u64,
    pub arg1: u64,
    pub entry_ns: u64,
    pub exit_ns: u64,
    pub ret: i64,
}

/// A block request that completed, with who issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Io {
    pub tid: u32,
    pub dev: u32,
    pub op: u32,
    pub bytes: u32,
    pub issue_ns: u64,
    pub complete_ns: u64,
}

#[derive(Clone, Debug)]
struct Thread {
    state: State,
    since: u64,
    cpu: u32,
    call: Option<InCall>,
    waker: Option<Waker>,
    preempted: bool,
    irq_at_since: IrqTime,
    /// Its last event in its own context.
    seen_ns: u64,
}

#[derive(Clone, Debug, Default)]
struct Cpu {
    /// The thread believed on this CPU (0: none known).
    current: u32,
    cum: IrqTime,
    hard: Option<(u32, u64)>,
    soft: Option<(u32, u64, u64)>,
}

/// Follows every thread and keeps what overlaps the span.
pub(crate) struct Tracker {
    span: Span,
    subject: u32,
    threads: HashMap<u32, Thread>,
    cpus: Vec<Cpu>,
    pending_io: HashMap<(u32, u64), (u32, u64, u32, u32)>,
    /// Intervals of every thread inside the span.
    pub intervals: Vec<Interval>,
    /// The subject's completed syscalls inside the span.
    pub calls: Vec<Call>,
    /// Block requests overlapping the span.
    pub ios: Vec<Io>,
    /// Processes the subject forked inside the span.
    pub forks: u64,
    /// Processes forked inside the span, whoever forked them: child pid to parent pid.
    pub born: HashMap<u32, u32>,
    /// Last event seen.
    pub last_ns: u64,
    /// Hard interrupt handler names by line.
    pub irq_names: HashMap<u32, String>,
}

impl Tracker {
    pub fn new(span: Span, subject: u32) -> Tracker {
        Tracker {
            span,
            subject,
            threads: HashMap::new(),
            cpus: Vec::new(),
            pending_io: HashMap::new(),
            intervals: Vec::new(),
            calls: Vec::new(),
            ios: Vec::new(),
            forks: 0,
            born: HashMap::new(),
            last_ns: 0,
            irq_names: HashMap::new(),
        }
    }

    /// Whether events from `ts` on cannot change the story any more.
    pub fn done(&self, ts: u64) -> bool {
        ts > self.span.end
    }

    fn cpu(&mut self, cpu: u32) -> &mut Cpu {
        let i = cpu as usize;
        if self.cpus.len() <= i {
            self.cpus.resize(i + 1, Cpu::default());
        }
        &mut self.cpus[i]
    }

    fn irq_now(&mut self, cpu: u32) -> IrqTime {
        self.cpu(cpu).cum
    }

    /// Ends `tid`'s current state at `ts` (keeping it if it overlaps the span), and starts
    /// `next` (if any) from `ts`.
    fn set(&mut self, tid: u32, ts: u64, next: Option<(State, u32)>, waker: Option<Waker>) {
        if tid == 0 {
            return;
        }
        let irq_now = next
            .map(|(_, cpu)| cpu)
            .or_else(|| self.threads.get(&tid).map(|t| t.cpu))
            .map(|cpu| self.irq_now(cpu))
            .unwrap_or_default();
        let span = self.span;
        if let Some(t) = self.threads.get(&tid) {
            let (start, end) = (t.since.max(span.begin), ts.min(span.end));
            if start < end {
                let ran_irq = if t.state == State::Running {
                    let now = self
                        .cpus
                        .get(t.cpu as usize)
                        .map(|c| c.cum)
                        .unwrap_or_default();
                    now.minus(&t.irq_at_since)
                } else {
                    IrqTime::default()
                };
                self.intervals.push(Interval {
                    tid,
                    state: t.state,
                    start,
                    end,
                    cpu: t.cpu,
                    call: t.call,
                    waker: if t.state == State::Blocked {
                        waker
                    } else {
                        t.waker
                    },
                    preempted: t.preempted,
                    irq: ran_irq,
                });
            }
        }
        match next {
            Some((state, cpu)) => {
                let call = self.threads.get(&tid).and_then(|t| t.call);
                let waker = if state == State::Runnable {
                    waker
                } else {
                    None
                };
                let seen_ns = self.threads.get(&tid).map_or(ts, |t| t.seen_ns);
                let t = Thread {
                    state,
                    since: ts,
                    cpu,
                    call,
                    waker,
                    preempted: false,
                    irq_at_since: irq_now,
                    seen_ns,
                };
                self.threads.insert(tid, t);
                if state == State::Running {
                    self.cpu(cpu).current = tid;
                }
            }
            None => {
                self.threads.remove(&tid);
            }
        }
    }

    /// The waker of a wakeup on `cpu` by the current task `tid`.
    fn waker(&self, cpu: u32, tid: u32) -> Waker {
        match self.cpus.get(cpu as usize) {
            Some(Cpu {
                hard: Some((irq, _)),
                ..
            }) => Waker::Irq(*irq),
            Some(Cpu {
                soft: Some((vec, _, _)),
                ..
            }) => Waker::Softirq(*vec),
            _ => Waker::Thread(tid),
        }
    }

    /// Forgets the thread believed on `cpu` unless it is `tid`: the CPU runs `tid`, so the
    /// other was switched out unseen (before the scheduler's events were recorded, or by a
    /// lost record). It ran until its last event; from then on its state is unknown, rather
    /// than "running" to the end of the span.
    fn not_on(&mut self, cpu: u32, tid: u32) {
        let cur = self.cpu(cpu).current;
        if cur == 0 || cur == tid {
            return;
        }
        self.cpu(cpu).current = 0;
        if let Some(t) = self.threads.get(&cur)
            && t.state == State::Running
            && t.cpu == cpu
        {
            let seen = t.seen_ns.max(t.since);
            self.set(cur, seen, None, None);
        }
    }

    /// Feeds one event (time-ordered, from the first of the snapshot).
    pub fn event(&mut self, ev: &Event) {
        let ts = ev.ts_ns;
        self.last_ns = ts;
        if ev.tid != 0 {
            self.not_on(ev.cpu, ev.tid);
        }
        // A thread seen doing something runs: its state is known from its first event.
        if ev.tid != 0 && !self.threads.contains_key(&ev.tid) {
            let irq = self.irq_now(ev.cpu);
            self.threads.insert(
                ev.tid,
                Thread {
                    state: State::Running,
                    since: ts,
                    cpu: ev.cpu,
                    call: None,
                    waker: None,
                    preempted: false,
                    irq_at_since: irq,
                    seen_ns: ts,
                },
            );
            self.cpu(ev.cpu).current = ev.tid;
        }
        if let Some(t) = self.threads.get_mut(&ev.tid) {
            t.seen_ns = ts;
        }
        match ev.data {
            EventData::SyscallEntry(s) => {
                if let Some(t) = self.threads.get_mut(&ev.tid) {
                    t.call = Some(InCall {
                        nr: s.id,
                        arg0: s.args[0],
                        arg1: s.args[1],
                        entry_ns: ts,
                    });
                }
            }
            EventData::SyscallExit(s) => {
                let call = self.threads.get_mut(&ev.tid).and_then(|t| t.call.take());
                if ev.tid == self.subject
                    && let Some(c) = call
                    && c.nr == s.id
                    && ts >= self.span.begin
                    && c.entry_ns <= self.span.end
                {
                    self.calls.push(Call {
                        nr: c.nr,
                        arg0: c.arg0,
                        arg1: c.arg1,
                        entry_ns: c.entry_ns,
                        exit_ns: ts,
                        ret: s.ret,
                    });
                }
            }
            EventData::SchedSwitch(s) => {
                let preempted = s.prev_state & 0xff == 0;
                let next = if preempted {
                    State::Runnable
                } else {
                    State::Blocked
                };
                self.set(ev.tid, ts, Some((next, ev.cpu)), None);
                if let Some(t) = self.threads.get_mut(&ev.tid) {
                    t.preempted = preempted;
                }
                self.set(s.next_tid, ts, Some((State::Running, ev.cpu)), None);
            }
            EventData::SchedWakeup(w) | EventData::SchedWakeupNew(w) => {
                let blocked = self
                    .threads
                    .get(&w.tid)
                    .is_none_or(|t| t.state == State::Blocked);
                if blocked {
                    let waker = self.waker(ev.cpu, ev.tid);
                    let cpu = self.threads.get(&w.tid).map_or(w.target_cpu, |t| t.cpu);
                    self.set(w.tid, ts, Some((State::Runnable, cpu)), Some(waker));
                }
            }
            EventData::ProcessExit(x) => self.set(x.tid, ts, None, None),
            EventData::ProcessFork(f) => {
                if f.parent_tid == self.subject && self.span.contains(ts) {
                    self.forks += 1;
                }
                if self.span.contains(ts) && f.child_pid != f.parent_pid {
                    self.born.insert(f.child_pid, f.parent_pid);
                }
            }
            EventData::ProcessExec(_) => {}
            EventData::BlockRqIssue(b) => {
                self.pending_io
                    .insert((b.dev, b.sector), (ev.tid, ts, b.op, b.bytes));
            }
            EventData::BlockRqComplete(b) => {
                if let Some((tid, issue, op, bytes)) = self.pending_io.remove(&(b.dev, b.sector))
                    && issue <= self.span.end
                    && ts >= self.span.begin
                {
                    self.ios.push(Io {
                        tid,
                        dev: b.dev,
                        op,
                        bytes,
                        issue_ns: issue,
                        complete_ns: ts,
                    });
                }
            }
            EventData::IrqHandlerEntry(i) => {
                self.cpu(ev.cpu).hard = Some((i.irq, ts));
                self.irq_names
                    .entry(i.irq)
                    .or_insert_with(|| schemas::cstr_lossy(&i.name));
            }
            EventData::IrqHandlerExit(_) => {
                let c = self.cpu(ev.cpu);
                if let Some((_, since)) = c.hard.take() {
                    c.cum.hard_ns += ts.saturating_sub(since);
                }
            }
            EventData::SoftirqEntry(s) => {
                let c = self.cpu(ev.cpu);
                let hard = c.cum.hard_ns;
                c.soft = Some((s.vec, ts, hard));
            }
            EventData::SyscallPath(..) => {}
            EventData::SoftirqExit(_) => {
                let c = self.cpu(ev.cpu);
                if let Some((vec, since, hard_then)) = c.soft.take()
                    && let Some(slot) = c.cum.soft_ns.get_mut(vec as usize)
                {
                    let nested = c.cum.hard_ns.saturating_sub(hard_then);
                    *slot += ts.saturating_sub(since).saturating_sub(nested);
                }
            }
        }
    }

    /// Closes every open state at the span's end (or the last event, if earlier).
    pub fn finish(&mut self) {
        let end = self.last_ns.min(self.span.end);
        let tids: Vec<u32> = self.threads.keys().copied().collect();
        for tid in tids {
            let Some(t) = self.threads.get(&tid) else {
                continue;
            };
            let (state, cpu) = (t.state, t.cpu);
            self.set(tid, end, Some((state, cpu)), None);
        }
        self.intervals.sort_by_key(|i| (i.tid, i.start));
    }
}

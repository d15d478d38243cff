//! Requests recognised from syscalls alone, as LTTng's period analyses did: on a server thread a
//! request is the span from `accept`/`accept4` returning a connection's fd to the `close` of
//! that fd on the same thread. Keep-alive connections make one period of several requests; it
//! is still the time a client waited on that thread.

use std::collections::HashMap;

use schemas::event::{Event, EventData, syscall_id};

use super::Span;
use crate::analyze::TopN;

/// One accept…close period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Period {
    pub tid: u32,
    pub fd: i64,
    pub span: Span,
}

/// Finds periods in a stream of events.
pub(crate) struct Periods {
    accept: u64,
    accept4: u64,
    close: u64,
    open: HashMap<(u32, i64), u64>,
    slowest: TopN<Period>,
    /// Periods completed.
    pub count: u64,
}

impl Default for Periods {
    fn default() -> Self {
        Periods {
            accept: syscall_id("accept").unwrap_or(u64::MAX),
            accept4: syscall_id("accept4").unwrap_or(u64::MAX),
            close: syscall_id("close").unwrap_or(u64::MAX),
            open: HashMap::new(),
            slowest: TopN::new(8),
            count: 0,
        }
    }
}

impl Periods {
    /// Feeds one event of a selected thread.
    pub fn event(&mut self, ev: &Event) {
        match ev.data {
            EventData::SyscallExit(s)
                if (s.id == self.accept || s.id == self.accept4) && s.ret >= 0 =>
            {
                self.open.insert((ev.tid, s.ret), ev.ts_ns);
            }
            EventData::SyscallEntry(s) if s.id == self.close => {
                let fd = s.args[0] as i64;
                if let Some(begin) = self.open.remove(&(ev.tid, fd)) {
                    self.count += 1;
                    let span = Span {
                        begin,
                        end: ev.ts_ns,
                    };
                    self.slowest.push(
                        span.len(),
                        Period {
                            tid: ev.tid,
                            fd,
                            span,
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// The slowest periods, slowest first.
    pub fn slowest(self) -> Vec<Period> {
        self.slowest.into_sorted()
    }
}

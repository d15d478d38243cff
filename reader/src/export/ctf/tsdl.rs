//! The trace's `metadata` file: CTF 1.8 TSDL text describing the clock, the packets, the event
//! header and every event class that occurs in the streams.

use std::collections::HashMap;
use std::fmt::Write as _;

use schemas::manifest::Manifest;

use super::events::Fields;

/// The lttng-modules version the trace claims to come from. lttng-analyses reads it to pick
/// how to interpret some fields; 2.13 is recent enough that no legacy workaround (e.g. the
/// pre-2.7.1 priority offset) applies.
pub const TRACER_VERSION: (u32, u32, u32) = (2, 13, 0);

/// One declared field: name, TSDL type, suffix after the name.
type FieldDecl = (&'static str, &'static str, &'static str);

/// Event classes by name, numbered in order of first appearance, so only the syscalls that
/// actually occur get a class and the streams can be written in one pass.
#[derive(Default)]
pub struct Classes {
    by_name: HashMap<String, u16>,
    list: Vec<(String, Vec<FieldDecl>)>,
}

impl Classes {
    /// The id of the class `name`, declaring it with the types of `fields` on first use.
    pub fn id(&mut self, name: &str, fields: &Fields) -> u16 {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        // Class names come from a closed set (fixed kinds, statedump, x86-64 syscall names),
        // far fewer than 2^16.
        let id = u16::try_from(self.list.len()).expect("fewer than 65536 event classes");
        let decls = fields
            .iter()
            .map(|(n, v)| (*n, v.tsdl_type(), v.tsdl_suffix()))
            .collect();
        self.list.push((name.to_owned(), decls));
        self.by_name.insert(name.to_owned(), id);
        id
    }
}

/// A TSDL string literal's content: quotes and backslashes escaped, control characters
/// replaced, so any host name or trigger reason yields valid metadata.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses 32 hex digits, dashes ignored (snapshot ids, boot ids).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut u = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        u[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(u)
}

/// The whole metadata text.
pub fn metadata(m: &Manifest, trace_uuid: &[u8; 16], clock_uuid: &[u8; 16], c: &Classes) -> String {
    let mut s = String::with_capacity(4096 + c.list.len() * 512);
    let (offset_s, offset_ns) = (
        m.clocks
            .realtime_minus_monotonic_ns
            .div_euclid(1_000_000_000),
        m.clocks
            .realtime_minus_monotonic_ns
            .rem_euclid(1_000_000_000),
    );
    let (major, minor, patch) = TRACER_VERSION;
    // The first line must be exactly this for readers to take the file as TSDL text.
    let _ = write!(
        s,
        r#"/* CTF 1.8 */

typealias integer {{ size = 8; align = 8; signed = false; }} := uint8_t;
typealias integer {{ size = 16; align = 8; signed = false; }} := uint16_t;
typealias integer {{ size = 32; align = 8; signed = false; }} := uint32_t;
typealias integer {{ size = 64; align = 8; signed = false; }} := uint64_t;
typealias integer {{ size = 32; align = 8; signed = true; }} := int32_t;

trace {{
	major = 1;
	minor = 8;
	uuid = "{trace_uuid}";
	byte_order = le;
	packet.header := struct {{
		uint32_t magic;
		uint8_t  uuid[16];
		uint32_t stream_id;
		uint64_t stream_instance_id;
	}};
}};

env {{
	hostname = {hostname};
	domain = "kernel";
	sysname = "Linux";
	kernel_release = {release};
	kernel_version = {version};
	tracer_name = "lttng-modules";
	tracer_major = {major};
	tracer_minor = {minor};
	tracer_patchlevel = {patch};
	trace_buffering_scheme = "global";
	trace_name = {name};
	flightrec_version = {fr_version};
	flightrec_snapshot_id = {snapshot_id};
	flightrec_trigger = {trigger};
	flightrec_boot_id = {boot_id};
	flightrec_records_overwritten = {overwritten};
	flightrec_records_lost = {lost};
}};

clock {{
	name = "monotonic";
	uuid = "{clock_uuid}";
	description = "CLOCK_MONOTONIC of the recording host, offset to CLOCK_REALTIME";
	freq = 1000000000;
	precision = {precision};
	offset_s = {offset_s};
	offset = {offset_ns};
	absolute = false;
}};

typealias integer {{
	size = 64; align = 8; signed = false;
	map = clock.monotonic.value;
}} := uint64_clock_monotonic_t;

stream {{
	id = 0;
	event.header := struct {{
		uint16_t id;
		uint64_clock_monotonic_t timestamp;
	}};
	packet.context := struct {{
		uint64_clock_monotonic_t timestamp_begin;
		uint64_clock_monotonic_t timestamp_end;
		uint64_t content_size;
		uint64_t packet_size;
		uint64_t packet_seq_num;
		uint64_t events_discarded;
		uint32_t cpu_id;
	}};
	event.context := struct {{
		int32_t _tid;
		int32_t _pid;
	}};
}};
"#,
        trace_uuid = uuid_string(trace_uuid),
        clock_uuid = uuid_string(clock_uuid),
        hostname = quoted(&m.host.hostname),
        release = quoted(&m.host.kernel_release),
        version = quoted(&m.host.kernel_version),
        name = quoted(&m.name),
        fr_version = quoted(&m.recorder.version),
        snapshot_id = quoted(&m.snapshot_id),
        trigger = quoted(&format!("{}: {}", m.trigger.source, m.trigger.reason)),
        boot_id = quoted(&m.host.boot_id),
        precision = m.clocks.uncertainty_ns,
        overwritten = m
            .coverage
            .iter()
            .map(|c| c.records_overwritten)
            .sum::<u64>(),
        lost = m.coverage.iter().map(|c| c.records_lost).sum::<u64>(),
    );
    for (id, (name, fields)) in c.list.iter().enumerate() {
        let _ = write!(
            s,
            "\nevent {{\n\tname = {};\n\tid = {id};\n\tstream_id = 0;\n\tfields := struct {{\n",
            quoted(name)
        );
        for (field, ty, suffix) in fields {
            // LTTng prefixes payload field names with `_`; readers strip it.
            let _ = writeln!(s, "\t\t{ty} _{field}{suffix};");
        }
        s.push_str("\t};\n};\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_parse_and_print() {
        let u = parse_uuid("0123456789abcdef0123456789ABCDEF").unwrap();
        assert_eq!(uuid_string(&u), "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(parse_uuid(&uuid_string(&u)), Some(u));
        assert_eq!(parse_uuid("xyz"), None);
        assert_eq!(parse_uuid("0123456789abcdef0123456789abcdeg"), None);
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quoted("a\"b\\c\nd"), r#""a\"b\\c d""#);
    }

    #[test]
    fn negative_offsets_split_into_seconds_and_positive_ns() {
        let mut m = Manifest::default();
        m.clocks.realtime_minus_monotonic_ns = -1_500_000_000;
        let t = metadata(&m, &[0; 16], &[0; 16], &Classes::default());
        assert!(t.starts_with("/* CTF 1.8 */\n"));
        assert!(t.contains("offset_s = -2;"), "{t}");
        assert!(t.contains("offset = 500000000;"), "{t}");
    }
}

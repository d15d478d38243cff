#!/usr/bin/env python3
"""Decodes a Perfetto trace with the protobuf classes of PyPI's `perfetto` package and prints
what it holds as one JSON object, for the exporter's tests to compare with the snapshot.

Usage: decode_trace.py TRACE

Output keys:
  events          every ftrace event, sorted by (ts, cpu) with file order kept among equals:
                  {ts, cpu, tid, type, fields} where type is the name of the FtraceEvent oneof
                  member and fields holds the typed message's fields that are present
  bundles         [{cpu, events}] in file order
  clock_snapshots [{timestamp, primary, clocks: {clock_id: timestamp}}]
  system_info     the utsname fields and num_cpus, if present
  trace_uuid      {msb, lsb}, if present
  process_trees   [{timestamp, processes: [...], threads: [...]}] in file order
  sequences       {trusted_packet_sequence_id: [first_packet_on_sequence of each packet]}
  errors          what is wrong with the file: unknown fields anywhere in what we decode,
                  packets without a sequence, events out of time order within a CPU
"""

import json
import sys

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

try:
    from google.protobuf.unknown_fields import UnknownFieldSet
except ImportError:  # older protobuf: messages still have UnknownFields()
    UnknownFieldSet = None


def is_repeated(fd):
    if hasattr(fd, "is_repeated"):
        return fd.is_repeated
    return fd.label == fd.LABEL_REPEATED


def unknown(msg):
    if UnknownFieldSet is not None:
        return [f.field_number for f in UnknownFieldSet(msg)]
    return [f.field_number for f in msg.UnknownFields()]


def present(msg):
    """The scalar fields that are set, by name; repeated ones as lists."""
    out = {}
    for fd, value in msg.ListFields():
        out[fd.name] = list(value) if is_repeated(fd) else value
    return out


def main():
    trace = pb.Trace()
    with open(sys.argv[1], "rb") as f:
        trace.ParseFromString(f.read())

    errors = []
    events = []
    bundles = []
    clock_snapshots = []
    process_trees = []
    sequences = {}
    system_info = None
    trace_uuid = None
    last_ts = {}

    def check_unknown(where, msg):
        extra = unknown(msg)
        if extra:
            errors.append(f"{where}: unknown fields {extra}")

    for i, pkt in enumerate(trace.packet):
        check_unknown(f"packet {i}", pkt)
        if not pkt.HasField("trusted_packet_sequence_id"):
            errors.append(f"packet {i}: no trusted_packet_sequence_id")
        sequences.setdefault(str(pkt.trusted_packet_sequence_id), []).append(
            pkt.first_packet_on_sequence
        )
        kind = pkt.WhichOneof("data")
        if kind == "ftrace_events":
            b = pkt.ftrace_events
            check_unknown(f"packet {i} bundle", b)
            bundles.append({"cpu": b.cpu, "events": len(b.event)})
            for j, ev in enumerate(b.event):
                where = f"packet {i} event {j}"
                check_unknown(where, ev)
                which = ev.WhichOneof("event")
                fields = {}
                if which is None:
                    errors.append(f"{where}: no typed event")
                else:
                    payload = getattr(ev, which)
                    check_unknown(f"{where} {which}", payload)
                    fields = present(payload)
                if ev.timestamp < last_ts.get(b.cpu, 0):
                    errors.append(f"{where}: cpu {b.cpu} goes back in time")
                last_ts[b.cpu] = ev.timestamp
                events.append(
                    {
                        "ts": ev.timestamp,
                        "cpu": b.cpu,
                        "tid": ev.pid,
                        "type": which,
                        "fields": fields,
                    }
                )
        elif kind == "clock_snapshot":
            cs = pkt.clock_snapshot
            check_unknown(f"packet {i} clock_snapshot", cs)
            clock_snapshots.append(
                {
                    "timestamp": pkt.timestamp,
                    "primary": cs.primary_trace_clock,
                    "clocks": {str(c.clock_id): c.timestamp for c in cs.clocks},
                }
            )
        elif kind == "system_info":
            si = pkt.system_info
            check_unknown(f"packet {i} system_info", si)
            system_info = present(si.utsname)
            if si.HasField("num_cpus"):
                system_info["num_cpus"] = si.num_cpus
        elif kind == "trace_uuid":
            trace_uuid = {"msb": pkt.trace_uuid.msb, "lsb": pkt.trace_uuid.lsb}
        elif kind == "process_tree":
            pt = pkt.process_tree
            for p in pt.processes:
                check_unknown(f"packet {i} process", p)
            for t in pt.threads:
                check_unknown(f"packet {i} thread", t)
            process_trees.append(
                {
                    "timestamp": pkt.timestamp,
                    "processes": [present(p) for p in pt.processes],
                    "threads": [present(t) for t in pt.threads],
                }
            )
        else:
            errors.append(f"packet {i}: unexpected data {kind}")

    events.sort(key=lambda e: (e["ts"], e["cpu"]))
    json.dump(
        {
            "events": events,
            "bundles": bundles,
            "clock_snapshots": clock_snapshots,
            "system_info": system_info,
            "trace_uuid": trace_uuid,
            "process_trees": process_trees,
            "sequences": sequences,
            "errors": errors,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()

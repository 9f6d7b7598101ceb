#!/usr/bin/env python3
"""Groups `perf script` samples of a godown server into the stages of BENCHMARKS.md's
per-stage table: by thread for the background threads, by the sampled (leaf) symbol on
the actix threads (HTTP workers and store arbiters share a name).

    perf record -F 999 -p <server pid> -o perf.data -- sleep 15
    perf script -i perf.data -F comm,ip,sym | python3 benches/stages.py
"""
import collections
import re
import sys

THREADS = [  # (thread name prefix, stage)
    ("checkpointer", "views into sled (checkpointer, sled-io)"),
    ("sled-io", "views into sled (checkpointer, sled-io)"),
    ("wal-writer", "log write + fdatasync (wal-writer, wal-preparer)"),
    ("wal-preparer", "log write + fdatasync (wal-writer, wal-preparer)"),
]
SYMBOLS = [  # (regex on the leaf symbol, stage), first match wins
    (r"^(mi_|_mi_|__rust_alloc|__rust_dealloc|__rustc::__rust_(alloc|dealloc|realloc))", "allocator"),
    (r"memcmp", "memcmp (string keys)"),
    (r"memcpy|memmove|memset", "memcpy / memmove / memset"),
    (r"^(finish_task_switch|_raw_spin_unlock|__schedule|schedule|try_to_wake_up|futex|"
     r"ep_|do_epoll|epoll|__x64_sys_futex|syscall$|irqentry|__rseq)", "kernel: wake-ups, switches, epoll"),
    (r"^(do_syscall_64|fdget|entry_SYSCALL|syscall_exit|__x64_sys)", "kernel: system calls"),
    (r"^(tcp_|__tcp|inet|ip_|__ip|sock_|skb|__skb|__sys_(send|recv)|__inet|"
     r"loopback|net_|__netif|__napi|napi|process_backlog|handle_softirqs|__dev_queue|"
     r"copy_to_iter|_copy_to_iter|_copy_from_iter|copy_folio|__check_object)", "kernel: loopback TCP"),
    (r"godown::domain::analytics", "domain: analytics counters"),
    (r"godown::domain::", "domain: the order's work"),
    (r"serde_json|serde_path_to_error|godown::http::json", "JSON read and render"),
    (r"bincode|crc32|godown::wal::format", "record and view encoding"),
    (r"godown::http::|godown::actor::directory", "godown's HTTP handlers and middleware"),
    (r"serde_core::ser|serde::ser", "JSON read and render"),
    (r"actix_http|actix_web|actix_router|actix_service|regex|actix_server|http::header|httparse|h1::|^bytes::",
     "HTTP parse, route, respond (actix-web)"),
    (r"core::fmt|itoa|humantime|alloc::fmt|String as core::fmt", "formatting (ids, times, numbers)"),
    (r"sha2::", "SHA-256 (private order ids, tokens)"),
    (r"sharded_slab", "metrics and tracing"),
    (r"actix::|tokio::|actix_rt|godown::actor::", "actor hop and runtime (mailboxes, tokio)"),
    (r"metrics|tracing|hdrhistogram", "metrics and tracing"),
    (r"hashbrown|btree|BTree|core::hash|sip::|Clone|clone|HashMap|drop_in_place|core::ptr", "std collections, clones, drops"),
    (r"^\[unknown\]|^$", "unattributed"),
]

def stage(comm, sym):
    for prefix, name in THREADS:
        if comm.startswith(prefix):
            return name
    if not comm.startswith("actix-rt"):
        return "other threads"
    for pattern, name in SYMBOLS:
        if re.search(pattern, sym):
            return name
    if re.match(r"^[a-z_0-9.]+$", sym):
        return "kernel: other"
    return "other user code"

counts = collections.Counter()
for line in sys.stdin:
    line = line.rstrip("\n")
    # "<comm> <ip> <symbol>"; the thread name may hold spaces and bars ("actix-rt|system").
    m = re.match(r"\s*(.*?)\s+([0-9a-f]+)\s(.*)$", line)
    if not m:
        continue
    comm, sym = m.group(1).strip(), re.sub(r"\+0x[0-9a-f]+$", "", m.group(3).strip())
    counts[stage(comm, sym)] += 1
total = sum(counts.values())
print(f"| stage | share of the server's CPU ({total} samples) |")
print("|---|---:|")
for name, n in counts.most_common():
    print(f"| {name} | {100 * n / total:.1f} % |")

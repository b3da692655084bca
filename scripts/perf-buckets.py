#!/usr/bin/env python3
"""Summarises `perf script -F comm,pid,tid,ip,sym` output with call chains (scripts/profile.sh).

    perf-buckets.py PERF_TXT [CLUSTER_DIR]

Per process: the share of its samples under each outermost bosun function (the first frame,
from the thread's root, that belongs to a bosun crate; else the outermost frame that is not
runtime plumbing), and the symbols hottest by self time. CLUSTER_DIR's NAME.pid files name
the processes.
"""
import collections
import pathlib
import re
import sys

# Frames that only carry work (runtimes, threads, allocators' entry points): never a bucket.
PLUMBING = re.compile(
    r"^(tokio::|std::|core::|alloc::|futures_\w+::|tracing::|tracing_\w+::|<?tokio::|"
    r"start_thread|clone3?$|__clone|_start$|__libc_start|main$|\[unknown\]|"
    r"<core::|<alloc::|<std::|<tokio::|<futures_\w+::|<tracing\w*::|<F as core::|"
    r"__GI_|__pthread)"
)
BOSUN = re.compile(r"^<?bosun(_\w+)?::")


def normalise(sym: str, depth: int = 4) -> str:
    """`<a::B as c::D>::f::{{closure}}::h1234` -> `a::B::f`, cut to `depth` path segments."""
    sym = re.sub(r"::h[0-9a-f]{16}$", "", sym)
    sym = re.sub(r"::\{\{closure\}\}", "", sym)
    sym = re.sub(r"^<(.+?) as [^>]+>", r"\1", sym)
    # Generic arguments, innermost first.
    prev = None
    while prev != sym:
        prev = sym
        sym = re.sub(r"<[^<>]*>", "", sym)
    sym = sym.lstrip("<")
    parts = [p for p in sym.split("::") if p]
    return "::".join(parts[:depth]) if parts else sym


def samples(path):
    """Yields (pid, frames innermost first) per sample."""
    head, frames = None, []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if head is not None:
                    yield head, frames
                head, frames = None, []
                continue
            if line[0] not in " \t":
                m = re.match(r"^(.*?)\s+(\d+)/(\d+)", line)
                head = int(m.group(2)) if m else -1
                frames = []
            else:
                parts = line.strip().split(None, 1)
                frames.append(parts[1] if len(parts) > 1 else "[unknown]")
    if head is not None:
        yield head, frames


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    names = {}
    if len(sys.argv) > 2:
        for p in pathlib.Path(sys.argv[2]).glob("*.pid"):
            try:
                names[int(p.read_text().strip())] = p.stem
            except ValueError:
                pass
    buckets = collections.defaultdict(collections.Counter)
    selfs = collections.defaultdict(collections.Counter)
    totals = collections.Counter()
    for pid, frames in samples(sys.argv[1]):
        name = names.get(pid, f"pid {pid}")
        totals[name] += 1
        if frames:
            selfs[name][normalise(re.sub(r"\+0x[0-9a-f]+$", "", frames[0]), 6)] += 1
        root_first = [re.sub(r"\+0x[0-9a-f]+$", "", fr) for fr in reversed(frames)]
        bucket = next((normalise(fr) for fr in root_first if BOSUN.match(fr)), None)
        if bucket is None:
            bucket = next((normalise(fr, 3) for fr in root_first if not PLUMBING.match(fr)), "(runtime only)")
        buckets[name][bucket] += 1
    every = sum(totals.values())
    for name, total in totals.most_common():
        print(f"\n## {name}: {total} samples ({100 * total / every:.1f} % of all)")
        print("\n| outermost bosun (or other) function | share |\n|---|---|")
        for b, n in buckets[name].most_common(25):
            print(f"| `{b}` | {100 * n / total:.1f} % |")
        print("\n| hottest symbol (self) | share |\n|---|---|")
        for s, n in selfs[name].most_common(15):
            print(f"| `{s}` | {100 * n / total:.1f} % |")


if __name__ == "__main__":
    main()

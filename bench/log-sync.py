#!/usr/bin/env python3
"""bench/log-sync.py — what a durable raft-log append costs on this disk, two ways.

    bench/log-sync.py [--writers 3] [--appends 3000] [--record 763] [--dir DIR]

Each writer (a process, as each server is) preallocates a 16 MiB file with zeros and syncs
it, then appends `--record`-byte records back to back, durably, `--appends` times:

  fdatasync      pwrite into the page cache, then fdatasync (the raft log before 596e41c);
  direct_dsync   O_DIRECT + O_DSYNC writes of whole 4 KiB blocks (the last partial block
                 rewritten with each append), as server/src/storage/log.rs does now.

Modes alternate (fdatasync, direct_dsync, twice), all writers at once. Prints per writer:
mean, p50 and p99 latency, and CPU per append. Files go to DIR (default: a temporary
directory under /var/tmp, which must be on a real disk for the numbers to mean anything)
and are removed at the end. Bounded: writers x appends x 4 rounds, nothing else.
"""
import argparse
import mmap
import os
import resource
import shutil
import sys
import tempfile
import time

ALIGN = 4096


def prepare(path, size):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    zeros = b"\0" * (1 << 20)
    for i in range(size >> 20):
        os.pwrite(fd, zeros, i << 20)
    os.fsync(fd)
    os.close(fd)


def run(path, mode, appends, record):
    flags = os.O_RDWR
    if mode == "direct_dsync":
        flags |= os.O_DIRECT | os.O_DSYNC
    fd = os.open(path, flags)
    block = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT needs
    rec = b"x" * record
    pos, tail = 0, b""
    lat = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for _ in range(appends):
        t = time.perf_counter()
        if mode == "direct_dsync":
            start = pos - len(tail)
            used = len(tail) + record
            length = (used + ALIGN - 1) // ALIGN * ALIGN
            block.seek(0)
            block.write(tail + rec + b"\0" * (length - used))
            os.pwrite(fd, memoryview(block)[:length], start)
            keep = used % ALIGN
            tail = bytes(block[used - keep:used])
        else:
            os.pwrite(fd, rec, pos)
            os.fdatasync(fd)
        pos += record
        lat.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    os.close(fd)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    lat.sort()
    us = lambda s: s * 1e6
    print(f"{mode:13s} mean={us(elapsed / appends):4.0f}us p50={us(lat[len(lat) // 2]):4.0f}us "
          f"p99={us(lat[int(len(lat) * 0.99)]):4.0f}us cpu/append={us(cpu / appends):3.0f}us",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=3)
    ap.add_argument("--appends", type=int, default=3000)
    ap.add_argument("--record", type=int, default=763)
    ap.add_argument("--dir")
    args = ap.parse_args()
    if args.record * args.appends > (16 << 20) - ALIGN:
        sys.exit("records do not fit the 16 MiB file")
    work = args.dir or tempfile.mkdtemp(prefix="muster-log-sync-", dir="/var/tmp")
    try:
        paths = [os.path.join(work, f"w{i}.log") for i in range(args.writers)]
        for mode in ["fdatasync", "direct_dsync", "fdatasync", "direct_dsync"]:
            print(f"== {mode} x {args.writers} writers", flush=True)
            for p in paths:
                prepare(p, 16 << 20)
            pids = []
            for p in paths:
                pid = os.fork()
                if pid == 0:
                    run(p, mode, args.appends, args.record)
                    os._exit(0)
                pids.append(pid)
            for pid in pids:
                os.waitpid(pid, 0)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for i in range(args.writers):
                try:
                    os.remove(os.path.join(work, f"w{i}.log"))
                except FileNotFoundError:
                    pass


if __name__ == "__main__":
    main()

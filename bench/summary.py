#!/usr/bin/env python3
"""summary.py RESULTS_FILE — the table bench/dns.sh prints at the end.

Reads the RESULT lines written by dns-anchor.sh `run` (only clean=yes runs count) and the
MEMORY lines written by bench/dns.sh, and prints (Markdown) the median [min..max] per
(name, rate), then the issue's targets with the measured values and whether each is met:
  muster-consul qps           >= 1.5 x bind-auth-consul qps (saturating runs)
  muster-consul p99           <  1 ms at the fixed half-load rate
  muster-consul srv_us_per_q  <= 4 us (saturating runs)
  muster-fwd-hit qps          >= unbound-fwd-hit qps (saturating runs)
  agent VmRSS (100 services, 300 checks) < 30 MB (decimal megabytes)
"""
import statistics
import sys


def parse(line):
    d = {}
    for tok in line.split()[1:]:
        if "=" in tok:
            k, v = tok.split("=", 1)
            d[k] = v
    return d


def fnum(x):
    if x != x:  # NaN
        return "-"
    if abs(x) >= 1000:
        return "%.0f" % x
    if abs(x) >= 10:
        return "%.1f" % x
    return "%.3f" % x


def main():
    path = sys.argv[1]
    runs, order, mem = {}, [], []
    dirty = 0
    for line in open(path):
        if line.startswith("MEMORY "):
            mem.append(parse(line))
            continue
        if not line.startswith("RESULT "):
            continue
        d = parse(line)
        if "error" in d:
            continue
        if d.get("clean") != "yes":
            dirty += 1
            continue
        key = (d["name"], d.get("rate", "max"))
        if key not in runs:
            runs[key] = []
            order.append(key)
        runs[key].append(d)

    def med(key, metric):
        vals = [float(r[metric]) for r in runs.get(key, []) if r.get(metric) not in (None, "", "nan")]
        return statistics.median(vals) if vals else float("nan")

    cols = ["qps", "p50_ms", "p99_ms", "lost_pct", "srv_cpu_pct", "srv_us_per_q", "gen_cpu_pct",
            "other_cpu_pct"]
    print("### DNS runs: median [min..max] of clean runs (%s)" % path)
    print()
    print("| name | rate | n | " + " | ".join(cols) + " |")
    print("|" + "---|" * (3 + len(cols)))
    for key in order:
        cells = []
        for m in cols:
            vals = [float(r[m]) for r in runs[key] if r.get(m) not in (None, "", "nan")]
            cells.append("%s [%s..%s]" % (fnum(statistics.median(vals)), fnum(min(vals)), fnum(max(vals)))
                         if vals else "-")
        print("| %s | %s | %d | %s |" % (key[0], key[1], len(runs[key]), " | ".join(cells)))
    if dirty:
        print("\n(%d run(s) not clean, left out)" % dirty)

    if mem:
        print()
        print("### Agent memory")
        print()
        print("| agent | services | checks | VmRSS MB | VmHWM MB | threads |")
        print("|---|---|---|---|---|---|")
        for m in mem:
            print("| %s | %s | %s | %.1f | %.1f | %s |" % (
                m.get("name"), m.get("services", "-"), m.get("checks", "-"),
                int(m["rss_kb"]) * 1024 / 1e6, int(m["hwm_kb"]) * 1024 / 1e6, m.get("threads", "-")))

    # the targets of issue 2
    rates = [k[1] for k in order if k[0] == "muster-consul" and k[1] != "max"]
    half = rates[-1] if rates else None
    mc, bc = med(("muster-consul", "max"), "qps"), med(("bind-auth-consul", "max"), "qps")
    mf, uf = med(("muster-fwd-hit", "max"), "qps"), med(("unbound-fwd-hit", "max"), "qps")
    us = med(("muster-consul", "max"), "srv_us_per_q")
    p99 = med(("muster-consul", half), "p99_ms") if half else float("nan")
    rss = [m for m in mem if m.get("name") == "muster-checks"]
    rss_mb = int(rss[-1]["rss_kb"]) * 1024 / 1e6 if rss else float("nan")

    def row(what, measured, goal, ok):
        verdict = "-" if ok is None else ("yes" if ok else "**NO**")
        print("| %s | %s | %s | %s |" % (what, measured, goal, verdict))

    def ratio(a, b):
        return a / b if b == b and b > 0 and a == a else float("nan")

    print()
    print("### Targets (issue 2)")
    print()
    print("| target | measured | goal | met |")
    print("|---|---|---|---|")
    r = ratio(mc, bc)
    row("`.consul` qps vs Bind9 (saturating)", "%.2fx (%s / %s)" % (r, fnum(mc), fnum(bc)), ">= 1.5x",
        r >= 1.5 if r == r else None)
    row("`.consul` p99 at half load (%s q/s)" % (half or "-"), "%s ms" % fnum(p99), "< 1 ms",
        p99 < 1.0 if p99 == p99 else None)
    row("`.consul` server CPU per query (saturating)", "%s us" % fnum(us), "<= 4 us",
        us <= 4.0 if us == us else None)
    r = ratio(mf, uf)
    row("`fwd-hit` qps vs Unbound (saturating)", "%.2fx (%s / %s)" % (r, fnum(mf), fnum(uf)), ">= 1.0x",
        r >= 1.0 if r == r else None)
    eq, eus = med(("udpecho-ceiling", "max"), "qps"), med(("udpecho-ceiling", "max"), "srv_us_per_q")
    if eq == eq:
        row("(reference) trivial UDP echo, same placement", "%s q/s, %s us/q" % (fnum(eq), fnum(eus)),
            "physical limit", None)
    row("agent VmRSS, 100 services + 300 checks", "%.1f MB" % rss_mb, "< 30 MB",
        rss_mb < 30.0 if rss_mb == rss_mb else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

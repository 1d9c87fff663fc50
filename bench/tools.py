#!/usr/bin/env python3
"""Helpers for bench/compare (python3 standard library only).

  tools.py freeport [N]                 print N free loopback TCP ports (default 1)
  tools.py wait-amqp HOST PORT SECS     wait until an AMQP 0-9-1 server answers
  tools.py wait-nats HOST PORT SECS     wait until a NATS server sends INFO
  tools.py wait-line FILE REGEX SECS    wait until FILE has a line matching REGEX; print group 1
  tools.py child PID COMM SECS          wait for a descendant of PID named COMM; print its pid
  tools.py rss PID                      RSS (KiB) of PID and its descendants
  tools.py machine OUT.json DIR         measure fsync rate and sequential write speed in DIR
  tools.py record RAW SCEN BROKER REP RC OUT ERR [KEY=VALUE...]
                                        append one run (the client's JSON in OUT) to RAW
  tools.py summary RAW                  one line about the last run in RAW
  tools.py report RESULTS_DIR           aggregate raw.jsonl into table.md (and print it)
  tools.py busy SECS                    % of all CPUs busy over SECS (other load on the machine)
  tools.py update-doc DOC TABLE         replace the results section of DOC with TABLE
"""

import json
import os
import re
import socket
import statistics
import sys
import time


def die(msg, code=1):
    print(f"tools.py: {msg}", file=sys.stderr)
    sys.exit(code)


# ------------------------------------------------------------------ ports


def freeport(n=1):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_amqp(host, port, secs):
    deadline = time.time() + secs
    last = "no attempt"
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                s.settimeout(3)
                data = s.recv(7)
                # connection.start: method frame (type 1) on channel 0.
                if len(data) >= 1 and data[0] == 1:
                    return
                last = f"unexpected reply {data!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    die(f"AMQP server {host}:{port} not ready after {secs}s ({last})")


def wait_nats(host, port, secs):
    deadline = time.time() + secs
    last = "no attempt"
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.settimeout(3)
                if s.recv(4) == b"INFO":
                    return
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    die(f"NATS server {host}:{port} not ready after {secs}s ({last})")


def wait_line(path, regex, secs):
    pat = re.compile(regex)
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    m = pat.search(line)
                    if m:
                        print(m.group(1) if m.groups() else line.strip())
                        return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    die(f"no line matching {regex!r} in {path} after {secs}s")


# ------------------------------------------------------------------ /proc


def proc_children():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2 :].split()
        kids.setdefault(int(rest[1]), []).append(int(name))
    return kids


def tree(root):
    kids = proc_children()
    out, i = [root], 0
    while i < len(out):
        out.extend(kids.get(out[i], []))
        i += 1
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def child(pid, name, secs):
    deadline = time.time() + secs
    while time.time() < deadline:
        for p in tree(pid)[1:]:
            if comm(p) == name:
                print(p)
                return
        if comm(pid) is None:
            die(f"process {pid} exited before starting {name}")
        time.sleep(0.05)
    die(f"no {name} under pid {pid} after {secs}s")


def rss(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# ------------------------------------------------------------------ machine


def machine(out, d):
    os.makedirs(d, exist_ok=True)
    res = {}
    # fsync rate of 4 KiB writes, ~2 s.
    path = os.path.join(d, "fsync.probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    buf = os.urandom(4096)
    lat = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 2.0:
        a = time.perf_counter()
        os.write(fd, buf)
        os.fsync(fd)
        lat.append(time.perf_counter() - a)
    el = time.perf_counter() - t0
    os.close(fd)
    os.unlink(path)
    lat.sort()
    res["fsync_4k_per_s"] = round(len(lat) / el)
    res["fsync_4k_p50_ms"] = round(lat[len(lat) // 2] * 1000, 3)
    res["fsync_4k_p99_ms"] = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 3)
    # sequential write, 1 GiB buffered in 1 MiB blocks with a final fdatasync
    # (what `dd bs=1M count=1024 conv=fdatasync` measures).
    path = os.path.join(d, "seq.probe")
    block = os.urandom(1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t0 = time.perf_counter()
    for _ in range(1024):
        os.write(fd, block)
    os.fdatasync(fd)
    el = time.perf_counter() - t0
    os.close(fd)
    os.unlink(path)
    res["seq_write_mib_per_s"] = round(1024 / el)
    res["cores"] = os.cpu_count()
    res["kernel"] = os.uname().release
    try:
        with open("/proc/meminfo") as f:
            res["mem_gib"] = round(int(f.readline().split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    res["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/etc/debian_version") as f:
            res["debian"] = f.read().strip()
    except OSError:
        pass
    with open(out, "w") as f:
        json.dump(res, f)
        f.write("\n")
    print(json.dumps(res))


# ------------------------------------------------------------------ report

BROKERS = ["ferry", "ferry-base", "rabbit-classic", "rabbit-quorum", "nats"]
LABEL = {
    "ferry": "Ferry",
    "ferry-base": "Ferry (base build)",
    "rabbit-classic": "RabbitMQ classic",
    "rabbit-quorum": "RabbitMQ quorum",
    "nats": "NATS JetStream",
}
SCEN = {
    "S1-100": "S1 durable 100 B",
    "S1-4k": "S1 durable 4 KiB",
    "S2": "S2 transient",
    "S3": "S3 fan-out ×10",
    "S4": "S4 200 queues",
    "S5": "S5 latency @5k/s",
    "S6-pub": "S6 backlog publish",
    "S6-drain": "S6 backlog drain",
    "S7": "S7 idle connections",
    "S8-fast": "S8 full-speed publisher",
    "S8-slow": "S8 slow publishers",
}


def med(vals):
    vals = [v for v in vals if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


def fmt(v, nd=0):
    if v is None:
        return "–"
    if nd == 0:
        return f"{v:,.0f}"
    return f"{v:,.{nd}f}"


def ratio(a, b, nd=2):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.{nd}f}×"


def get(r, *path):
    for p in path:
        if not isinstance(r, dict):
            return None
        r = r.get(p)
    return r


def first(r, *keys):
    for k in keys:
        v = r.get(k)
        if v is not None:
            return v
    return None


def norm(r):
    """One result in canonical names, whichever client wrote it.

    `ferry bench --json` writes e.g. elapsed_secs, received_msgs_per_sec,
    latency_p99_us, broker_peak_rss_kib; nats-bench writes the names of the
    original contract (duration_s, recv_rate, latency_us.p99,
    broker_rss_peak_kib). Both are accepted.
    """
    lat = r.get("latency_us") if isinstance(r.get("latency_us"), dict) else {}
    return {
        "sent": r.get("sent"),
        "confirmed": r.get("confirmed"),
        "received": r.get("received"),
        "duration_s": first(r, "duration_s", "elapsed_secs"),
        "send_rate": first(r, "send_rate", "sent_msgs_per_sec"),
        "confirm_rate": first(r, "confirm_rate", "confirmed_msgs_per_sec"),
        "recv_rate": first(r, "recv_rate", "received_msgs_per_sec"),
        "p50": first(lat, "p50") if lat else r.get("latency_p50_us"),
        "p99": first(lat, "p99") if lat else r.get("latency_p99_us"),
        "p999": first(lat, "p999") if lat else r.get("latency_p999_us"),
        "max": first(lat, "max") if lat else r.get("latency_max_us"),
        "client_cpu": r.get("client_cpu_us_per_msg"),
        "broker_cpu": r.get("broker_cpu_us_per_msg"),
        "rss_peak": first(r, "broker_rss_peak_kib", "broker_peak_rss_kib"),
        "rss_end": r.get("broker_rss_kib"),
        "rss_before": r.get("broker_rss_before_kib"),
        "rss_per_conn": r.get("broker_rss_per_connection_kib"),
        "idle_connections": r.get("idle_connections"),
        "confirm_p50": r.get("confirm_latency_p50_us"),
        "confirm_p99": r.get("confirm_latency_p99_us"),
    }


def pub_rate(n):
    """Publish rate: confirmed msg/s when confirms were on, else sent msg/s."""
    if n.get("confirmed") and n.get("confirm_rate"):
        return n["confirm_rate"]
    return n.get("send_rate")


def report(d):
    rows = []
    raw = os.path.join(d, "raw.jsonl")
    if not os.path.exists(raw):
        die(f"{raw} not found")
    with open(raw) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    machine_info = {}
    mp = os.path.join(d, "machine.json")
    if os.path.exists(mp):
        with open(mp) as f:
            machine_info = json.load(f)
    meta = {}
    mp = os.path.join(d, "meta.json")
    if os.path.exists(mp):
        with open(mp) as f:
            meta = json.load(f)

    # group: (scenario, broker) -> list of results (ok runs only)
    groups, failed = {}, {}
    for row in rows:
        key = (row["scenario"], row["broker"])
        if row.get("ok") and isinstance(row.get("result"), dict):
            groups.setdefault(key, []).append(row)
        else:
            failed.setdefault(key, []).append(row)

    def agg(scen, broker):
        rs = groups.get((scen, broker))
        if not rs:
            return None
        res = [norm(x["result"]) for x in rs]
        a = {
            "n": len(res),
            "pub": med([pub_rate(r) for r in res]),
            "recv": med([r["recv_rate"] for r in res]),
            "cpu": med([r["broker_cpu"] for r in res]),
            "ccpu": med([r["client_cpu"] for r in res]),
            "p50": med([r["p50"] for r in res]),
            "p99": med([r["p99"] for r in res]),
            "p999": med([r["p999"] for r in res]),
            "rss": med([r["rss_peak"] for r in res]),
        }
        if scen.startswith("S8"):
            # no consumers: the latency columns are publish→confirm
            a["p50"] = med([r["confirm_p50"] for r in res])
            a["p99"] = med([r["confirm_p99"] for r in res])
            a["p999"] = None
            per_sec = []
            for x in rs:
                r0, r1 = x.get("rounds_before"), x.get("rounds_after")
                secs = norm(x["result"])["duration_s"]
                if isinstance(r0, (int, float)) and isinstance(r1, (int, float)) and secs:
                    per_sec.append((r1 - r0) / secs)
            a["rounds_per_sec"] = med(per_sec)
        # the main rate of a scenario
        if scen == "S6-pub":
            a["rate"] = a["pub"]
        elif scen == "S7":
            a["rate"] = None
        else:
            a["rate"] = a["recv"] if a["recv"] else a["pub"]
        if scen == "S7":
            # the client's own figure if it gives one, else ours: RSS growth / N
            per = []
            for x, r in zip(rs, res):
                if r["rss_per_conn"] is not None:
                    per.append(r["rss_per_conn"])
                else:
                    conns = r["idle_connections"] or x.get("connections")
                    end = r["rss_end"] if r["rss_end"] is not None else r["rss_peak"]
                    before = r["rss_before"] if r["rss_before"] is not None else x.get("baseline_rss_kib")
                    if conns and end is not None and before is not None:
                        per.append((end - before) / conns)
            a["per_conn_kib"] = med(per)
            a["conns"] = med([r["idle_connections"] or x.get("connections") for x, r in zip(rs, res)])
            a["rss_end"] = med([r["rss_end"] for r in res])
            a["base"] = med([r["rss_before"] if r["rss_before"] is not None else x.get("baseline_rss_kib")
                             for x, r in zip(rs, res)])
        return a

    scens = [s for s in SCEN if any(k[0] == s for k in list(groups) + list(failed))]
    out = []
    out.append(f"Run `{meta.get('run_id', os.path.basename(d.rstrip('/')))}`"
               + (f", {meta.get('reps')} repetition(s), medians" if meta.get("reps") else "")
               + (f", {meta.get('duration')} s per measurement" if meta.get("duration") else "")
               + (" (quick smoke run: not a benchmark result)" if meta.get("quick") else "")
               + ".")
    if machine_info:
        m = machine_info
        out.append("")
        out.append(
            f"Machine: {m.get('cores')} cores ({m.get('cpu', '?')}), {m.get('mem_gib', '?')} GiB, "
            f"kernel {m.get('kernel')}, Debian {m.get('debian', '?')}; "
            f"fsync of 4 KiB writes {m.get('fsync_4k_per_s'):,}/s "
            f"(p50 {m.get('fsync_4k_p50_ms')} ms, p99 {m.get('fsync_4k_p99_ms')} ms); "
            f"sequential write {m.get('seq_write_mib_per_s'):,} MiB/s (buffered + fdatasync)."
        )
    if meta.get("busy_pct") is not None and meta["busy_pct"] >= 15:
        out.append("")
        out.append(f"Warning: before the run {meta['busy_pct']}% of the CPUs were busy with other "
                   "work; these figures are noisy.")
    if meta.get("versions"):
        out.append("")
        out.append("Versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    out.append("")
    out.append("| scenario | broker | msg/s | broker CPU µs/msg | client CPU µs/msg "
               "| p50 µs | p99 µs | p99.9 µs | broker peak RSS MiB | Ferry msg/s ÷ | Ferry CPU ÷ | Ferry p99 ÷ | runs |")
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    notes = []
    results = {}
    for s in scens:
        f = agg(s, "ferry")
        for b in BROKERS:
            a = agg(s, b)
            nfail = len(failed.get((s, b), []))
            results[(s, b)] = a
            if a is None:
                if nfail:
                    out.append(f"| {SCEN[s]} | {LABEL[b]} | failed | | | | | | | | | | 0/{nfail} |")
                continue
            rss_mib = a["rss"] / 1024 if a["rss"] is not None else None
            if s == "S7":
                rate_cell = "–"
            else:
                rate_cell = fmt(a["rate"])
            lat = s not in ("S6-pub", "S7")
            cells = [
                SCEN[s],
                LABEL[b],
                rate_cell,
                fmt(a["cpu"], 1) if s != "S7" else "–",
                fmt(a["ccpu"], 1) if s != "S7" else "–",
                fmt(a["p50"]) if lat else "–",
                fmt(a["p99"]) if lat else "–",
                fmt(a["p999"]) if lat else "–",
                fmt(rss_mib, 1),
            ]
            if b == "ferry" or f is None:
                cells += ["", "", ""]
            else:
                cells += [
                    ratio(f["rate"], a["rate"]),
                    ratio(f["cpu"], a["cpu"]) if s != "S7" else "–",
                    ratio(f["p99"], a["p99"]) if lat else "–",
                ]
            cells.append(f"{a['n']}" + (f" (+{nfail} failed)" if nfail else ""))
            out.append("| " + " | ".join(cells) + " |")
            if s == "S7" and a.get("per_conn_kib") is not None:
                notes.append(
                    f"S7 {LABEL[b]}: {a['per_conn_kib']:.1f} KiB of broker RSS per idle connection "
                    f"({int(a['conns'] or 0)} connections; RSS {fmt((a['base'] or 0) / 1024, 1)} MiB before, "
                    f"{fmt((a['rss_end'] or 0) / 1024, 1) if a['rss_end'] is not None else '?'} MiB with them)."
                )
    for b in BROKERS:
        fa, sa = results.get(("S8-fast", b)), results.get(("S8-slow", b))
        if fa and sa and fa.get("rate") is not None and sa.get("rate") is not None:
            total = fa["rate"] + sa["rate"]
            line = (f"S8 {LABEL[b]}: {total:,.0f} confirmed msg/s in all (full-speed publisher "
                    f"{fa['rate']:,.0f}, confirm p50 {fmt(fa['p50'])} µs / p99 {fmt(fa['p99'])} µs; "
                    f"slow publishers {sa['rate']:,.0f})")
            if fa.get("rounds_per_sec") is not None:
                line += f"; {fa['rounds_per_sec']:,.0f} durability rounds/s"
            ff, fs = results.get(("S8-fast", "ferry")), results.get(("S8-slow", "ferry"))
            if b != "ferry" and ff and fs and ff.get("rate") is not None and fs.get("rate") is not None:
                line += f"; Ferry total ÷ {(ff['rate'] + fs['rate']) / total:.2f}×"
            notes.append(line + ".")
    for s in scens:
        # A change judged against its base build in the same run: both
        # builds' throughput ratios to RabbitMQ classic.
        f, fb, rc = (results.get((s, b)) for b in ("ferry", "ferry-base", "rabbit-classic"))
        if f and fb and rc and all(x.get("rate") for x in (f, fb, rc)):
            now, base = f["rate"] / rc["rate"], fb["rate"] / rc["rate"]
            notes.append(f"{SCEN[s]}: ÷ RabbitMQ classic {now:.2f}× (base build {base:.2f}×; "
                         f"{(now / base - 1) * 100:+.1f} %).")
    out.append("")
    out.append("msg/s is delivered msg/s (all consumers together; S3 counts each of the 10 copies), "
               "except S6 publish and S8 (confirmed msg/s; S8's p50/p99 are publish→confirm). "
               "Broker CPU is user+system time of the broker's process tree (/proc) per message "
               "received (per message confirmed when nothing consumes; S3: per delivered copy). "
               "Peak RSS is the broker's high-water mark. ")
    out.append("")
    out.append(
               "\"Ferry X ÷\" is Ferry's value divided by that broker's (msg/s: > 1 is Ferry faster; "
               "CPU and p99: < 1 is Ferry better).")
    if notes:
        out.append("")
        out.extend("- " + n for n in notes)
    if meta.get("skipped"):
        out.append("")
        for n in meta["skipped"]:
            out.append(f"- Not run: {n}")

    # targets from the issue
    t = []

    def chk(name, ok, detail):
        if ok is None:
            t.append(f"| {name} | – | {detail} |")
        else:
            t.append(f"| {name} | {'yes' if ok else 'no'} | {detail} |")

    def R(s, b, k):
        a = results.get((s, b))
        return a.get(k) if a else None

    def cmp(a, b, fn):
        return None if a is None or b is None else fn(a, b)

    fr, rr, nr = R("S1-100", "ferry", "rate"), R("S1-100", "rabbit-classic", "rate"), R("S1-100", "nats", "rate")
    fc, rc = R("S1-100", "ferry", "cpu"), R("S1-100", "rabbit-classic", "cpu")
    if fr is not None:
        chk("S1 ≥ 3× RabbitMQ classic msg/s", cmp(fr, rr, lambda a, b: a >= 3 * b), ratio(fr, rr))
        chk("S1 broker CPU ≤ 1/5 of RabbitMQ classic", cmp(fc, rc, lambda a, b: a <= b / 5), ratio(fc, rc))
        chk("S1 ≥ NATS JetStream msg/s", cmp(fr, nr, lambda a, b: a >= b), ratio(fr, nr))
    f2, r2 = R("S2", "ferry", "rate"), R("S2", "rabbit-classic", "rate")
    if f2 is not None:
        chk("S2 ≥ 2× RabbitMQ classic msg/s", cmp(f2, r2, lambda a, b: a >= 2 * b), ratio(f2, r2))
    f5, r5 = R("S5", "ferry", "p99"), R("S5", "rabbit-classic", "p99")
    if f5 is not None:
        chk("S5 p99 below RabbitMQ classic", cmp(f5, r5, lambda a, b: a < b), f"{fmt(f5)} vs {fmt(r5)} µs")
    f6 = R("S6-drain", "ferry", "rss")
    f6p = R("S6-pub", "ferry", "rss")
    peak6 = max([v for v in (f6, f6p) if v is not None], default=None)
    if peak6 is not None:
        chk("S6 peak RSS ≤ 150 MB", peak6 * 1024 <= 150e6, f"{peak6 / 1024:.1f} MiB")
    fd6 = R("S6-drain", "ferry", "rate")
    if fd6 is not None:
        chk("S6 drain within 20% of S1 msg/s", cmp(fd6, fr, lambda a, b: a >= 0.8 * b),
            f"{fmt(fd6)} vs {fmt(fr)} msg/s")
    f7 = R("S7", "ferry", "per_conn_kib")
    if f7 is not None:
        chk("S7 ≤ 30 KiB per idle connection", f7 <= 30, f"{f7:.1f} KiB")
    if t:
        out.append("")
        out.append("Targets (issue 3):")
        out.append("")
        out.append("| target | met | value |")
        out.append("|---|---|---|")
        out.extend(t)

    text = "\n".join(out) + "\n"
    with open(os.path.join(d, "table.md"), "w") as f:
        f.write(text)
    print(text, end="")


def add_fields(row, extra):
    """Sets each key=value of `extra` in `row` (the value as JSON if it parses)."""
    for kv in extra:
        k, _, v = kv.partition("=")
        try:
            row[k] = json.loads(v)
        except ValueError:
            row[k] = v


def record(raw, scen, broker, rep, rc, out, err, extra):
    row = {"scenario": scen, "broker": broker, "rep": int(rep), "rc": int(rc)}
    add_fields(row, extra)
    result = None
    try:
        with open(out, errors="replace") as f:
            text = f.read()
        # the last line that parses as a JSON object
        for line in reversed(text.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    result = json.loads(line)
                    break
                except ValueError:
                    pass
    except OSError:
        pass
    row["ok"] = int(rc) == 0 and isinstance(result, dict) and result.get("complete") is not False
    row["result"] = result
    if not row["ok"]:
        try:
            with open(err, errors="replace") as f:
                row["error"] = f.read()[-2000:]
        except OSError:
            row["error"] = None
        if isinstance(result, dict) and result.get("complete") is False:
            row["error"] = (row["error"] or "") + "\nincomplete: the client gave up waiting (complete=false)"
    with open(raw, "a") as f:
        f.write(json.dumps(row) + "\n")


def metric(url, name):
    """Prints the value of an unlabelled Prometheus sample."""
    import urllib.request
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                print(parts[1])
                return
    die(f"{name} not in {url}")


def annotate(raw, scen, broker, rep, extra):
    """Adds key=value fields to the last row of (scen, broker, rep)."""
    with open(raw) as f:
        rows = [json.loads(l) for l in f if l.strip()]
    for row in reversed(rows):
        if row["scenario"] == scen and row["broker"] == broker and row["rep"] == int(rep):
            add_fields(row, extra)
            break
    with open(raw, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def summary(raw):
    with open(raw) as f:
        lines = [l for l in f if l.strip()]
    row = json.loads(lines[-1])
    if not row["ok"]:
        err = (row.get("error") or "").strip().splitlines()
        print(f"FAILED (rc {row['rc']}): {err[-1] if err else 'no output'}")
        return
    r = norm(row["result"])
    parts = []
    if r["sent"]:
        parts.append(f"pub {pub_rate(r) or 0:,.0f}/s")
    if r["received"]:
        parts.append(f"recv {r['recv_rate'] or 0:,.0f}/s")
        parts.append(f"p99 {fmt(r['p99'])} µs")
    if r["broker_cpu"] is not None:
        parts.append(f"broker {r['broker_cpu']:.1f} µs/msg")
    if r["client_cpu"] is not None:
        parts.append(f"client {r['client_cpu']:.1f} µs/msg")
    if r["rss_peak"] is not None:
        parts.append(f"peak RSS {r['rss_peak'] / 1024:.0f} MiB")
    if r["rss_per_conn"] is not None:
        parts.append(f"{r['rss_per_conn']:.1f} KiB/conn")
    print(", ".join(parts) if parts else "ok (no figures)")


def cpu_busy(secs):
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v), idle
    t0, i0 = snap()
    time.sleep(secs)
    t1, i1 = snap()
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))


BEGIN = "<!-- bench/compare results: begin -->"
END = "<!-- bench/compare results: end -->"


def update_doc(doc, table):
    with open(doc) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        die(f"{doc} has no {BEGIN} ... {END} section")
    with open(table) as f:
        body = f.read().strip()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(doc, "w") as f:
        f.write(head + BEGIN + "\n\n" + body + "\n\n" + END + tail)


def main():
    a = sys.argv[1:]
    if not a:
        die(__doc__.strip(), 2)
    cmd = a[0]
    if cmd == "freeport":
        print(" ".join(map(str, freeport(int(a[1]) if len(a) > 1 else 1))))
    elif cmd == "rabbit-ports":
        # an AMQP port P with P+20000 (Erlang distribution) also free
        for _ in range(200):
            p = freeport()[0]
            if p + 20000 < 65536 and port_free(p + 20000):
                print(p)
                return
        die("no free port pair for RabbitMQ")
    elif cmd == "port-free":
        sys.exit(0 if port_free(int(a[1])) else 1)
    elif cmd == "wait-amqp":
        wait_amqp(a[1], int(a[2]), float(a[3]))
    elif cmd == "wait-nats":
        wait_nats(a[1], int(a[2]), float(a[3]))
    elif cmd == "wait-line":
        wait_line(a[1], a[2], float(a[3]))
    elif cmd == "child":
        child(int(a[1]), a[2], float(a[3]))
    elif cmd == "rss":
        print(rss(int(a[1])))
    elif cmd == "machine":
        machine(a[1], a[2])
    elif cmd == "record":
        record(a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8:])
    elif cmd == "metric":
        metric(a[1], a[2])
    elif cmd == "annotate":
        annotate(a[1], a[2], a[3], a[4], a[5:])
    elif cmd == "summary":
        summary(a[1])
    elif cmd == "busy":
        print(f"{cpu_busy(float(a[1])):.0f}")
    elif cmd == "update-doc":
        update_doc(a[1], a[2])
    elif cmd == "report":
        report(a[1])
    else:
        die(f"unknown command {cmd}", 2)


if __name__ == "__main__":
    main()

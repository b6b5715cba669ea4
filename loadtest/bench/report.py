"""The tables and ratios printed at the end of a run."""

from __future__ import annotations

import statistics
from typing import Any

from .metering import OTHER_LOAD
from .processes import CLUSTER, ServerSpec
from .tables import TABLES


def fmt(v: Any, width: int, digits: int = 1) -> str:
    if isinstance(v, float):
        return f"{v:>{width}.{digits}f}"
    return f"{v!s:>{width}}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def report(
    results: dict[str, dict[str, dict[str, Any]]],
    specs: list[ServerSpec],
    runs: dict[str, dict[str, list[dict[str, Any]]]] | None = None,
) -> list[str]:
    out: list[str] = []
    labels = [s.label for s in specs]
    w = max(12, *(len(x) for x in labels)) + 1

    fan = {lb: results[lb]["fanout"] for lb in labels if "fanout" in results.get(lb, {})}
    if fan:
        out.append("")
        first = next(iter(fan.values()))
        out.append(
            f"Scenario A: fan-out to {first.get('clients', '?')} clients in one room; closed loop, "
            f"window {first.get('window', '?')}; 'half' = open loop at half that rate"
        )
        out.append(
            f"{'server':<{w}}{'deliveries/s':>13}{'bcast/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'half p50':>9}{'half p99':>9}{'lost':>7}{'server_cpu':>11}{'gen_cpu':>8}"
        )
        notes = []
        for lb, r in fan.items():
            if "deliveries_per_s" not in r:
                out.append(f"{lb:<{w}}ERROR: {r.get('error', '?').splitlines()[0][:150]}")
                continue
            out.append(
                f"{lb:<{w}}{r['deliveries_per_s']:>13,}{r['broadcasts_per_s']:>9.1f}"
                f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['half_p50_ms']:>9.2f}"
                f"{r['half_p99_ms']:>9.2f}{r['lost']:>7}"
                f"{r['server_cpu']:>10.0f}%{r['gen_cpu']:>7.0f}%"
            )
            note = (
                f"  {lb}: {r['bottleneck']}; idle: server core {r['idle_server_core']:.0f}%, "
                f"generator core {r['idle_gen_core']:.0f}%; interrupts "
                f"{r['irq_server_core']:.0f}% / {r['irq_gen_core']:.0f}%; generator "
                f"{r['gen_sys_cpu']:.0f}% of {r['gen_cpu']:.0f}% in the kernel"
            )
            if r.get("deliveries_per_s_all"):
                note += "; deliveries/s in all runs: " + ", ".join(
                    f"{x:,}" for x in r["deliveries_per_s_all"]
                )
            if r.get("connections_dropped"):
                note += f"; {r['connections_dropped']} connections DROPPED"
            if r.get("gave_up"):
                note += f"; {r['gave_up']} broadcasts never reached everyone"
            if r.get("half_overruns"):
                note += f"; half-rate phase fell behind {r['half_overruns']} times"
            if "error" in r:
                note += f"; ERROR {r['error'][:200]}"
            notes.append(note)
            if r.get("groups"):
                notes.append("    " + node_note(r))
        out.extend(notes)

    pings = {lb: results[lb]["ping"] for lb in labels if "ping" in results.get(lb, {})}
    if pings:
        out.append("")
        out.append("Scenario B: request/reply round trip on an idle server, one client")
        out.append(
            f"{'server':<{w}}{'pings':>8}{'p50 ms':>9}{'p99 ms':>9}{'server_cpu':>11}{'gen_cpu':>8}"
        )
        for lb, r in pings.items():
            if "p50_ms" not in r:
                out.append(f"{lb:<{w}}ERROR: {r['error'].splitlines()[0][:150]}")
                continue
            other = max(r["other_load_server_core"], r["other_load_gen_core"])
            out.append(
                f"{lb:<{w}}{r['pings']:>8}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
                f"{r['server_cpu']:>10.0f}%{r['gen_cpu']:>7.0f}%"
                + (f"  DISTURBED: {other:.0f}% other load on a core" if other > OTHER_LOAD else "")
            )

    mem = {lb: results[lb]["memory"] for lb in labels if "memory" in results.get(lb, {})}
    if mem:
        out.append("")
        out.append("Scenario C: idle memory")
        out.append(
            f"{'server':<{w}}{'conns':>7}{'RSS before':>12}{'RSS after':>11}{'KiB/conn':>10}"
            f"{'connects/s':>12}"
        )
        for lb, r in mem.items():
            if "kib_per_conn" not in r:
                out.append(f"{lb:<{w}}ERROR: {r['error'].splitlines()[0][:150]}")
                continue
            out.append(
                f"{lb:<{w}}{r['connections']:>7}{r['rss_before_mib']:>9.1f}MiB"
                f"{r['rss_after_mib']:>8.1f}MiB{r['kib_per_conn']:>10.1f}{r['connects_per_s']:>12}"
            )

    def get(lb: str, scen: str, key: str) -> float | None:
        v = results.get(lb, {}).get(scen, {}).get(key)
        return v if isinstance(v, (int, float)) else None

    out.append("")
    if "switchboard" in labels:
        parts = []
        for other in ("socketio", "websockets"):
            if other in labels:
                a = get("switchboard", "fanout", "deliveries_per_s")
                b = get(other, "fanout", "deliveries_per_s")
                parts.append(f"switchboard/{other} = {ratio(a, b)}")
        if parts and fan:
            out.append("ratios (deliveries/s): " + "   ".join(parts))
    two = two_node_summary(results, runs)
    if two:
        out.extend(two["lines"])
    if mem:
        out.append(
            "memory KiB/conn: "
            + "  ".join(f"{lb} {r['kib_per_conn']}" for lb, r in mem.items() if "kib_per_conn" in r)
        )
    for scenario, table in TABLES.items():
        rows = {lb: results[lb][scenario] for lb in labels if scenario in results.get(lb, {})}
        if rows:
            out.append("")
            out.extend(line for line in table(rows, w) if line)
    out.extend(profile_lines(results, labels))
    variants = [s for s in specs if s.label != s.kind]
    if variants:
        header = len(out)
        for v in variants:
            env = ",".join(f"{k}={val}" for k, val in v.env.items())
            parts = [
                f"{name} {ratio(get(v.label, scen, key), get(v.kind, scen, key))}"
                for name, scen, key in (
                    ("deliveries/s", "fanout", "deliveries_per_s"),
                    ("p99", "fanout", "p99_ms"),
                    ("half p99", "fanout", "half_p99_ms"),
                    ("ping p50", "ping", "p50_ms"),
                    ("KiB/conn", "memory", "kib_per_conn"),
                    ("joinstorm joined s", "joinstorm", "joined_s"),
                    ("req/s", "reqreply", "requests_per_s"),
                    ("idle KiB/socket", "idle50k", "kib_per_socket"),
                )
                if get(v.label, scen, key) and get(v.kind, scen, key)
            ]
            if parts:
                out.append(f"  {v.label} ({env}): " + "  ".join(parts))
        if len(out) > header:
            out.insert(header, "variants vs their plain server (same run):")
    return out


def node_note(r: dict[str, Any]) -> str:
    """Per node of the 2-node run: its clients' deliveries/s, latencies, losses; CPU."""
    parts = []
    for i, g in enumerate(r["groups"]):
        if "node" in g:
            how = "publisher's node" if g["node"] == "bench1" else "through Redis"
            name = g["node"]
        else:  # --receiver-groups on one server: clients in join order
            how, name = "one node", f"receiver group {i + 1}"
        parts.append(
            f"{name} ({how}, {g['clients']} clients): "
            f"{g['deliveries_per_s']:,}/s, p50/p99 {g['p50_ms']:.2f}/{g['p99_ms']:.2f} ms, "
            f"half {g['half_p50_ms']:.2f}/{g['half_p99_ms']:.2f} ms, lost {g['lost']}"
        )
    cpu = r.get("server_cpu_parts", {})
    cores = r.get("cluster_cores", {})
    if cpu:
        parts.append(
            "server_cpu "
            + ", ".join(f"{k} {v:.0f}% (core {cores.get(k, '?')})" for k, v in cpu.items())
        )
    return "; ".join(parts)


def two_node_summary(
    results: dict[str, dict[str, dict[str, Any]]],
    runs: dict[str, dict[str, list[dict[str, Any]]]] | None = None,
) -> dict[str, Any] | None:
    """The 2-node run against the single-node one: the ratio, and the lines saying it.

    When node 1, node 2 and redis-server all ran on the single node's core, the ratio of
    deliveries/s is a ratio per server core. Otherwise it is not, and the ratio of
    deliveries per server CPU-second is the better comparison (still not a clean one:
    on two cores the cluster then shares the generator's core). The ratio is of the best
    runs; with ``--repeat`` the ratio within each repetition (the two ran back to back)
    is listed too, since the machine's speed drifts between repetitions.
    """
    two = results.get(CLUSTER, {}).get("fanout")
    if not two or "deliveries_per_s" not in two:
        return None
    one = results.get("switchboard", {}).get("fanout", {})
    cores = two.get("cluster_cores", {})
    same_core = len(set(cores.values())) == 1 and (
        not one or set(cores.values()) == {two.get("single_node_core")}
    )
    same_core = same_core and two.get("gen_core") not in cores.values()
    d2 = two["deliveries_per_s"]
    d1 = one.get("deliveries_per_s")
    summary: dict[str, Any] = {"same_core": same_core, "cluster_cores": cores}
    lines = []
    if d1:
        rate_ratio = d2 / d1
        cpu_ratio = (d2 / max(two["server_cpu"], 1e-9)) / (d1 / max(one["server_cpu"], 1e-9))
        summary.update(
            deliveries_ratio=round(rate_ratio, 3), per_server_cpu_second_ratio=round(cpu_ratio, 3)
        )
        where = ", ".join(f"{k} on core {v}" for k, v in cores.items())

        def clean(r: dict[str, Any]) -> bool:  # no other load, generator not the limit
            return not any(x in r.get("bottleneck", "") for x in ("DISTURBED", "GENERATOR"))

        paired = [
            (b["deliveries_per_s"] / a["deliveries_per_s"], clean(a) and clean(b))
            for a, b in zip(
                (runs or {}).get("switchboard", {}).get("fanout", []),
                (runs or {}).get(CLUSTER, {}).get("fanout", []),
                strict=False,
            )
            if a.get("deliveries_per_s") and b.get("deliveries_per_s")
        ]
        paired_text = ""
        if len(paired) > 1:
            ok = [x for x, good in paired if good]
            median = statistics.median(ok or [x for x, _ in paired])
            summary["paired_ratios"] = [round(x, 3) for x, _ in paired]
            summary["paired_disturbed"] = [not good for _, good in paired]
            summary["paired_ratio_median"] = round(median, 3)
            paired_text = (
                "; run by run: "
                + ", ".join(f"{x:.2f}" + ("" if good else " (disturbed)") for x, good in paired)
                + f"; median{' of undisturbed' if ok and len(ok) < len(paired) else ''} "
                f"{median:.2f}"
            )
        if same_core:
            summary["per_server_core_ratio"] = round(rate_ratio, 3)
            lines.append(
                f"2-node/1-node per server core = {rate_ratio:.2f}×  (best runs: {CLUSTER} "
                f"{d2:,} vs switchboard {d1:,} deliveries/s, each on one server core, core "
                f"{two.get('single_node_core')}; target >= 0.80×{paired_text})"
            )
        else:
            lines.append(
                f"2-node/1-node deliveries/s = {rate_ratio:.2f}×  NOT per server core: {where}, "
                f"generator on core {two.get('gen_core')}; per server CPU-second "
                f"{cpu_ratio:.2f}×{paired_text}"
            )
    groups = two.get("groups") or []
    if len(groups) == 2:
        a, b = groups
        lines.append(
            f"cross-node latency ({CLUSTER}), p50/p99 ms: through Redis ({b.get('node')}) "
            f"{b['p50_ms']:.2f}/{b['p99_ms']:.2f}, local ({a.get('node')}) "
            f"{a['p50_ms']:.2f}/{a['p99_ms']:.2f} saturated; at half rate "
            f"{b['half_p50_ms']:.2f}/{b['half_p99_ms']:.2f} vs "
            f"{a['half_p50_ms']:.2f}/{a['half_p99_ms']:.2f}"
            + (
                f"; single node {one['half_p50_ms']:.2f}/{one['half_p99_ms']:.2f}"
                if "half_p50_ms" in one
                else ""
            )
        )
    summary["lines"] = lines
    return summary


def profile_lines(results: dict[str, dict[str, dict[str, Any]]], labels: list[str]) -> list[str]:
    """Each profiled run's top functions by self time (py-spy, whole run of the server)."""
    out: list[str] = []
    for label in labels:
        for scenario, r in results.get(label, {}).items():
            costs = r.get("top_costs")
            if not costs or not costs.get("self"):
                continue
            busy = costs.get("busy", ["?"])[0]
            out.append(f"profile {scenario} / {label} ({busy}), top self time of busy samples:")
            out.extend(f"    {line}" for line in costs["self"][:6])
            out.append("  by package (our code: by module):")
            out.extend(f"    {line}" for line in costs.get("modules", [])[:6])
    return [""] + out if out else []

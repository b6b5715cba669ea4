"""Options, the run loop (scenario by scenario, servers interleaved) and the exit paths."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

from .metering import QUIET, pick_run, wait_quiet
from .processes import (
    ALL_SERVERS,
    CLUSTER,
    ServerProcess,
    ServerSpec,
    raise_nofile,
    redis_server_bin,
    switchboard_available,
)
from .profiling import top_costs
from .report import report, two_node_summary
from .scenarios import DEFAULT_SCENARIOS, SCENARIOS

ALL_SCENARIOS = tuple(SCENARIOS)


def parse_variant(text: str) -> ServerSpec:
    """``LABEL[@SCENARIO+SCENARIO]:ENV=VAL[,ENV=VAL]``: with ``@``, only those scenarios."""
    label, sep, assignments = text.partition(":")
    label, _, only = label.partition("@")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"expected LABEL:ENV=VAL[,ENV2=VAL2], got {text!r}")
    scenarios = tuple(filter(None, only.split("+")))
    unknown = [x for x in scenarios if x not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenarios {unknown} in {text!r}")
    env = {}
    for item in filter(None, assignments.split(",")):
        k, eq, v = item.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"expected ENV=VAL in {text!r}, got {item!r}")
        env[k.strip()] = v
    if label.startswith("2node-"):  # a variant of the 2-node cluster
        return ServerSpec(label=f"{CLUSTER}:{label[6:]}", kind=CLUSTER, env=env, only=scenarios)
    return ServerSpec(label="switchboard:" + label, kind="switchboard", env=env, only=scenarios)


def csv(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {','.join(choices)}")
        return items

    return parse


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N1,N2,...: {text!r}") from None


def core_list(text: str) -> list[int]:
    try:
        cores = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N1,N2[,REDIS] core numbers: {text!r}") from None
    if len(cores) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected 2 or 3 cores, got {text!r}")
    if len(cores) == 2:
        cores.append(cores[0])  # redis-server next to node 1, the publishing node
    bad = [c for c in cores if not 0 <= c < (os.cpu_count() or 1)]
    if bad:
        raise argparse.ArgumentTypeError(f"no such core: {bad}")
    return cores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="Fan-out throughput, ping latency and idle memory: switchboard vs baselines.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = p.add_argument
    add("--servers", type=csv(ALL_SERVERS), default=",".join(ALL_SERVERS), help="comma-separated")
    add(
        "--scenarios",
        type=csv(ALL_SCENARIOS),
        default=",".join(DEFAULT_SCENARIOS),
        help="comma-separated",
    )
    add(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="LABEL[@SCEN+SCEN]:ENV=VAL[,ENV=VAL]",
        help="extra switchboard run with extra env (repeatable); a LABEL starting with "
        "2node- is a run of switchboard-2node; @: only in those scenarios",
    )
    add("--json", type=Path, help="also write all results to this file")
    add(
        "--repeat",
        type=int,
        default=1,
        help="run each scenario N times per server, interleaved; report the best run",
    )
    g = p.add_argument_group("fan-out (scenario A)")
    g.add_argument("--clients", type=int, default=1000, help="clients in the room")
    g.add_argument("--duration", type=float, default=10.0, help="measuring seconds")
    g.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    g.add_argument("--window", type=int, default=10, help="broadcasts in flight")
    g.add_argument(
        "--half-seconds",
        type=float,
        default=4.0,
        help="open-loop phase at half the saturated rate (0: skip)",
    )
    g.add_argument("--payload-bytes", type=int, default=64, help="padding in each message")
    g.add_argument(
        "--give-up",
        type=float,
        default=5.0,
        help="a broadcast still incomplete after this long leaves the window",
    )
    g.add_argument(
        "--drain", type=float, default=5.0, help="seconds to wait for in-flight broadcasts"
    )
    g.add_argument(
        "--receiver",
        choices=["auto", "c", "python"],
        default="auto",
        help="receive loop: C (pump.c via ctypes) or Python; auto = C if it compiles",
    )
    g.add_argument(
        "--poll-ms",
        type=float,
        default=1.0,
        help="read sockets at most once per interval (latencies gain up to this)",
    )
    g.add_argument(
        "--receiver-groups",
        type=int,
        default=1,
        help="single-server runs: read the clients with this many receivers, as the 2-node "
        "run does with 2 (one per node); a check that the arrangement changes nothing",
    )
    g = p.add_argument_group("ping (scenario B) and memory (scenario C)")
    g.add_argument("--ping-seconds", type=float, default=3.0)
    g.add_argument("--mem-clients", type=int, default=5000)
    g.add_argument(
        "--mem-room-size",
        type=int,
        default=100,
        help="clients per room (0: all in room:mem; with presence, joins cost O(N^2))",
    )
    g.add_argument("--settle", type=float, default=3.0, help="idle seconds before reading RSS")
    g = p.add_argument_group("joinstorm, reqreply, connrate, idle50k (the Node generator)")
    g.add_argument("--storm-clients", type=int, default=5000, help="clients joining one room")
    g.add_argument(
        "--storm-sample", type=int, default=10, help="phoenix.js clients checking presence too"
    )
    g.add_argument(
        "--storm-timeout", type=float, default=600.0, help="seconds until presence is exact"
    )
    g.add_argument("--rr-clients", type=int, default=50)
    g.add_argument("--rr-seconds", type=float, default=10.0)
    g.add_argument("--rr-warmup", type=float, default=2.0)
    g.add_argument(
        "--conn-sockets", type=int_list, default="5000,20000", help="comma-separated sizes"
    )
    g.add_argument("--conn-rooms", type=int, default=100)
    g.add_argument("--conn-concurrency", type=int, default=200, help="sockets opening at once")
    g.add_argument("--idle-sockets", type=int, default=50_000)
    g.add_argument("--idle-seconds", type=float, default=70.0)
    g = p.add_argument_group("environment")
    g.add_argument("--connect-concurrency", type=int, default=100)
    g.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before each run, wait up to this long for both cores to go idle",
    )
    g.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority of server and generator; e.g. -10 (root) makes other work "
        "on a shared machine disturb the runs less, and slows that work down",
    )
    g.add_argument("--server-core", type=int, default=0)
    g.add_argument("--gen-core", type=int, default=1)
    g.add_argument(
        "--cluster-cores",
        type=core_list,
        metavar="N1,N2[,REDIS]",
        help="cores of switchboard-2node's node 1, node 2 and redis-server (default: all on "
        "--server-core, which makes its rate comparable per server core; other placements "
        "share the generator's core on a 2-core machine)",
    )
    g.add_argument("--logdir", type=Path, help="keep server logs here (default: a temp dir)")
    g.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record every Python server with py-spy into DIR (see profiling.py)",
    )
    g.add_argument(
        "--profile-format", choices=["speedscope", "flamegraph", "raw"], default="speedscope"
    )
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    specs: list[ServerSpec] = []
    skipped: list[str] = []
    for kind in sorted(args.servers, key=ALL_SERVERS.index):  # 2-node right after 1-node
        if kind in ("switchboard", CLUSTER) and not switchboard_available():
            skipped.append(f"{kind} (server/cli.py or .venv/bin/switchboard missing)")
            continue
        if kind == CLUSTER and redis_server_bin() is None:
            skipped.append(f"{kind} (redis-server not installed)")
            continue
        specs.append(ServerSpec(label=kind, kind=kind))
    if any(s.kind == CLUSTER for s in specs) and set(args.scenarios) - {"fanout", "joinstorm"}:
        print(f"note: {CLUSTER} runs the fan-out and joinstorm scenarios only")
    if args.variant:
        if not switchboard_available():
            skipped.append("variants (switchboard missing)")
        elif any(v.kind == CLUSTER for v in args.variant) and redis_server_bin() is None:
            skipped.append("variants (redis-server not installed)")
        else:
            specs.extend(args.variant)
    for s in skipped:
        print(f"skipping {s}")

    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    logdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, Any]]] = {s.label: {} for s in specs}
    started = perf_counter()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s.label: {} for s in specs}
    # scenario-major order, so a variant and its baseline run close together in time;
    # repeats interleave the servers, so slow drifts hit all of them alike
    for scen in args.scenarios:
        for rep in range(args.repeat):
            # A B, B A, A B, ...: a steady drift of the machine's speed favours nobody
            for spec in specs if rep % 2 == 0 else specs[::-1]:
                if spec.kind == CLUSTER and scen not in ("fanout", "joinstorm"):
                    continue
                if spec.only and scen not in spec.only:
                    continue
                if args.quiet_wait > 0:
                    busy = await wait_quiet(args.quiet_wait, (args.server_core, args.gen_core))
                    if busy >= QUIET:
                        print(
                            f"         (a core is still {busy:.0f}% busy after "
                            f"{args.quiet_wait}s; going on)"
                        )
                t = perf_counter()
                tag = f" #{rep + 1}" if args.repeat > 1 else ""
                print(
                    f"[{perf_counter() - started:6.1f}s] {scen:<7} {spec.label}{tag} ...",
                    flush=True,
                )
                ServerProcess.scenario = scen
                profiled = len(ServerProcess.profiles)
                try:
                    r = await SCENARIOS[scen](spec, args, logdir)
                except Exception as exc:  # noqa: BLE001 - report and go on with the next run
                    r = {"server": spec.label, "error": f"{type(exc).__name__}: {exc}"}
                r.update(profile_summary(ServerProcess.profiles[profiled:]))
                runs[spec.label].setdefault(scen, []).append(r)
                results[spec.label][scen] = pick_run(scen, runs[spec.label][scen])
                brief = {k: v for k, v in r.items() if k != "server"}
                print(f"         {perf_counter() - t:5.1f}s {json.dumps(brief)[:400]}", flush=True)

    lines = report(results, specs, runs)
    cluster = ""
    if any(s.kind == CLUSTER for s in specs):
        n1, n2, rd = args.cluster_cores or [args.server_core] * 3
        cluster = f"; {CLUSTER}: node 1 on core {n1}, node 2 on core {n2}, redis on core {rd}"
    lines.append(
        f"(server on core {args.server_core}, generator on core {args.gen_core}{cluster}; "
        f"cpu 100% = one core; total {perf_counter() - started:.0f}s; server logs in {logdir})"
    )
    print("\n".join(lines))
    return {
        "argv": sys.argv[1:],
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k != "variant"
        },
        "variants": {s.label: s.env for s in specs if s.env},
        "skipped": skipped,
        "results": results,
        "two_node": {
            k: v for k, v in (two_node_summary(results, runs) or {}).items() if k != "lines"
        }
        or None,
        "all_runs": runs if args.repeat > 1 else None,
        "summary": lines,
    }


def profile_summary(paths: list[Path]) -> dict[str, Any]:
    """The profiles a run wrote, and the top costs of the first speedscope one."""
    if not paths:
        return {}
    out: dict[str, Any] = {"profiles": [str(p) for p in paths]}
    speedscope = [p for p in paths if p.name.endswith(".speedscope.json")]
    if speedscope:
        out["top_costs"] = top_costs(speedscope[0])
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        ServerProcess.profile_dir = args.profile
        ServerProcess.profile_format = args.profile_format
        ServerProcess.profile_core = args.gen_core
    try:
        os.sched_setaffinity(0, {args.gen_core})
    except OSError as exc:
        print(f"warning: could not pin the generator to core {args.gen_core}: {exc}")
    raise_nofile()
    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
            ServerProcess.nice = args.nice
        except OSError as exc:
            print(f"warning: --nice {args.nice} not permitted ({exc}); running at normal priority")
    need = max(args.clients, args.mem_clients) + 100
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        print(f"warning: RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} < {need}")

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # at once, even inside the blocking fan-out loop
    try:
        out = asyncio.run(amain(args))
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        ServerProcess.stop_all()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark switchboard against python-socketio and a bare websockets broadcast server.

    .venv/bin/python -m loadtest.bench                      # everything, about 4 min
    .venv/bin/python -m loadtest.bench --servers switchboard --scenarios fanout \\
        --variant presence-off:SWITCHBOARD_PRESENCE=off

Each server runs in its own subprocess pinned to core 0 (``taskset -c 0``) with
RLIMIT_NOFILE raised to the hard limit (at most 65536); this process is the load
generator and pins itself to core 1. Every scenario starts a fresh server. All
numbers, ratios included, come from one invocation. Before each run we wait up
to ``--quiet-wait`` s for both cores to go idle, and during the run we measure
what else used them: a run that shared a busy core with other work is marked
DISTURBED (its numbers are then low). Even undisturbed, this VM's speed drifts
between runs by up to 1.7x; ``--repeat N`` runs everything N times, interleaved,
and reports each server's best run.

The package: ``processes`` (servers started, pinned and stopped by PID), ``metering`` (CPU of
each side, what else ran, DISTURBED), ``clients`` (the Python generator's connect and join),
one module per scenario, ``report`` (tables and ratios) and ``cli`` (options, the run loop).
"""

"""A chaos soak on a real test host: deploys under steady load while the host is disturbed.

Run: python -m benchmarks.chaos [--seed S] [--iterations N] [--strategies ...]; see __main__.py.

Per strategy, each iteration picks a desired state at random (good releases, releases that fail
their gate or crash, configurations that break a good release) and at most two disturbances
(the controller or the agent SIGKILLed, Caddy restarted or reloaded by someone else, another
app's deploy, a reboot, files edited by hand), runs `reconcile --once` until a run completes,
and checks what serves against the host's gate records, while a load generator reads and
writes through Caddy and a poller follows the gate records.

Modules: plan (the random choices, pure), traffic (the load), gatewatch (the gate records over
time, and which answers came from a process without one), disturb (doing the disturbances),
check (what serves after a run, rows kept), soak (one strategy's iterations), analysis (the
figures and goals, pure), report (chaos.md and RESULTS.md).
"""

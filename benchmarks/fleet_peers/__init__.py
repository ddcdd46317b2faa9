"""Fleet benchmark: the reconciler against pyinfra and Ansible on N test hosts at once.

    .venv/bin/python -m benchmarks.fleet_peers [--hosts 16] [--runs 7] [--deploy-runs 3]

Reuses benchmarks.peers for everything a single host already needed: installing the peers,
the desired state written for each tool, the same-state check, timing a run and counting its
SSH sessions, and the refusal rule (no ratio from failed runs; the command exits non-zero).

Modules: fleet (the hosts, the inputs per fleet size, the command lines), gates (how much of
a rolling deploy is health gates), probe + profile (what grows with N in ours' fleet path),
runner (the whole run), report, text (the prose of the report).
"""

"""Side-by-side benchmark of the reconciler against Ansible and pyinfra.

    .venv/bin/python -m benchmarks.peers [--runs N] [--quick]

One command installs ansible-core and pyinfra (benchmarks/.work/), boots a test host,
expresses the same desired state three ways, checks that each tool sees the host converged
by the others, times no-op runs over SSH, change runs and no-op runs on the host itself,
interleaved, counts SSH sessions from the host's sshd log and writes benchmarks/RESULTS.md.

Modules: paths (where things go), install (venvs, wheelhouse), project (the desired state
rendered for every tool), tools (the command lines), hosttime (timing a child process,
stdlib only: it also runs inside the host), sshlog (sshd DEBUG1 counting), phases (the
interleaved loops), samecheck (the "same state" check), profile (where our time goes),
machine, report, runner (the whole run), floor (the bare paramiko floor, run as a script).
"""

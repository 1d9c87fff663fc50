"""Running `rabbitmqadmin` (the management plugin's CLI, from Debian's rabbitmq-server package)
against the management API of a broker under test."""

from __future__ import annotations

import subprocess


def rabbitmqadmin(api):
    """A runner for `rabbitmqadmin` against `api` (the `api` fixture of test_management_api), as
    guest, with `raw_json` output. `admin(*args)` must exit 0 and returns stdout;
    `admin.run(*args, ok=False)` returns the CompletedProcess whatever the exit code."""
    host, port = api.broker.endpoints["http"].rsplit(":", 1)

    def run(*args, ok: bool = True):
        r = subprocess.run(["rabbitmqadmin", "-H", host, "-P", port, "-u", "guest",
                            "-p", "guest", "-f", "raw_json", *args],
                           capture_output=True, text=True, timeout=30)
        if ok:
            assert r.returncode == 0, f"rabbitmqadmin {args}: {r.stdout} {r.stderr}"
        return r

    def out(*args):
        return run(*args).stdout

    out.run = run
    return out

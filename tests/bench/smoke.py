#!/usr/bin/python3
"""CI smoke pass of bench/run: a few seconds, three short pairs of T (token keys) and S (session
copies). Asserts that it exited 0 and that its last line is the JSON object with a number in
every member it must have, never a speed (a shared CI machine says nothing about speed).

With --audit journal, which needs journald or root (the stand-in binds
/run/systemd/journal/socket), it also checks that the records were counted, and first that a
daemon which does not take the journal path (JOURNAL_STREAM removed by a wrapper) makes bench/run
fail: the check that says the figures are the production path's must be able to fail. Without
either, the pass runs with --audit stderr and says so."""
import json
import os
import socket
import subprocess
import sys
import tempfile

# The members of the first releases, in order (bench/run fills them from pair T).
KEYS = ["alg", "raw_cpu_us_per_sign", "daemon_cpu_us_per_sign", "cpu_ratio", "raw_signs_per_s",
        "daemon_signs_per_s", "throughput_ratio", "p99_ms_at_half_load", "jwks_cpu_us_per_req",
        "daemon_keys", "floor", "helper_cpu_us_per_sign", "own_us_per_sign",
        "baseline_cpu_us_per_sign", "baseline_signs_per_s", "cpu_vs_baseline",
        "throughput_vs_baseline"]
NUMBERS = KEYS[1:9] + ["helper_cpu_us_per_sign", "batch_tokens_per_s", "http_cpu_us_per_req"]
# Daemon and helpers minus raw: negative in a 0.05 s run is noise, but it is a number.
SIGNED = ["own_us_per_sign", "own_us_per_token_batch16"]
# Only with --baseline-daemon, which the smoke pass does not give.
NULLS = KEYS[13:]
PAIR_NUMBERS = ["raw_cpu_us_per_sign", "daemon_cpu_us_per_sign", "helper_cpu_us_per_sign",
                "throughput_ratio", "p99_ms_at_half_load", "batch_tokens_per_s"]
PAIR_SIGNED = ["own_us_per_sign", "own_us_per_token_batch16"]
# bench/floors' parts and their sums.
FLOOR_NUMBERS = ["parse_body_us", "parse_item_us", "parse_guard_us", "encode_us", "round_trip_us",
                 "round_trip_one_cpu_us", "round_trip_parallel_us", "round_trip_parallel_pinned_us",
                 "journal_send_us", "own_us_per_sign", "own_us_per_token_batch"]


def journal_possible():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect("/run/systemd/journal/socket")
        return True
    except OSError:
        return os.geteuid() == 0
    finally:
        s.close()


def bench(audit, env=None):
    argv = [sys.executable, os.environ["BENCH_RUN"], "--alg", "ES256", "--seconds", "0.05",
            "--pairs", "3", "--idle-conns", "50", "--audit", audit]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=150, env=env)


def is_number(v, signed=False):
    # Zero is possible: 0.05 s of daemon work can be less than one clock tick.
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (signed or v >= 0)


def check_result(r, audit):
    out = r.stdout.strip().splitlines()
    problems = []
    if r.returncode != 0:
        problems.append("bench/run exited with %d" % r.returncode)
    try:
        result = json.loads(out[-1]) if out else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        return problems + ["the last line is not a JSON object"]
    if list(result)[:len(KEYS)] != KEYS:
        problems.append("JSON members %r, want %r first" % (list(result), KEYS))
    if result.get("alg") != "ES256":
        problems.append("alg is %r" % result.get("alg"))
    if result.get("daemon_keys") != "token" or result.get("floor") != "token":
        problems.append("daemon_keys %r, floor %r: want pair T's, token and token"
                        % (result.get("daemon_keys"), result.get("floor")))
    for k in NUMBERS + SIGNED:
        if not is_number(result.get(k), k in SIGNED):
            problems.append("%s is %r, not a number" % (k, result.get(k)))
    for k in NULLS:
        if result.get(k) is not None:
            problems.append("%s is %r without --baseline-daemon" % (k, result.get(k)))
    pairs = result.get("pairs") or {}
    for name, keys in (("T", "token"), ("S", "session-copy")):
        p = pairs.get(name)
        if not isinstance(p, dict):
            problems.append("no pair %s" % name)
            continue
        if p.get("daemon_keys") != keys or p.get("floor") != keys:
            problems.append("pair %s: daemon_keys %r, floor %r, want %s"
                            % (name, p.get("daemon_keys"), p.get("floor"), keys))
        for k in PAIR_NUMBERS + PAIR_SIGNED:
            if not is_number(p.get(k), k in PAIR_SIGNED):
                problems.append("pair %s: %s is %r, not a number" % (name, k, p.get(k)))
    floors = result.get("floors")
    if not isinstance(floors, dict):
        problems.append("floors is %r, not an object" % floors)
    else:
        for k in FLOOR_NUMBERS:
            if not is_number(floors.get(k)):
                problems.append("floors: %s is %r, not a number" % (k, floors.get(k)))
    if result.get("audit") != audit:
        problems.append("audit is %r, want %r" % (result.get("audit"), audit))
    if audit == "journal" and not (isinstance(result.get("journal_records"), int) and
                                   result["journal_records"] > 0):
        problems.append("journal_records is %r" % result.get("journal_records"))
    if not any(line.startswith("median T") for line in out) or \
            not any(line.startswith("median S") for line in out):
        problems.append("no table (no 'median T' and 'median S' rows)")
    return problems


def main():
    audit = "journal" if journal_possible() else "stderr"
    problems = []
    if audit == "journal":
        # A daemon that never sees JOURNAL_STREAM audits to stderr: bench/run must refuse it.
        with tempfile.TemporaryDirectory() as tmp:
            wrapper = os.path.join(tmp, "tokensignd")
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nunset JOURNAL_STREAM\nexec '%s' \"$@\"\n"
                        % os.environ["TOKENSIGND"].replace("'", "'\\''"))
            os.chmod(wrapper, 0o755)
            r = bench(audit, dict(os.environ, TOKENSIGND=wrapper))
        if r.returncode == 0 or "did not take the journal path" not in r.stderr:
            problems.append("a daemon off the journal path was not refused (exit %d):\n%s"
                            % (r.returncode, r.stderr[-2000:]))
    else:
        sys.stdout.write("bench smoke: no journald and not root: --audit stderr only\n")
    r = bench(audit)
    problems += check_result(r, audit)
    if problems:
        sys.stderr.write("bench smoke test failed:\n  %s\n---- stdout ----\n%s\n---- stderr ----\n%s\n"
                         % ("\n  ".join(problems), r.stdout, r.stderr))
        return 1
    sys.stdout.write(r.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

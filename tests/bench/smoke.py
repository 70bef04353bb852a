#!/usr/bin/python3
"""CI smoke pass of bench/run: a couple of seconds, three short A/B pairs. Asserts that it exited
0 and that its last line is the JSON object of issue #6 with a number in every member; never a
speed (a shared CI machine says nothing about speed). The daemon runs with session copies, so
that the pass covers that signing path too."""
import json
import os
import subprocess
import sys

KEYS = ["alg", "raw_cpu_us_per_sign", "daemon_cpu_us_per_sign", "cpu_ratio", "raw_signs_per_s",
        "daemon_signs_per_s", "throughput_ratio", "p99_ms_at_half_load", "jwks_cpu_us_per_req",
        "daemon_keys", "floor", "helper_cpu_us_per_sign", "own_us_per_sign",
        "baseline_cpu_us_per_sign", "baseline_signs_per_s", "cpu_vs_baseline",
        "throughput_vs_baseline"]
NUMBERS = KEYS[1:9] + ["helper_cpu_us_per_sign"]
# Daemon and helpers minus raw: negative in a 0.05 s run is noise, but it is a number.
SIGNED = ["own_us_per_sign"]
# Only with --baseline-daemon, which the smoke pass does not give.
NULLS = KEYS[13:]


def main():
    argv = [sys.executable, os.environ["BENCH_RUN"], "--alg", "ES256", "--seconds", "0.05",
            "--pairs", "3", "--idle-conns", "50", "--session-copies"]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=100)
    out = r.stdout.strip().splitlines()
    problems = []
    if r.returncode != 0:
        problems.append("bench/run exited with %d" % r.returncode)
    try:
        result = json.loads(out[-1]) if out else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        problems.append("the last line is not a JSON object")
    else:
        if list(result) != KEYS:
            problems.append("JSON members %r, want %r" % (list(result), KEYS))
        if result.get("alg") != "ES256":
            problems.append("alg is %r" % result.get("alg"))
        if result.get("daemon_keys") != "session-copy" or result.get("floor") != "token":
            problems.append("daemon_keys %r, floor %r: want session-copy and token"
                            % (result.get("daemon_keys"), result.get("floor")))
        for k in NUMBERS + SIGNED:
            v = result.get(k)
            # Zero is possible: 0.05 s of daemon work can be less than one clock tick.
            if not isinstance(v, (int, float)) or isinstance(v, bool) or \
                    (v < 0 and k not in SIGNED):
                problems.append("%s is %r, not a number" % (k, v))
        for k in NULLS:
            if result.get(k) is not None:
                problems.append("%s is %r without --baseline-daemon" % (k, result.get(k)))
    if not any(line.startswith("median") for line in out):
        problems.append("no table (no 'median' row)")
    if problems:
        sys.stderr.write("bench smoke test failed:\n  %s\n---- stdout ----\n%s\n---- stderr ----\n%s\n"
                         % ("\n  ".join(problems), r.stdout, r.stderr))
        return 1
    sys.stdout.write(r.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

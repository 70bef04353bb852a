#!/usr/bin/python3
"""Signing speed per algorithm, with and without the signature self-check.

Starts the real daemon (build/daemon/tokensignd) on a throwaway SoftHSM token with one issuer
per algorithm and self-check setting, signs over keep-alive connections from client processes
(so the Python client's GIL is not the bottleneck), and reports for each issuer:
  signs/s       requests per second over the run
  cpu_us/sign   daemon CPU time per signature (user+system, from /proc/PID/stat), which
                includes SoftHSM's own work: the number that matters on a shared machine
The self-check cost is the difference of cpu_us/sign between the two rows of an algorithm. The
two are measured alternately (no, yes, no, yes, ...) for --rounds rounds and the medians are
printed, so that drift on a noisy machine cancels.
Usage: bench/sign_speed.py [--seconds 2] [--rounds 3] [--clients 2]
"""
import argparse
import json
import multiprocessing
import os
import socket
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("TOKENSIGND", os.path.join(ROOT, "build", "daemon", "tokensignd"))
os.environ.setdefault("SOFTHSM_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
import harness  # noqa: E402

ALGS = ["ES256", "ES384", "RS256", "PS256", "EdDSA"]
BODY = json.dumps({"claims": {"sub": "user-42", "aud": "api://bench", "scope": "read"}}).encode()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client(args):
    path, issuer, deadline = args
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    req = (b"POST /v1/issuers/%s/sign HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % (issuer.encode(), len(BODY))) + BODY
    f = s.makefile("rb")
    n = bad = 0
    while time.monotonic() < deadline:
        s.sendall(req)
        status = f.readline().split()[1]
        length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        f.read(length)
        n += 1
        bad += status != b"200"
    return n, bad


def measure(d, issuer, seconds, clients):
    deadline = time.monotonic() + seconds
    cpu0, t0 = cpu_seconds(d.proc.pid), time.monotonic()
    with multiprocessing.Pool(clients) as pool:
        results = pool.map(client, [(d.sign_socket, issuer, deadline)] * clients)
    cpu1, t1 = cpu_seconds(d.proc.pid), time.monotonic()
    n = sum(r[0] for r in results)
    bad = sum(r[1] for r in results)
    return n / (t1 - t0), (cpu1 - cpu0) / n * 1e6, bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=2)
    a = ap.parse_args()
    issuers = {}
    for alg in ALGS:
        for check in ("no", "yes"):
            issuers["%s-%s" % (alg.lower(), check)] = {
                "algorithm": alg, "self-check": check, "audiences": "api://bench", "allow": "*"}
    with harness.Daemon(issuers=issuers) as d:
        print("%-8s %-10s %10s %12s %8s" % ("alg", "self-check", "signs/s", "cpu_us/sign", "non-200"))
        for alg in ALGS:
            runs = {"no": [], "yes": []}
            for _ in range(a.rounds):
                for check in ("no", "yes"):
                    runs[check].append(measure(d, "%s-%s" % (alg.lower(), check), a.seconds,
                                               a.clients))
            for check in ("no", "yes"):
                rate = statistics.median(r[0] for r in runs[check])
                cpu = statistics.median(r[1] for r in runs[check])
                bad = sum(r[2] for r in runs[check])
                print("%-8s %-10s %10.0f %12.1f %8d" % (alg, check, rate, cpu, bad))
            sys.stdout.flush()


if __name__ == "__main__":
    main()

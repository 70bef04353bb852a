#!/usr/bin/python3
"""Token trouble during a scheduled rotation (SPEC §6 grace rule, docs/design.md "The
lifecycle" and "Failure", docs/admin-api.md GET /v1/status, docs/api.md /readyz and the 503
codes). tokensignd runs against SoftHSM through the p11shim fault-injecting module
(tests/shim/README.md) with short periods: rotation-period 4s, prepublish 2s, JWKS max-age 1s,
token-ttl = max-token-ttl = 2s.

Each scenario runs one daemon while three threads watch it: a caller signing every 0.1 s, a
relying party fetching the public JWKS every 0.25 s, and a probe reading /readyz, /healthz,
GET /v1/status and the new lines of the daemon's log and of the shim's call log every 0.2 s.
Everything is recorded with wall-clock times, then checked (the recordings are shared: test 3
checks the tokens of both scenarios).

1. Token full (docs/design.md "Custody", C8): C_GenerateKeyPair answers CKR_DEVICE_MEMORY from
   just after start. When the pending key B activates, its successor cannot be made: /readyz
   stays 200 while B may sign (a warning, not a drain) and is 503 naming the issuer after B's
   grace, /v1/status has a problem (level warning, then critical), one error line per attempt,
   retries back off 1, 2, 4 s; B signs on past its scheduled retirement but no token has
   iat >= B's retirement + prepublish; then 503 no_active_key. The fault is cleared before the
   retry that would wait 8 s: a new key C appears within the announced backoff, activates only
   prepublish after it was made, signs (verifies with PyJWT against the live JWKS), /readyz 200,
   problem null, a next pending key.
2. Token removed: for ~3 s around B's activation the token answers CKR_DEVICE_REMOVED to
   C_FindObjectsInit, C_GenerateKeyPair, C_Sign and C_GetSessionInfo: sign 503
   hsm_unavailable, /readyz 503 "token unreachable", /v1/status token "unreachable", /healthz
   200, the JWKS is served unchanged (the last known keys). Faults cleared: the same process
   signs again (with B, which became active during the outage), /readyz 200, and the schedule
   carries on: C is made, activates prepublish later, D is pending, the JWKS is A B C D.
3. Never an unpublished key: over both scenarios, each token's kid was in the JWKS at least
   prepublish (minus PUBLISH_SLACK, see there) before the token was signed, stayed in it until
   then, and the token verifies (PyJWT) with the published key; except the first key of the
   fresh token, which is active at once by design.

About "before the token's iat": iat is whole seconds (the floor of the signing instant), so
the checks use the latest instant the token can have been signed, min(answer received,
iat + 1), and the last JWKS snapshot that did NOT hold the kid (the key was published after
that snapshot was requested): a failure means the key was provably published too late.

Environment (tests/shim/meson.build): TOKENSIGND, P11PROBE, SOFTHSM_MODULE, P11SHIM."""

import json
import os
import re
import threading
import time

import jwt

import harness

NAME = "main"
ISS = "https://login.example.test/main"
AUD = "api://orders"
PERIOD = 4       # rotation-period, s
PREPUBLISH = 2   # prepublish, s
ISSUER = {
    "iss": ISS,
    "algorithm": "ES256",
    "rotation-period": "%ds" % PERIOD,
    "prepublish": "%ds" % PREPUBLISH,
    "token-ttl": "2s",
    "max-token-ttl": "2s",
    "audiences": AUD,
    "allow": "*",
}
MAX_AGE = "1s"
CLAIMS = {"sub": "user-42", "aud": AUD}

SIGN_EVERY = 0.1    # caller
SNAP_EVERY = 0.25   # relying party
PROBE_EVERY = 0.2   # readyz, healthz, status, logs
EDGE = 0.05         # margin around an instant when a client-timed answer is classified
# Test 3's allowance on prepublish. The daemon schedules in whole seconds: a key made in the
# second S (created_at = S) activates at S + prepublish, but it reaches the JWKS only when the
# maintenance pass that made it ends, measured here at S + 0.03 .. S + 0.4 s (the wake comes a
# few ms into the second, then the token generates the key). One snapshot interval (0.25 s)
# would make the check flaky; 0.5 s still catches a key activated 1 s early every time.
PUBLISH_SLACK = 0.5
RETRY_MAX_WANTED = 8  # the brief: clear the fault before the backoff exceeds this

FULL_FAULT = "C_GenerateKeyPair CKR_DEVICE_MEMORY *"
REMOVED_FAULTS = ("C_FindObjectsInit CKR_DEVICE_REMOVED *",
                  "C_GenerateKeyPair CKR_DEVICE_REMOVED *",
                  "C_Sign CKR_DEVICE_REMOVED *",
                  "C_GetSessionInfo CKR_DEVICE_REMOVED *")
ERROR_LINE = re.compile(r"^(tokensignd: error: |<3>)")


def sleep_until(t):
    d = t - time.time()
    if d > 0:
        time.sleep(d)


# ---- the daemon through the shim (after test_recovery.py) ----

def shim_daemon():
    """A harness.Daemon (not started) with one short-period issuer and an admin socket, whose
    token is reached through p11shim. Fault file d.faults, call log d.shim_log, admin socket
    d.admin_sock."""
    return harness.shim_daemon({NAME: dict(ISSUER)}, admin=True, jwks_max_age=MAX_AGE)


set_faults = harness.write_faults


def admin_json(d, path):
    r = harness.unix_http(d.admin_sock, "GET", path)
    if r.status != 200:
        raise harness.HarnessError("admin GET %s: %r" % (path, r))
    return r.json()


def keys_of(d):
    return admin_json(d, "/v1/keys?issuer=" + NAME)["keys"]


def wait_two_keys(d, timeout=10.0):
    """(active, pending) key dicts of GET /v1/keys once the issuer has both."""
    deadline = time.monotonic() + timeout
    while True:
        keys = keys_of(d)
        act = [k for k in keys if k["state"] == "active"]
        pend = [k for k in keys if k["state"] == "pending"]
        if len(act) == 1 and len(pend) == 1:
            return act[0], pend[0]
        if time.monotonic() > deadline:
            raise harness.HarnessError("no active + pending key after %gs: %r" % (timeout, keys))
        time.sleep(0.05)


def try_json(body):
    try:
        return json.loads(body.decode("utf-8"))
    except ValueError:
        return None


def verify_live(d, token):
    """Verifies token against the live JWKS with PyJWT (the kid picks the key). Returns
    (kid, None) or (None, error text)."""
    try:
        key = jwt.PyJWKClient(d.jwks_url(NAME), cache_keys=False).get_signing_key_from_jwt(token)
        jwt.decode(token, key.key, algorithms=["ES256"], audience=AUD, issuer=ISS)
        return jwt.get_unverified_header(token)["kid"], None
    except Exception as e:  # noqa: BLE001 - reported by the test
        return None, repr(e)


# ---- watching a running daemon ----

class Tail:
    """New complete lines of a growing file, each with (lo, hi): it was written after lo and
    before hi."""

    def __init__(self, path):
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0
        self.rest = b""
        self.last = time.time()

    def read(self):
        now = time.time()
        out = []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        self.offset += len(data)
        data = self.rest + data
        lines = data.split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            out.append((self.last, now, line.decode("utf-8", "replace")))
        self.last = now
        return out


class Recorder:
    """The caller, the relying party and the probe, each a thread on its own period."""

    def __init__(self, d):
        self.d = d
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.signs, self.snaps, self.probes, self.shim, self.log, self.errors = \
            [], [], [], [], [], []
        # Tails start now: lines from before (start-up) are not stamped as if they were new.
        self.shim_tail = Tail(d.shim_log)
        self.log_tail = Tail(d.log_path)
        self.threads = [threading.Thread(target=self.loop, args=(every, fn), daemon=True)
                        for every, fn in ((SIGN_EVERY, self.sign), (SNAP_EVERY, self.snap),
                                          (PROBE_EVERY, self.probe))]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(30)
        self.probe_logs()

    def loop(self, every, fn):
        nxt = time.time()
        while not self.stopping.is_set():
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a broken connection is an observation
                with self.lock:
                    self.errors.append((time.time(), fn.__name__, repr(e)))
            nxt += every
            delay = nxt - time.time()
            if delay < 0:  # late: do not burst to catch up
                nxt, delay = time.time(), 0
            self.stopping.wait(delay)

    def sign(self):
        sent = time.time()
        try:
            r = self.d.sign(NAME, dict(CLAIMS))
        except Exception as e:  # noqa: BLE001
            rec = {"sent": sent, "recv": time.time(), "status": None, "error": repr(e)}
        else:
            rec = {"sent": sent, "recv": time.time(), "status": r.status}
            body = try_json(r.body)
            if r.status == 200 and isinstance(body, dict):
                rec.update(kid=body.get("kid"), iat=body.get("iat"), exp=body.get("exp"),
                           token=body.get("token"))
            else:
                rec["error"] = body.get("error") if isinstance(body, dict) else r.body[:200]
        with self.lock:
            self.signs.append(rec)

    def snap(self):
        sent = time.time()
        r = self.d.http("GET", "/%s/.well-known/jwks.json" % NAME)
        rec = {"sent": sent, "recv": time.time(), "status": r.status, "body": r.body}
        body = try_json(r.body) if r.status == 200 else None
        rec["keys"] = body["keys"] if isinstance(body, dict) else None
        rec["kids"] = [k["kid"] for k in rec["keys"]] if rec["keys"] is not None else None
        with self.lock:
            self.snaps.append(rec)

    def probe_logs(self):
        shim, log = self.shim_tail.read(), self.log_tail.read()
        with self.lock:
            self.shim += shim
            self.log += log

    def probe(self):
        sent = time.time()
        rz = self.d.unix_request("GET", "/readyz")
        hz = self.d.unix_request("GET", "/healthz")
        st = admin_json(self.d, "/v1/status")
        rec = {"sent": sent, "recv": time.time(),
               "readyz": (rz.status, try_json(rz.body)), "healthz": (hz.status, try_json(hz.body)),
               "token": st.get("token"),
               "status": [i for i in st["issuers"] if i["issuer"] == NAME][0]}
        with self.lock:
            self.probes.append(rec)
        self.probe_logs()

    # -- for the scenario's waits --

    def latest_probe(self):
        with self.lock:
            return self.probes[-1] if self.probes else None

    def kids_signed(self):
        with self.lock:
            return {s.get("kid") for s in self.signs if s["status"] == 200}


class Run:
    """What one scenario saw."""

    def __init__(self, name):
        self.name = name
        self.events = {}


def wait_recovered(d, rec, old_kids, deadline):
    """Waits until a kid not in old_kids has signed and the probe says: /readyz 200, problem
    null, and a new pending key. Returns the time or None."""
    while time.time() < deadline:
        p = rec.latest_probe()
        if rec.kids_signed() - set(old_kids) - {None} and p and p["readyz"][0] == 200 and \
                p["status"]["problem"] is None and p["status"]["pending_kid"] and \
                p["status"]["pending_kid"] not in old_kids:
            return time.time()
        time.sleep(0.1)
    return None


def finish(run, d, rec, old_kids):
    """Common end of a scenario: a token of the new key checked against the live JWKS, the
    final views, and everything the recorder saw."""
    r = d.sign(NAME, dict(CLAIMS))
    body = try_json(r.body) or {}
    run.live = {"status": r.status, "kid": body.get("kid")}
    if r.status == 200:
        run.live["verified_kid"], run.live["verify_error"] = verify_live(d, body["token"])
    time.sleep(0.5)
    rec.stop()
    run.keys_final = keys_of(d)
    run.status_final = admin_json(d, "/v1/status")
    rz = d.unix_request("GET", "/readyz")
    run.readyz_final = (rz.status, try_json(rz.body))
    run.same_process = d.proc is not None and d.proc.poll() is None and d.proc.pid == run.pid
    run.signs, run.snaps, run.probes = rec.signs, rec.snaps, rec.probes
    run.shim_lines, run.log_lines, run.errors = rec.shim, rec.log, rec.errors


def run_full():
    run = Run("token full")
    d = shim_daemon()
    rec = None
    try:
        run.t_spawn = time.time()
        d.start()
        run.t_ready = time.time()
        run.pid = d.proc.pid
        run.A, run.B = wait_two_keys(d)
        rec = Recorder(d)
        set_faults(d, FULL_FAULT)
        run.events["fault"] = time.time()
        rec.start()
        grace_end = run.B["retires_at"] + PREPUBLISH
        # Attempts at B's activation, +1, +3, +7 (backoff 1, 2, 4): clear between the third
        # failure and the fourth attempt, after the grace has run out, so the daemon has to
        # fail closed and the backoff never reaches 8 s.
        sleep_until(grace_end + 0.6)
        set_faults(d)
        run.events["clear"] = time.time()
        old = (run.A["kid"], run.B["kid"])
        run.events["recovered"] = wait_recovered(
            d, rec, old, run.events["clear"] + RETRY_MAX_WANTED + PREPUBLISH + 4)
        finish(run, d, rec, old)
    finally:
        if rec is not None and not rec.stopping.is_set():
            rec.stop()
        run.log_text = d.log()
        try:
            with open(d.shim_log) as f:
                run.shim_text = f.read()
        except FileNotFoundError:
            run.shim_text = ""
        d.close()
    return run


def run_removed():
    run = Run("token removed")
    d = shim_daemon()
    rec = None
    try:
        run.t_spawn = time.time()
        d.start()
        run.t_ready = time.time()
        run.pid = d.proc.pid
        run.A, run.B = wait_two_keys(d)
        rec = Recorder(d).start()
        # The token is gone from 1 s before B's activation to 2.2 s after it.
        sleep_until(run.B["activates_at"] - 1.0)
        set_faults(d, *REMOVED_FAULTS)
        run.events["fault"] = time.time()
        sleep_until(run.B["activates_at"] + 2.2)
        set_faults(d)
        run.events["clear"] = time.time()
        old = (run.A["kid"], run.B["kid"])
        run.events["recovered"] = wait_recovered(
            d, rec, old, run.events["clear"] + 6 + 2 * PREPUBLISH + 4)
        finish(run, d, rec, old)
    finally:
        if rec is not None and not rec.stopping.is_set():
            rec.stop()
        run.log_text = d.log()
        try:
            with open(d.shim_log) as f:
                run.shim_text = f.read()
        except FileNotFoundError:
            run.shim_text = ""
        d.close()
    return run


SCENARIOS = {"full": run_full, "removed": run_removed}
RUNS = {}


def get_run(name):
    """Each scenario runs once per process; its recording serves every test that needs it."""
    if name not in RUNS:
        try:
            RUNS[name] = SCENARIOS[name]()
        except Exception as e:  # noqa: BLE001 - re-raised for every test that needs it
            RUNS[name] = e
    r = RUNS[name]
    if isinstance(r, Exception):
        raise harness.HarnessError("scenario %r could not run: %r" % (name, r)) from r
    return r


# ---- checks ----

def short(kid):
    return kid[:6] if kid else str(kid)


def timeline(run):
    """A compact account of what the scenario saw, for failure messages."""
    t0 = run.A["activates_at"]
    lines = ["scenario %s: t0=%d (A=%s active at start, B=%s pending, activates t0+%d), "
             "events %s" % (run.name, t0, short(run.A["kid"]), short(run.B["kid"]),
                            run.B["activates_at"] - t0,
                            {k: (None if v is None else round(v - t0, 2))
                             for k, v in run.events.items()})]
    prev, start, last = None, None, None
    for s in run.signs + [None]:
        cur = None if s is None else (s["status"], s.get("kid") and short(s["kid"]),
                                      s.get("error"))
        if cur != prev:
            if prev is not None:
                lines.append("  sign t0%+.2f..%+.2f: %r" % (start - t0, last - t0, prev))
            prev, start = cur, (s["sent"] if s else None)
        if s is not None:
            last = s["recv"]
    prev = None
    for p in run.probes:
        cur = (p["readyz"], p["token"], p["status"]["problem"] is not None,
               short(p["status"]["active_kid"]), short(p["status"]["pending_kid"]))
        if cur != prev:
            lines.append("  probe t0%+.2f: readyz=%r token=%s problem=%s active=%s pending=%s"
                         % ((p["sent"] - t0,) + cur))
            prev = cur
    prev = None
    for s in run.snaps:
        cur = (s["status"], tuple(short(k) for k in (s["kids"] or ())))
        if cur != prev:
            lines.append("  jwks t0%+.2f: %r" % (s["sent"] - t0, cur))
            prev = cur
    lines.append("  final keys: %r" % [(short(k["kid"]), k["state"], k["created_at"] - t0,
                                        k["activates_at"] - t0, k["retires_at"] - t0)
                                       for k in run.keys_final])
    lines.append("  recorder errors: %r" % run.errors[:5])
    lines.append("  daemon log:\n    " + "\n    ".join(run.log_text.splitlines()[-40:]))
    return "\n".join(lines)


class TokenTrouble(harness.TestCase):

    def run_of(self, name):
        run = get_run(name)
        self.ctx = timeline(run) if hasattr(run, "keys_final") else run.log_text
        self.assertTrue(hasattr(run, "keys_final"), "the scenario did not finish")
        return run

    def check(self, cond, msg):
        if not cond:
            self.fail(msg + "\n" + self.ctx)

    def new_keys(self, run):
        """The keys made after start-up, in activation order."""
        old = (run.A["kid"], run.B["kid"])
        return [k for k in run.keys_final if k["kid"] not in old]

    def signs_in(self, run, lo, hi):
        """Sign answers to requests sent at or after lo and answered at or before hi."""
        return [s for s in run.signs if s["sent"] >= lo and s["recv"] <= hi]

    def probes_in(self, run, lo, hi):
        return [p for p in run.probes if p["sent"] >= lo and p["recv"] <= hi]

    def check_common_end(self, run, C):
        self.check(run.events["recovered"] is not None,
                   "no recovery: a new key did not sign with /readyz 200, problem null and a "
                   "next pending key")
        self.check(run.live["status"] == 200 and run.live["kid"] == C["kid"],
                   "a token of the new key, at the end: %r" % run.live)
        self.check(run.live.get("verified_kid") == C["kid"],
                   "the new key's token verifies with PyJWT against the live JWKS: %r" % run.live)
        self.check(run.readyz_final == (200, {"status": "ready"}),
                   "/readyz at the end: %r" % (run.readyz_final,))
        st = run.status_final
        self.check(st["token"] == "ok", "status token at the end: %r" % st)
        issuer = st["issuers"][0]
        self.check(issuer["problem"] is None and issuer["signing"] is True and
                   issuer["active_kid"] == C["kid"] and issuer["pending_kid"] and
                   issuer["pending_kid"] != C["kid"],
                   "GET /v1/status at the end: %r" % issuer)
        self.check(run.same_process, "the daemon was restarted or died")
        self.check(not run.errors, "requests that got no HTTP answer: %r" % run.errors[:5])
        for marker in harness.SANITIZER_MARKERS:
            self.check(marker not in run.log_text, "sanitizer report in the daemon's log")

    # ---- 1 ----

    def test_1_token_full_during_rotation(self):
        run = self.run_of("full")
        A, B = run.A, run.B
        b_act, b_ret = B["activates_at"], B["retires_at"]
        grace_end = b_ret + PREPUBLISH
        clear = run.events["clear"]
        self.check(b_act == A["retires_at"] and b_ret == b_act + PERIOD,
                   "start-up schedule: %r %r" % (A, B))

        # The next key is attempted when B activates, not before; each attempt fails.
        gens = [(lo, hi, line) for lo, hi, line in run.shim_lines
                if line.startswith("C_GenerateKeyPair ")]
        fails = [g for g in gens if g[2] == "C_GenerateKeyPair CKR_DEVICE_MEMORY"]
        self.check(not [g for g in gens if g[1] < b_act],
                   "key generation attempted before the pending key activated: %r" % gens)
        self.check(len(fails) >= 3, "at least three failed attempts before the fault was "
                   "cleared (backoff 1, 2, 4 s): %r" % fails)
        self.check(fails[0][1] <= b_act + 1.0,
                   "the first attempt comes when B activates (t0+%d), seen at t0%+.2f"
                   % (b_act - A["activates_at"], fails[0][1] - A["activates_at"]))
        # Backoff 1, 2, 4 ...: the gaps between attempts (stamps lag by up to PROBE_EVERY).
        gaps = [b[1] - a[1] for a, b in zip(fails, fails[1:])]
        for i, gap in enumerate(gaps):
            want = min(2 ** i, 60)
            self.check(abs(gap - want) <= 0.6, "retry %d came %.2f s after the previous one; "
                       "backoff says %d s (gaps %r)" % (i + 1, gap, want, gaps))

        # Loud: one error line per attempt, naming the issuer and the PKCS#11 code.
        errors = [line for line in run.log_text.splitlines() if ERROR_LINE.match(line) and
                  NAME in line and "CKR_DEVICE_MEMORY" in line]
        n_fail = run.shim_text.splitlines().count("C_GenerateKeyPair CKR_DEVICE_MEMORY")
        self.check(len(errors) == n_fail and n_fail >= 3,
                   "%d failed C_GenerateKeyPair calls, %d error lines naming them: %r"
                   % (n_fail, len(errors), errors))

        # /readyz and GET /v1/status while the next key cannot be made.
        before = self.probes_in(run, run.t_ready, b_act - 0.3)
        self.check(before and all(p["readyz"] == (200, {"status": "ready"}) and
                                  p["status"]["problem"] is None for p in before),
                   "before the rotation: /readyz 200 and no problem: %r"
                   % [(p["readyz"], p["status"]["problem"]) for p in before])
        failing = self.probes_in(run, fails[0][1] + 0.1, clear)
        self.check(len(failing) >= 10, "probes while failing: %d" % len(failing))
        for p in failing:
            # Ready means "can sign now" (SPEC §6): B signs on within its grace, so a failed
            # generation of its successor is a warning, not a reason to drain the instance;
            # once the grace is over nothing may sign and /readyz names the issuer.
            want = (200, {"status": "ready"}) if p["recv"] < grace_end - EDGE else \
                (503, {"status": "not_ready", "reason": NAME}) if p["sent"] >= grace_end + EDGE \
                else None
            self.check(want is None or p["readyz"] == want,
                       "/readyz while the next key cannot be made, at t0%+.2f: %r, want %r"
                       % (p["sent"] - A["activates_at"], p["readyz"], want))
            level = "warning" if p["recv"] < grace_end - EDGE else \
                "critical" if p["sent"] >= grace_end + EDGE else None
            self.check(level is None or p["status"]["level"] == level,
                       "status level while failing, at t0%+.2f: %r, want %r"
                       % (p["sent"] - A["activates_at"], p["status"], level))
            problem = p["status"]["problem"]
            self.check(isinstance(problem, str) and problem.strip(),
                       "GET /v1/status problem while failing: %r" % p["status"])
            self.check("CKR_DEVICE_MEMORY" in problem, "the problem says why: %r" % problem)
            self.check(p["token"] == "ok", "the token itself answers: %r" % p["token"])
        waits = [int(m.group(1)) for p in failing
                 for m in [re.search(r"(\d+) ?s\b", p["status"]["problem"])] if m]
        self.check(waits and max(waits) <= RETRY_MAX_WANTED,
                   "the announced backoff stayed <= %d s: %r" % (RETRY_MAX_WANTED, waits))

        # Signing: A until B activates, B until its retirement + prepublish (past its
        # scheduled retirement), then 503 no_active_key until the new key C activates.
        new = self.new_keys(run)
        self.check(new, "no key was made after the fault was cleared")
        C = new[0]
        c_act = C["activates_at"]
        for s in run.signs:
            if s["status"] != 200:
                continue
            iat = s["iat"]
            want = A["kid"] if iat < b_act else B["kid"] if iat < grace_end else \
                C["kid"] if iat >= c_act else None
            self.check(s["kid"] == want,
                       "token with iat t0%+d signed by %s; the schedule says %s (B active "
                       "t0+%d..t0+%d with grace, C from t0+%d)"
                       % (iat - A["activates_at"], short(s["kid"]), short(want),
                          b_act - A["activates_at"], grace_end - A["activates_at"],
                          c_act - A["activates_at"]))
        self.check(any(s["status"] == 200 and s["kid"] == B["kid"] and s["iat"] >= b_ret
                       for s in run.signs),
                   "B never signed past its scheduled retirement (grace of SPEC §6)")
        outside = [s for s in run.signs if s["recv"] < grace_end - EDGE or
                   s["sent"] > c_act + EDGE]
        self.check(all(s["status"] == 200 for s in outside),
                   "outside the no-key window every request signs: %r"
                   % [s for s in outside if s["status"] != 200][:3])
        closed = self.signs_in(run, grace_end + EDGE, c_act - EDGE)
        self.check(len(closed) >= 5, "requests in the no-key window: %d" % len(closed))
        self.check(all(s["status"] == 503 and s.get("error") == "no_active_key" for s in closed),
                   "after retirement + prepublish without a successor: 503 no_active_key; got %r"
                   % [(s["status"], s.get("error")) for s in closed if s["status"] != 503 or
                      s.get("error") != "no_active_key"][:5])

        # Recovery: C is made within the announced backoff after the fault went, and signs
        # only after prepublish.
        last_wait = min(waits[-1], RETRY_MAX_WANTED)
        self.check(C["created_at"] >= int(clear) and C["created_at"] <= clear + last_wait + 1,
                   "C made at t0%+d; fault cleared at t0%+.2f with the next try in %d s"
                   % (C["created_at"] - A["activates_at"], clear - A["activates_at"],
                      last_wait))
        seen_pending = [p["sent"] for p in run.probes if p["status"]["pending_kid"] == C["kid"]]
        self.check(seen_pending and seen_pending[0] <= clear + last_wait + 1.5,
                   "C was pending by t0%+.2f" % (clear + last_wait + 1.5 - A["activates_at"]))
        self.check(c_act >= C["created_at"] + PREPUBLISH,
                   "C activates only after prepublish: %r" % C)
        self.check(any(s["status"] == 200 and s["kid"] == C["kid"] for s in run.signs),
                   "signing resumed with C")
        self.check_common_end(run, C)

    # ---- 2 ----

    def test_2_token_removed_during_rotation(self):
        run = self.run_of("removed")
        A, B = run.A, run.B
        t0, b_act, b_ret = A["activates_at"], B["activates_at"], B["retires_at"]
        fault, clear = run.events["fault"], run.events["clear"]
        self.check(fault < b_act < clear, "the outage spans B's activation")

        gone = self.signs_in(run, fault + 0.1, clear)
        self.check(len(gone) >= 10, "sign requests while the token was gone: %d" % len(gone))
        self.check(all(s["status"] == 503 and s.get("error") == "hsm_unavailable" for s in gone),
                   "sign while the token is gone: 503 hsm_unavailable; got %r"
                   % [(round(s["sent"] - t0, 2), s["status"], s.get("error"), short(s.get("kid")))
                      for s in gone if s["status"] != 503 or
                      s.get("error") != "hsm_unavailable"][:5])
        probes = self.probes_in(run, fault + 0.1, clear)
        self.check(len(probes) >= 5, "probes while the token was gone: %d" % len(probes))
        for p in probes:
            self.check(p["readyz"] == (503, {"status": "not_ready",
                                             "reason": "token unreachable"}),
                       "/readyz while the token is gone, t0%+.2f: %r"
                       % (p["sent"] - t0, p["readyz"]))
            self.check(p["token"] == "unreachable", "status token while gone: %r" % p["token"])
            # The scheduler cannot read the token, yet the handover at B's activation shows.
            want = (A["kid"], B["kid"]) if p["recv"] < b_act - EDGE else \
                (B["kid"], None) if p["sent"] >= b_act + EDGE else None
            got = (p["status"]["active_kid"], p["status"]["pending_kid"])
            self.check(want is None or got == want,
                       "GET /v1/status active/pending while gone, t0%+.2f: %r, want %r"
                       % (p["sent"] - t0, got, want))
        for p in run.probes:
            self.check(p["healthz"] == (200, {"status": "ok"}),
                       "/healthz at t0%+.2f: %r" % (p["sent"] - t0, p["healthz"]))

        # The JWKS keeps being served, unchanged: the last known keys.
        last_known = [s for s in run.snaps if s["recv"] < fault]
        self.check(last_known and last_known[-1]["status"] == 200 and
                   last_known[-1]["kids"] == [A["kid"], B["kid"]],
                   "JWKS before the outage: %r" % (last_known[-1:],))
        during = [s for s in run.snaps if s["sent"] >= fault and s["recv"] <= clear]
        self.check(len(during) >= 5, "JWKS fetches while gone: %d" % len(during))
        for s in during:
            self.check(s["status"] == 200 and s["body"] == last_known[-1]["body"],
                       "JWKS while the token is gone, t0%+.2f: %r %r"
                       % (s["sent"] - t0, s["status"], s["kids"]))

        # Back: the same process signs again at once, with B, which activated meanwhile.
        after = self.signs_in(run, clear + 0.3, float("inf"))
        self.check(after and all(s["status"] == 200 for s in after),
                   "every request after the token came back signs: %r"
                   % [(round(s["sent"] - t0, 2), s["status"], s.get("error")) for s in after
                      if s["status"] != 200][:5])
        self.check(after[0]["kid"] == B["kid"], "B signs after the outage: %r" % after[0])
        for p in self.probes_in(run, clear + 0.3, float("inf")):
            self.check(p["readyz"] == (200, {"status": "ready"}) and p["token"] == "ok" and
                       p["status"]["problem"] is None,
                       "/readyz and status after the token came back, t0%+.2f: %r %r"
                       % (p["sent"] - t0, p["readyz"], p["status"]))

        # The schedule carries on: C made after the outage, active prepublish later and not
        # before B's scheduled retirement; D pending; the JWKS is A B C D.
        new = self.new_keys(run)
        self.check(len(new) == 2, "two keys made after the outage: %r" % new)
        C, D = new
        self.check([k["kid"] for k in run.keys_final] == [A["kid"], B["kid"], C["kid"], D["kid"]]
                   and [k["state"] for k in run.keys_final] ==
                   ["retired", "retired", "active", "pending"],
                   "keys at the end: %r" % run.keys_final)
        self.check(C["created_at"] >= int(clear) and C["created_at"] <= clear + 6,
                   "C made after the token came back: %r" % C)
        self.check(C["activates_at"] >= max(C["created_at"] + PREPUBLISH, b_ret),
                   "C activates after prepublish and not before B's scheduled retirement: %r"
                   % C)
        self.check(D["activates_at"] >= D["created_at"] + PREPUBLISH and
                   D["activates_at"] >= C["activates_at"] + PERIOD, "D's schedule: %r" % D)
        final = run.snaps[-1]
        self.check(final["status"] == 200 and
                   final["kids"] == [A["kid"], B["kid"], C["kid"], D["kid"]],
                   "JWKS at the end: %r" % final["kids"])
        for s in run.signs:
            if s["status"] != 200:
                continue
            iat = s["iat"]
            want = A["kid"] if iat < b_act else B["kid"] if iat < C["activates_at"] else C["kid"]
            self.check(s["kid"] == want, "token with iat t0%+d signed by %s; the schedule says %s"
                       % (iat - t0, short(s["kid"]), short(want)))
        self.check(any(ERROR_LINE.match(line) and "CKR_DEVICE_REMOVED" in line
                       for line in run.log_text.splitlines()),
                   "no error line names CKR_DEVICE_REMOVED")
        self.check_common_end(run, C)

    # ---- 3 ----

    def check_published(self, run):
        """Every token's kid was in the JWKS for prepublish (minus one snapshot interval)
        before the token was signed, and stayed there; the token verifies with that key."""
        t0 = run.A["activates_at"]
        snaps = [s for s in run.snaps if s["status"] == 200]
        self.check(len(snaps) >= 20, "JWKS snapshots: %d" % len(snaps))
        gaps = [b["sent"] - a["sent"] for a, b in zip(snaps, snaps[1:])]
        self.check(max(gaps) <= 1.0 and sorted(gaps)[len(gaps) // 2] <= 0.4,
                   "JWKS sampling too coarse to mean anything: max gap %.2f s" % max(gaps))
        tokens = [s for s in run.signs if s["status"] == 200]
        self.check(len(tokens) >= 30, "tokens: %d" % len(tokens))
        checked = set()
        for s in tokens:
            kid, token = s["kid"], s["token"]
            header = jwt.get_unverified_header(token)
            payload = jwt.decode(token, options={"verify_signature": False})
            self.check(header["kid"] == kid and header["alg"] == "ES256" and
                       payload["iat"] == s["iat"] and payload["iss"] == ISS and
                       s["exp"] - s["iat"] == 2, "answer and token disagree: %r %r %r"
                       % (s, header, payload))
            # the latest instant the token can have been signed at
            signed_by = min(s["recv"], s["iat"] + 1)
            idx = [i for i, sn in enumerate(snaps) if kid in sn["kids"]]
            self.check(idx, "%s signed but was never in the JWKS" % short(kid))
            first = idx[0]
            # until the token: never out of the JWKS
            between = [sn for sn in snaps[first:] if sn["recv"] <= s["sent"]]
            self.check(all(kid in sn["kids"] for sn in between),
                       "%s left the JWKS before it signed at t0%+.2f" % (short(kid),
                                                                         s["recv"] - t0))
            later = [sn for sn in snaps if sn["sent"] >= s["recv"]]
            if later:
                self.check(kid in later[0]["kids"],
                           "%s was gone from the JWKS right after signing" % short(kid))
            jwk = [k for k in snaps[idx[-1]]["keys"] if k["kid"] == kid][0]
            try:
                jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience=AUD,
                           issuer=ISS, options={"verify_exp": False})
            except jwt.PyJWTError as e:
                self.check(False, "token of %s does not verify with its published key: %r"
                           % (short(kid), e))
            if kid == run.A["kid"]:
                # The first key of a fresh token is active at once (SPEC §6), but it is
                # published from the start: in the very first snapshot.
                self.check(first == 0, "the first key was not in the first JWKS snapshot")
                continue
            # published after the last snapshot without it was requested (or after spawn)
            published_after = snaps[first - 1]["sent"] if first > 0 else run.t_spawn
            self.check(published_after <= signed_by - PREPUBLISH + PUBLISH_SLACK,
                       "%s signed by t0%+.2f (iat t0%+d) but was not in the JWKS at t0%+.2f: "
                       "published less than prepublish (%d s) - %.2f s before"
                       % (short(kid), signed_by - t0, s["iat"] - t0, published_after - t0,
                          PREPUBLISH, PUBLISH_SLACK))
            checked.add(kid)
        return checked

    def test_3_never_an_unpublished_key(self):
        for name in ("full", "removed"):
            with self.subTest(scenario=name):
                run = self.run_of(name)
                checked = self.check_published(run)
                # B and the key made after the trouble were both checked
                new = self.new_keys(run)
                self.check(run.B["kid"] in checked and new and new[0]["kid"] in checked,
                           "kids checked: %r" % sorted(short(k) for k in checked))


if __name__ == "__main__":
    harness.main()

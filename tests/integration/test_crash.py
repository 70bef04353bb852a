#!/usr/bin/python3
"""The schedule survives a crash at any instant (SPEC §6, last point; design.md "State lives in
the token").

At least 32 rounds, and at least 70 s so that retired keys reach their destroy_after while the
daemon keeps being killed, of: start tokensignd on the same token, check, sign a little,
maybe call rotate / rotate now / revoke (pending or active) on the admin socket - either to
completion or SIGKILLing the daemon 0-50 ms (sometimes up to 120 ms) after the request left -
and SIGKILL it at a random
instant (sometimes right after a second at which the scheduler activates or destroys a key),
with a client signing all the while. After every restart:

- tokencheck on the token contents: records well-formed and bound to their key pairs; no key
  activated before created_at + prepublish, except the first key of each issuer and keys that
  a rotate-now/revoke of ours may have activated early; exactly one active key per issuer;
- the daemon signs at once, with the key the records say is active;
- every token we ever got whose exp + 60 s has not passed still verifies against the JWKS
  (keys we revoked, or may have revoked with a killed call, excepted), and no key left the
  token before its destroy_after;
- within one rescan interval: exactly one pending key per issuer (key pairs without a record may
  stay for a minute: they are never used),
  no record without its key pair, no superseded record, no expired key, and JWKS, /v1/keys and
  /v1/status agree with the records.

CRASH_SEED=N reproduces a run (the seed is printed); CRASH_ROUNDS and CRASH_MIN_SECONDS change
its length.
"""

import copy
import math
import os
import random
import threading
import time

import harness
import tokencheck

AUD = "api://crash"
ISSUERS = {
    "a": {"iss": "https://login.example.test/a", "algorithm": "ES256", "rotation-period": "4s",
          "prepublish": "2s", "token-ttl": "3s", "max-token-ttl": "3s", "allow": "*"},
    "b": {"iss": "https://login.example.test/b", "algorithm": "ES256", "rotation-period": "6s",
          "prepublish": "3s", "token-ttl": "3s", "max-token-ttl": "3s", "allow": "*"},
}
ROUNDS = int(os.environ.get("CRASH_ROUNDS", "32"))
MIN_SECONDS = float(os.environ.get("CRASH_MIN_SECONDS", "70"))
RESCAN = tokencheck.rescan_interval(ISSUERS)
SKEW = 60

ACTIONS = [("none", 25), ("rotate", 15), ("rotate-now", 20), ("revoke-pending", 20),
           ("revoke-active", 20)]


def sleep_until(t):
    d = t - time.time()
    if d > 0:
        time.sleep(d)


def weighted(rng, choices):
    total = sum(w for _, w in choices)
    x = rng.uniform(0, total)
    for c, w in choices:
        x -= w
        if x <= 0:
            return c
    return choices[-1][0]


class Signer:
    """Signs for every issuer every 20 ms until stopped (a kill ends it with errors, which
    are expected); keeps the tokens and every answer that is not a 200, with the times the
    request left and its answer came."""

    def __init__(self, d, tokens, label):
        self.d, self.tokens, self.label = d, tokens, label
        self.stop = threading.Event()
        self.bad = []
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        while not self.stop.is_set():
            for n in ISSUERS:
                t0 = time.time()
                try:
                    r = self.d.sign(n, {"aud": AUD, "sub": self.label})
                except Exception:  # noqa: BLE001 - the daemon is being killed
                    continue
                if r.status == 200:
                    b = r.json()
                    self.tokens.append(dict(b, issuer=n, at=t0, round=self.label))
                else:
                    self.bad.append((t0, time.time(), n, r))
            time.sleep(0.02)

    def finish(self):
        self.stop.set()
        self.th.join()
        return self.bad


class CrashTest(harness.TestCase):

    def setUp(self):
        seed = os.environ.get("CRASH_SEED")
        self.seed = int(seed) if seed else random.randrange(1 << 30)
        print("CRASH_SEED=%d" % self.seed)
        self.rng = random.Random(self.seed)
        self.d = tokencheck.admin_daemon(ISSUERS, jwks_max_age="1s")
        self.addCleanup(self.d.close)
        self.tokens = []        # every token we were given: the sign answer + issuer, at, round
        self.revoked = set()    # kids we revoked, or may have (a killed revoke call)
        self.completed_revokes = set()
        self.early = []         # (issuer, kid, seen, lo, hi): calls that may activate a key
        #                         early; kid was pending when we looked at `seen`
        self.first = set()      # kids of the first keys of the fresh token
        self.known = {}         # kid -> (issuer, state, destroy_after) as last derived
        self.history = []       # one line per round, printed on failure
        self.bad_answers = []
        self.fail_closed_seen = set()  # "issuer at second: why", justified refusals
        self.stats = {"destroyed_on_schedule": 0, "restarts_with_leftovers": 0,
                      "fail_closed": 0, "fail_closed_while_signing": 0,
                      "signed_at_restart": 0, "live_checked": 0}

    # ---- context and exemptions ----

    def fail_round(self, msg, view=None):
        ctx = [msg, "seed: CRASH_SEED=%d" % self.seed, "rounds so far:"]
        ctx += ["  " + h for h in self.history[-12:]]
        if view is not None:
            ctx.append(view.report() if hasattr(view, "report") else view.dump())
        ctx.append("daemon log (tail):\n" + self.d.log()[-5000:])
        # Once more at the end: CI keeps only the tail of a long failure report.
        ctx.append("FAILED: %s (CRASH_SEED=%d)" % (msg.split("\n")[0][:600], self.seed))
        self.fail("\n".join(ctx))

    def exempt(self, k):
        """Keys allowed to activate before created_at + prepublish."""
        if k.kid in self.first:
            return True
        for n, kid, seen, lo, hi in self.early:
            if n != k.issuer or not (math.floor(lo) <= k.activates_at <= math.ceil(hi) + 1):
                continue
            if k.kid == kid:
                return True
            # A key made after we looked at the pending kid: the scheduler's new pending key
            # (an activation happened between our look and the call) or the fresh key that a
            # revoke of the active key / rotate --now makes when there is no pending key.
            if k.created_at >= math.floor(seen):
                return True
        return False

    def refusal_justified(self, view, n, t0, t1, r):
        """True when r, a sign answer for issuer n that left at t0 and came at t1, is the
        fail-closed case of SPEC §6: 503 no_active_key while, at a second the request was in
        the daemon, the records in view show the active key past its grace with no successor
        published for prepublish (e.g. the pending key was revoked, or its revoke killed,
        shortly before it was due, so its replacement came too late to take over in time)."""
        try:
            code = r.json().get("error") if r.status == 503 else None
        except ValueError:
            code = None
        if code != "no_active_key":
            return False
        view = self.before_forced(view, n, t1)
        for sec in range(int(t0), int(t1) + 1):
            why = tokencheck.fail_closed_reason(view, ISSUERS, n, sec)
            if why:
                self.fail_closed_seen.add("%s at %d: %s" % (n, sec, why))
                return True
        return False

    def before_forced(self, view, n, t):
        """view as it stood at t for issuer n's forced activations: a rotate --now (or a revoke
        of the active key) made after t rewrote its key's record with an earlier activation,
        and the stale revision is gone from the token. Such a key is given back the earliest
        activation it could have had unforced, created_at + prepublish."""
        prepublish = tokencheck.timings_of(ISSUERS)[n].prepublish
        forced = {kid for i, kid, seen, lo, hi in self.early if i == n and kid and lo > t}
        if not any(k.kid in forced for k in view.keys):
            return view
        view = copy.deepcopy(view)
        for k in view.keys:
            if k.kid in forced:
                k.activates_at = max(k.activates_at, k.created_at + prepublish)
        return view

    def unexplained_refusals(self, rnd, bad):
        """Fails the round on a sign answer in bad ([(t0, t1, issuer, response)]) other than
        the justified fail-closed case. The records are read now: later changes (a pending
        key made since) do not change which key could sign at t0..t1."""
        if not bad:
            return
        view = tokencheck.read(self.d)
        out = []
        for t0, t1, n, r in bad:
            if self.refusal_justified(view, n, t0, t1, r):
                self.stats["fail_closed_while_signing"] += 1
            else:
                out.append((t0, t1, n, r))
        if out:
            self.fail_round("round %d: the daemon answered sign requests with: %r"
                            % (rnd, out[:3]),
                            tokencheck.check(view, ISSUERS, now=int(out[0][0]), settled=False,
                                             prepub_exempt=self.exempt))

    # ---- the checks after each restart ----

    def check_removed(self, view, now):
        """No key has left the token before its destroy_after (unless we revoked it)."""
        present = view.kids()
        for kid, (n, state, destroy_after) in list(self.known.items()):
            if kid in present:
                continue
            del self.known[kid]
            if kid in self.revoked:
                continue
            if state == "pending":
                if any(t["kid"] == kid for t in self.tokens):
                    self.fail_round("pending key %s of %s was removed, yet it signed tokens"
                                    % (kid, n), view)
                continue
            if now < destroy_after:
                self.fail_round("key %s of %s (%s when last seen) left the token at ~%d, before "
                                "its destroy_after %d" % (kid, n, state, now, destroy_after), view)
            self.stats["destroyed_on_schedule"] += 1

    def remember(self, res):
        for n, s in res.scheds.items():
            for k in s.keys:
                self.known[k.kid] = (n, k.state, k.destroy_after)

    def check_live_tokens(self, when):
        """Every token whose exp + 60 s has not passed verifies against the JWKS now."""
        jwks = {n: self.d.jwks(n) for n in ISSUERS}
        now = time.time()
        errors = []
        for t in self.tokens:
            if t["exp"] + SKEW <= now + 0.5 or t["kid"] in self.revoked:
                continue
            self.stats["live_checked"] += 1
            try:
                tokencheck.verify_pyjwt(t["token"], jwks[t["issuer"]], ISSUERS[t["issuer"]]["iss"],
                                        AUD, leeway=SKEW)
            except Exception as e:  # noqa: BLE001
                errors.append("token of %s by %s (signed at %.2f in round %s, exp %d): %r"
                              % (t["issuer"], t["kid"], t["at"], t["round"], t["exp"], e))
        if errors:
            self.fail_round("%s: %d live token(s) no longer verify against the JWKS "
                            "(kids there: %s):\n  %s"
                            % (when, len(errors), {n: [k["kid"] for k in j["keys"]]
                                                   for n, j in jwks.items()},
                               "\n  ".join(errors[:8])), tokencheck.read(self.d))

    def check_after_start(self, rnd, t_ready):
        d = self.d
        # 1. At once: the token's records, one active key, the daemon signs with it.
        view = tokencheck.read_stable(d)
        now = int(view.when)
        res = tokencheck.check(view, ISSUERS, now=now, settled=False, prepub_exempt=self.exempt)
        if not res.ok:
            self.fail_round("round %d, right after the restart" % rnd, res)
        if view.orphans or view.stale:
            self.stats["restarts_with_leftovers"] += 1
        self.check_removed(view, now)
        for n in ISSUERS:
            t0 = time.time()
            r = d.sign(n, {"aud": AUD, "sub": "restart"})
            t1 = time.time()
            if r.status != 200:
                # only the fail-closed case the SPEC allows, at the moment of the request
                # (the active key's grace may have ended since the view above was read)
                v = tokencheck.read_stable(d)
                if not self.refusal_justified(v, n, t0, t1, r):
                    self.fail_round("round %d: sign for %s right after the restart: %r"
                                    % (rnd, n, r), tokencheck.check(
                                        v, ISSUERS, now=int(t0), settled=False,
                                        prepub_exempt=self.exempt))
                self.stats["fail_closed"] += 1
                continue
            b = r.json()
            self.tokens.append(dict(b, issuer=n, at=time.time(), round="%d-restart" % rnd))
            self.stats["signed_at_restart"] += 1
            s = tokencheck.Schedule(tokencheck.read(d).issuer_keys(n),
                                    tokencheck.timings_of(ISSUERS)[n], b["iat"])
            if s.active is None or s.active.kid != b["kid"]:
                self.fail_round("round %d: %s signed with %s at %d; the records say %s is "
                                "active" % (rnd, n, b["kid"], b["iat"],
                                            s.active and s.active.kid), s)
        self.check_live_tokens("round %d, right after the restart" % rnd)
        for kid in self.completed_revokes:
            if kid in view.kids():
                self.fail_round("revoked key %s is back in the token" % kid, res)

        # 2. Within one rescan interval: settled, and the daemon agrees with the token.
        # A check begun after the deadline must find it settled; one begun before gets another
        # try (a check takes a while on a loaded machine).
        deadline = t_ready + RESCAN + 1.0
        while True:
            t_check = time.time()
            s = tokencheck.consistent_sample(d, ISSUERS, self.exempt, settled=True)
            if not s.problems:
                break
            if t_check > deadline:
                self.fail_round("round %d: a check begun %.1fs after the restart (rescan "
                                "interval %ds):\n  %s"
                                % (rnd, t_check - t_ready, RESCAN,
                                   "\n  ".join(s.problems)), s.res)
            time.sleep(0.2)
        for n in ISSUERS:
            kids = s.kids(n)
            for kid in self.completed_revokes:
                if kid in kids:
                    self.fail_round("revoked key %s is in the JWKS of %s" % (kid, n), s.res)
        self.check_removed(s.res.view, s.res.now)
        self.remember(s.res)
        return s

    # ---- actions ----

    def admin_call(self, rnd, action, inflight):
        d = self.d
        seen = time.time()
        st = {r["issuer"]: r for r in tokencheck.admin_json(d, "GET", "/v1/status")["issuers"]}
        n = self.rng.choice(sorted(ISSUERS))
        act, pend = st[n]["active_kid"], st[n]["pending_kid"]
        if action == "rotate":
            path, body = "/v1/issuers/%s/rotate" % n, {}
        elif action == "rotate-now":
            path, body = "/v1/issuers/%s/rotate" % n, {"now": True}
        else:
            kid = pend if action == "revoke-pending" else act
            if kid is None:
                return "%s %s: no such key now" % (action, n)
            path, body = "/v1/issuers/%s/keys/%s/revoke" % (n, kid), {}
            self.revoked.add(kid)
        t0 = time.time()
        early = action in ("rotate-now", "revoke-active")
        if not inflight:
            r = tokencheck.admin(d, "POST", path, body)
            t1 = time.time()
            if r.status != 200:
                self.fail_round("round %d: %s %s: %r" % (rnd, action, n, r))
            a = r.json()
            if early:
                self.early.append((n, pend, seen, t0, t1))
                self.early.append((n, a.get("next_kid") or a.get("active_kid"), seen, t0, t1))
            if action.startswith("revoke"):
                self.completed_revokes.add(kid)
                j = d.jwks(n)
                if kid in [k["kid"] for k in j["keys"]]:
                    self.fail_round("round %d: %s answered %r, but the JWKS still has %s"
                                    % (rnd, action, a, kid))
                # A revoke never costs the issuer its active key. One that had none already
                # (failed closed, which the signing checks hold against the records) still
                # has none.
                if a.get("active_kid") is None and act is not None:
                    self.fail_round("round %d: no active key after %s (it was %s): %r"
                                    % (rnd, action, act, a))
            return "%s %s -> %s" % (action, n, a)
        # in flight: fire it and kill the daemon 0-50 ms later
        out = {}

        def fire():
            try:
                out["r"] = tokencheck.admin(d, "POST", path, body)
            except Exception as e:  # noqa: BLE001
                out["e"] = e
        th = threading.Thread(target=fire, daemon=True)
        # mostly 0-50 ms; a quarter later, up to 120 ms: a rotate with a key generation takes
        # up to ~100 ms, and its second record revision comes late in it
        delay = self.rng.uniform(0, 0.05) if self.rng.random() < 0.75 else \
            self.rng.uniform(0.05, 0.12)
        th.start()
        time.sleep(delay)
        self.kill()
        t1 = time.time()
        th.join(20)
        if early:
            self.early.append((n, pend, seen, t0, t1))
        r = out.get("r")
        if r is not None and r.status == 200:
            a = r.json()
            if early:
                self.early.append((n, a.get("next_kid") or a.get("active_kid"), seen, t0, t1))
            if action.startswith("revoke"):
                self.completed_revokes.add(kid)
        return "%s %s killed after %.0f ms -> %s" % (
            action, n, delay * 1000, ("%d" % r.status) if r is not None else repr(out.get("e")))

    def kill(self):
        p = self.d.proc
        if p is not None and p.poll() is None:
            p.kill()
        self.d.kill()

    def next_boundary(self):
        """The next second at which the scheduler changes something (an activation or a
        destruction), if it is soon."""
        keys = tokencheck.admin_json(self.d, "GET", "/v1/keys")["keys"]
        now = time.time()
        cands = [k["activates_at"] for k in keys if k["state"] == "pending"]
        cands += [k["destroy_after"] for k in keys if k["state"] == "retired"]
        cands = [c for c in cands if now + 0.05 < c < now + 2.5]
        return min(cands) if cands else None

    # ---- the test ----

    def test_sigkill_at_random_instants(self):
        d, rng = self.d, self.rng
        t_begin = time.time()
        rnd = 0
        while rnd < ROUNDS or time.time() - t_begin < MIN_SECONDS:
            d.start()
            t_ready = time.time()
            if rnd == 0:
                v = tokencheck.read(d)
                self.first = {k.kid for k in v.keys if k.activates_at == k.created_at}
                self.assertEqual(len(self.first), len(ISSUERS), v.dump())
            self.check_after_start(rnd, t_ready)

            # sign a little (a refusal is judged with the Signer's, once the daemon is dead)
            refused = []
            for n in ISSUERS:
                for _ in range(rng.randint(1, 3)):
                    t0 = time.time()
                    r = d.sign(n, {"aud": AUD, "sub": "r%d" % rnd})
                    if r.status != 200:
                        refused.append((t0, time.time(), n, r))
                        continue
                    self.tokens.append(dict(r.json(), issuer=n, at=time.time(),
                                            round=str(rnd)))
            action = weighted(rng, ACTIONS)
            inflight = action != "none" and rng.random() < 0.6
            signer = Signer(d, self.tokens, str(rnd))
            if inflight:
                what = self.admin_call(rnd, action, True)
                self.kill()  # (already dead unless there was nothing to call)
            else:
                what = self.admin_call(rnd, action, False) if action != "none" else "no call"
                b = self.next_boundary() if rng.random() < 0.5 else None
                if b is not None:
                    delay = rng.uniform(0, 0.03)
                    sleep_until(b + delay)
                    what += "; killed %.0f ms after the scheduler's second %d" % (delay * 1000, b)
                else:
                    delay = rng.uniform(0, 1.2)
                    time.sleep(delay)
                    what += "; killed after %.0f ms" % (delay * 1000)
                self.kill()
            bad = signer.finish()
            self.history.append("round %d at %.2f: %s" % (rnd, time.time(), what))
            self.unexplained_refusals(rnd, refused + bad)
            rnd += 1

        # a last start: everything must hold once more, and the daemon stops cleanly
        d.start()
        self.check_after_start(rnd, time.time())
        self.assertEqual(d.stop(), 0, d.log()[-3000:])
        self.stats["softhsm_empty_objects"] = len(tokencheck.QUARANTINED)
        self.stats["probe_retries"] = tokencheck.read_raw.retried
        print("crash: %d rounds in %.0fs, %d tokens; %s" % (
            rnd, time.time() - t_begin, len(self.tokens),
            ", ".join("%s=%s" % kv for kv in sorted(self.stats.items()))))
        for line in sorted(self.fail_closed_seen):
            print("  fail closed, as the records justify: " + line)
        self.assertGreater(self.stats["destroyed_on_schedule"], 0,
                           "no key reached its destroy_after during the run: destruction "
                           "across crashes was not exercised")


if __name__ == "__main__":
    harness.main()

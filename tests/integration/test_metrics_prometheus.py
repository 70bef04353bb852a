#!/usr/bin/python3
"""A real Prometheus scrapes the [metrics] listener (docs/operations.md, "Monitoring"): it
accepts the exposition, and tokensign_sign_requests_total moves after signing, as its query
API sees it. Skipped (77) when no prometheus binary is installed, unless
TOKENSIGN_REQUIRE_PROMTOOL is set (scripts/test sets it)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import harness

WAIT = 60


class PrometheusTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.port = harness.free_port()
        cls.d = harness.Daemon(extra_conf="[metrics]\nlisten = 127.0.0.1:%d\n" % cls.port)
        harness.start_or_close(cls.d)
        cls.tmp = tempfile.mkdtemp(prefix="tokensign-prom-")
        cls.web = harness.free_port()
        conf = os.path.join(cls.tmp, "prometheus.yml")
        with open(conf, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: tokensign\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % cls.port)
        cls.log = open(os.path.join(cls.tmp, "prometheus.log"), "w+")
        cls.prom = subprocess.Popen(
            [shutil.which("prometheus"), "--config.file=" + conf,
             "--storage.tsdb.path=" + os.path.join(cls.tmp, "data"),
             "--web.listen-address=127.0.0.1:%d" % cls.web],
            stdin=subprocess.DEVNULL, stdout=cls.log, stderr=subprocess.STDOUT)

    @classmethod
    def tearDownClass(cls):
        cls.prom.terminate()
        try:
            cls.prom.wait(10)
        except subprocess.TimeoutExpired:
            cls.prom.kill()
            cls.prom.wait()
        cls.log.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        cls.d.close()

    def api(self, path, **params):
        url = "http://127.0.0.1:%d/api/v1/%s?%s" % (self.web, path,
                                                     urllib.parse.urlencode(params))
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)

    def prom_log(self):
        self.log.seek(0)
        return self.log.read()[-3000:]

    def query(self, expr):
        """The instant vector of expr, {labels as a sorted tuple: value}; {} while Prometheus
        is not up yet."""
        try:
            doc = self.api("query", query=expr)
        except OSError:
            return {}
        self.assertEqual(doc["status"], "success", doc)
        return {tuple(sorted(s["metric"].items())): float(s["value"][1])
                for s in doc["data"]["result"]}

    def wait_for(self, what, fn):
        end = time.time() + WAIT
        while time.time() < end:
            v = fn()
            if v:
                return v
            self.assertIsNone(self.prom.poll(), "prometheus exited:\n" + self.prom_log())
            time.sleep(0.5)
        self.fail("%s: not within %ds\nprometheus log:\n%s" % (what, WAIT, self.prom_log()))

    def granted(self):
        v = self.query('tokensign_sign_requests_total{issuer="main",result="granted"}')
        return list(v.values())[0] if v else None

    def test_scraped_and_moves(self):
        # up == 1: Prometheus parsed the exposition (a format error makes the scrape fail)
        self.wait_for("the target up", lambda: self.query('up{job="tokensign"} == 1'))
        targets = self.api("targets")["data"]["activeTargets"]
        self.assertEqual([t["health"] for t in targets], ["up"], targets)
        self.assertEqual(targets[0]["lastError"], "", targets)
        self.wait_for("the counter", lambda: self.granted() is not None)
        before = self.granted()
        for _ in range(4):
            self.assertSigned(self.d.sign("main", harness.VALID_CLAIMS))
        self.wait_for("the counter to move by 4", lambda: self.granted() == before + 4)
        self.assertTrue(self.query('tokensign_keys{issuer="main",state="active"} == 1'))


if __name__ == "__main__":
    if not shutil.which("prometheus"):
        # scripts/test installs it and sets TOKENSIGN_REQUIRE_PROMTOOL: there, a skip would
        # hide a broken install.
        if os.environ.get("TOKENSIGN_REQUIRE_PROMTOOL"):
            print("prometheus is not installed, and TOKENSIGN_REQUIRE_PROMTOOL is set",
                  file=sys.stderr)
            sys.exit(1)
        print("prometheus is not installed: skipped", file=sys.stderr)
        sys.exit(77)
    harness.main()

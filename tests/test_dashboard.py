"""The dashboard a user can open (issue 18): a real browser (headless Chromium) signs in with the
token the run's output names and sees the run's actors; a real Prometheus, pointed at the scrape
config Ray writes for its session, returns data for every ray_qgm_* series and for every query
of cluster/grafana/qgm_dashboard.json. One short Ray run serves both checks.

Without `chromium` / `prometheus` these tests skip with one line; in CI (.ci/run installs both and
sets CI=true) a skip is a failure."""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_JSON = ROOT / "cluster" / "grafana" / "qgm_dashboard.json"
SERIES = ("qgm_round", "qgm_train_loss", "qgm_test_accuracy", "qgm_consensus_distance", "qgm_round_seconds",
          "qgm_bytes_sent_total", "qgm_clients", "qgm_bytes_cross_node_total")

RUN = ("name: dash\nbackend: ray\nprogress: false\n"
       "data: {name: synthetic, batch_size: 16, alpha: 1.0, root: DATA}\n"
       "model: {name: mlp, options: {hidden: [16]}}\ntopology: {name: ring, n_clients: 4}\n"
       "algorithm: {name: dsgd, lr: 0.05}\nschedule: {epochs: 5000}\neval: {every_epochs: 1, local_models: false}\n"
       "ray: {clients_per_actor: 2}\n")


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        msg = f"`{binary}` is not installed (apt-get install {binary}); .ci/run installs it"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"CI: {msg}")
        pytest.skip(msg)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, every: float = 0.5):
    t0 = time.time()
    while True:
        value = check()
        if value or time.time() - t0 > timeout:
            return value
        time.sleep(every)


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """`python main.py` on Ray, training while the tests look at it; its dashboard URL, token
    source, run tag and Ray session directory, read from what the run prints."""
    need("chromium")
    need("prometheus")
    tmp = tmp_path_factory.mktemp("dash")
    cfg = tmp / "run.yaml"
    cfg.write_text(RUN.replace("DATA", str(tmp / "data")))
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--config", str(cfg), "--output-dir",
                             str(tmp / "run")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("run directory"):
                break
        text = "".join(lines)
        assert proc.poll() is None, text
        dash = re.search(r"dashboard: (http://\S+) \(sign in with the token in (\S+);", text)
        assert dash, text   # the run says where the dashboard is and where its token is
        tag = re.search(r"metrics tag run=(\S+)\)", text).group(1)
        session = wait_until(lambda: sorted(Path("/tmp/ray").glob(f"session_*_{proc.pid}")), 10)
        assert session, "no Ray session directory named after the driver's pid"
        token_file = Path(os.path.expanduser(dash.group(2)))
        yield {"url": dash.group(1), "token": token_file.read_text().strip(), "tag": tag, "session": session[-1],
               "proc": proc}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------- the browser

class _Page:
    """The few Chrome DevTools Protocol calls the check needs, over aiohttp's websocket."""

    def __init__(self, ws):
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params):
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.n:
                return msg.get("result", {})

    async def js(self, expr: str):
        r = await self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        return r.get("result", {}).get("value")

    async def until(self, expr: str, timeout: float):
        t0 = time.time()
        while time.time() - t0 < timeout:
            value = await self.js(expr)
            if value:
                return value
            await asyncio.sleep(0.3)
        return None


TOKEN_INPUT = "document.querySelector('input[placeholder=\"Enter your authentication token\"]')"


async def _sign_in_and_list_actors(url: str, token: str, tag: str) -> str:
    import aiohttp

    port = free_port()
    profile = tempfile.mkdtemp(prefix="qgm-chromium-")
    browser = subprocess.Popen([need("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
                                "--disable-dev-shm-usage", f"--remote-debugging-port={port}",
                                f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                        targets = await r.json()
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.2)
            page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(page_ws, max_msg_size=0) as ws:
                page = _Page(ws)
                await page.call("Page.navigate", url=url)
                # As a user does: the page asks for the token; type it and press SUBMIT.
                assert await page.until(f"!!{TOKEN_INPUT}", 30), await page.js("document.body.innerText")
                await page.js(f"{TOKEN_INPUT}.focus()")
                await page.call("Input.insertText", text=token)
                clicked = await page.until("(() => { const b = Array.from(document.querySelectorAll('button'))"
                                           ".find(b => b.innerText.trim() === 'SUBMIT' && !b.disabled);"
                                           " if (b) { b.click(); return true } })()", 10)
                assert clicked, "no SUBMIT button enabled after typing the token"
                signed_in = await page.until(f"!{TOKEN_INPUT}", 20)
                assert signed_in, await page.js("document.body.innerText")
                await page.call("Page.navigate", url=url.rstrip("/") + "/#/actors")
                text = await page.until(f"(() => {{ const t = document.body.innerText;"
                                        f" return t.includes('{tag}') && t.includes('ClientActor') ? t : '' }})()", 40)
                return text or await page.js("document.body.innerText")
    finally:
        browser.kill()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
def test_a_browser_signs_in_with_the_printed_token_and_sees_the_runs_actors(live_run):
    text = asyncio.run(_sign_in_and_list_actors(live_run["url"], live_run["token"], live_run["tag"]))
    assert "Authentication Token Required" not in text
    assert live_run["tag"] in text and "Coordinator" in text and "ClientActor" in text, text[-2000:]
    assert text.count("ALIVE") >= 3   # the coordinator and the 2 ClientActors of 2 clients each


# ---------------------------------------------------------------- Prometheus

def _query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def dashboard_queries() -> list[str]:
    d = json.loads(DASHBOARD_JSON.read_text())
    return [t["expr"] for p in d["panels"] for t in p["targets"]]


def test_the_dashboard_json_is_valid_and_covers_every_series():
    d = json.loads(DASHBOARD_JSON.read_text())
    exprs = " ".join(dashboard_queries())
    from qgm_ray.engine.metrics import NAMES
    assert set(NAMES) == set(SERIES)
    for name in SERIES:
        assert f"ray_{name}" in exprs, name
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "run"}
    assert all(t["datasource"]["uid"] == "${datasource}" for p in d["panels"] for t in p["targets"])


@pytest.mark.ray
@pytest.mark.slow
def test_prometheus_with_rays_scrape_config_has_every_series_and_every_dashboard_query(live_run, tmp_path):
    session = live_run["session"]
    ray_config = session / "metrics" / "prometheus" / "prometheus.yml"
    assert ray_config.is_file(), f"Ray wrote no Prometheus config in {session}"
    # Ray's config as written, the scrape interval shortened from 10 s to keep the test short.
    config = tmp_path / "prometheus.yml"
    config.write_text(re.sub(r"scrape_interval: \d+s", "scrape_interval: 1s", ray_config.read_text()))
    port = free_port()
    prom = subprocess.Popen([need("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    tag = live_run["tag"]
    try:
        missing = list(SERIES)

        def all_series_there():
            try:
                missing[:] = [s for s in SERIES if not _query(port, f'ray_{s}{{run="{tag}"}}')]
            except urllib.error.HTTPError:
                raise
            except OSError:   # Prometheus still starting
                return False
            return not missing
        assert wait_until(all_series_there, 60), f"no data for {missing}"
        assert live_run["proc"].poll() is None, "the run ended before the check"

        values = {}

        def every_query_answers():
            for expr in dashboard_queries():
                # the tag (qgm-<name>-<hex>) has no regex metacharacters; PromQL strings refuse `\-`
                concrete = expr.replace("$run", tag).replace("$__rate_interval", "30s")
                values[expr] = _query(port, concrete)
            return all(values.values())
        assert wait_until(every_query_answers, 30), [e for e, v in values.items() if not v]
        runs = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/label/run/values?"
                                      + urllib.parse.urlencode({"match[]": "ray_qgm_round"}), timeout=5)
        assert tag in json.loads(runs.read())["data"]   # the dashboard's `run` variable
    finally:
        prom.terminate()
        prom.wait(timeout=30)

"""cluster/*.yaml as written: the setup commands both files share and the head / worker start
commands of cluster/local.yaml, run on this machine, make a Ray cluster that `python main.py`
joins through RAY_ADDRESS.

Adjusted only where one machine shared with other users needs it, and each change is listed
in `adjust`: every port gets a free one (the YAML's fixed ports may be taken here), all nodes
share one dedicated --temp-dir (so the processes started here, and only those, can be found
and stopped), ~ is a temporary HOME, the repository is this checkout, `ray stop` is not run
(Ray 2.60's `ray stop` takes no address or temp dir: it would stop every Ray on the machine),
and --autoscaling-config is dropped (`ray up` writes that file; there is no autoscaler here).
"""
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(name):
    return yaml.safe_load((CLUSTER / name).read_text())


def adjust(cmd: str, temp_dir: str, head_port: int, dashboard_port: int) -> str:
    """A start command of the YAML, made to run here (see the module docstring)."""
    cmd = re.sub(r"\s+--autoscaling-config=\S+", "", cmd)
    cmd = cmd.replace("--port=6379", f"--port={head_port}").replace(":6379", f":{head_port}")
    cmd = re.sub(r"--metrics-export-port=\d+", f"--metrics-export-port={free_port()}", cmd)
    cmd = re.sub(r"--object-manager-port=\d+", f"--object-manager-port={free_port()}", cmd)
    extra = (f" --temp-dir={temp_dir} --dashboard-agent-listen-port={free_port()}"
             f" --dashboard-agent-grpc-port={free_port()} --disable-usage-stats")
    if "--head" in cmd:
        extra += f" --dashboard-port={dashboard_port} --ray-client-server-port={free_port()}"
    return cmd.replace("ray start", f"{shlex.quote(str(Path(sys.executable).parent / 'ray'))} start", 1) + extra


def processes_of(temp_dir: str) -> list[int]:
    """PIDs of the processes whose command line names our dedicated temp dir (the head's and
    the worker's raylet, GCS, agents, Ray workers): what this test started."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline:
            found.append(int(d))
    return found


def stop(temp_dir: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_of(temp_dir)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while processes_of(temp_dir) and time.time() < deadline:
            time.sleep(0.5)
        if not processes_of(temp_dir):
            return


@pytest.mark.long
def test_local_yaml_start_commands_make_a_cluster_main_py_joins(tmp_path):
    local, aws = load("local.yaml"), load("aws.yaml")
    shared = [c for c in local["setup_commands"] if c in aws["setup_commands"]]
    assert shared, "the setup commands both files share"
    home = tmp_path / "home"
    (home / "qgm-ray").parent.mkdir(parents=True)
    os.symlink(ROOT, home / "qgm-ray")
    # A fresh shell on a node: no RAY_ADDRESS, and no RAY_AUTH_MODE that an in-process Ray of the
    # test session exported (with it `ray start` wants a token under the fake HOME).
    env = {**{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}, "HOME": str(home),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for cmd in shared:
        # pip: resolve against what is installed (no index, nothing downloaded or changed)
        cmd = cmd.replace("python3 -m pip install", f"{sys.executable} -m pip install --dry-run --no-index")
        p = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, (cmd, p.stdout[-2000:], p.stderr[-2000:])
    assert "qgm-ray" in (home / ".bashrc").read_text()

    temp_dir = tempfile.mkdtemp(prefix="qgmcl", dir="/tmp")   # short: Ray's socket paths must fit
    head_port, dashboard_port = free_port(), free_port()
    try:
        for role in ("head_start_ray_commands", "worker_start_ray_commands"):
            for cmd in local[role]:
                if cmd.strip() == "ray stop":
                    continue
                cmd = adjust(cmd, temp_dir, head_port, dashboard_port)
                p = subprocess.run(["bash", "-c", cmd], env={**env, "RAY_HEAD_IP": "127.0.0.1"},
                                   capture_output=True, text=True, timeout=180)
                assert p.returncode == 0, (role, cmd, p.stdout[-2000:], p.stderr[-2000:])
        run_dir = tmp_path / "run"
        p = subprocess.run(
            [sys.executable, "main.py", "--quiet", "--output-dir", str(run_dir), "--set", "backend=ray",
             "--set", "data.name=synthetic", "--set", "model.name=mlp", "--set", "model.options={hidden: [8]}",
             "--set", "topology.n_clients=4", "--set", "ray.clients_per_actor=1", "--set", "schedule.epochs=0.5",
             "--set", "data.batch_size=32"],
            env={**env, "HOME": os.environ.get("HOME", str(home)), "RAY_ADDRESS": f"127.0.0.1:{head_port}"},
            cwd=ROOT, capture_output=True, text=True, timeout=300)
        out = p.stdout + p.stderr
        assert p.returncode == 0, out[-3000:]
        assert f"joined the Ray cluster at 127.0.0.1:{head_port}" in out
        assert re.search(r"clients per node \(2 node\(s\)", out), out[-3000:]   # head and worker
        assert (run_dir / "summary.json").is_file()

        # The same run as a Ray job (README: Jobs). The job's driver runs on the head, in a
        # copy of the working dir; --output-dir puts the outputs where they outlive the job.
        job_dir = tmp_path / "job_run"
        p = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address",
             f"http://127.0.0.1:{dashboard_port}", "--working-dir", ".", "--", "python", "main.py", "--quiet",
             "--output-dir", str(job_dir), "--set", "backend=ray", "--set", "data.name=synthetic",
             "--set", "model.name=mlp", "--set", "model.options={hidden: [8]}", "--set", "topology.n_clients=4",
             "--set", "ray.clients_per_actor=1", "--set", "schedule.epochs=0.5", "--set", "data.batch_size=32"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        out = p.stdout + p.stderr
        assert p.returncode == 0 and "succeeded" in out, out[-3000:]
        assert "joined the Ray cluster" in out and json.loads((job_dir / "summary.json").read_text())["status"] == "completed"
    finally:
        stop(temp_dir)
        left = processes_of(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert left == []


LISTENERS = r"""
import json, os, re, sys, time
import ray
from qgm_ray.config import load_config
from qgm_ray.engine.ray_setup import connect
connect(load_config(None, ["backend=ray", "ray.num_cpus=1"]), lambda m: None)
time.sleep(5)   # the dashboard agent and metrics endpoint start after ray.init returns

def tree(root):
    parent = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent[int(d)] = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    out, todo = {root}, [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in out]
        out.update(kids)
        todo += kids
    return out

inodes = {}
for pid in tree(os.getpid()):
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            m = re.match(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
            if m:
                inodes[m.group(1)] = open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        pass
found = []
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and f[9] in inodes:   # 0A: LISTEN
            found.append([f[1].split(":")[0], int(f[1].split(":")[1], 16), inodes[f[9]]])
print(json.dumps({"node_ip": ray.nodes()[0]["NodeManagerAddress"], "listen": found}))
ray.shutdown()
"""
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def test_a_local_ray_started_by_main_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    p = subprocess.run([sys.executable, "-c", LISTENERS], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["node_ip"] == "127.0.0.1"
    assert len(r["listen"]) >= 5   # GCS, raylet, dashboard, its agent, the metrics endpoint, ...
    assert [x for x in r["listen"] if x[0] not in LOOPBACK] == [], r["listen"]

"""Cluster configuration and the checks that run before Ray starts (no Ray instance needed)."""
import copy
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qgm_ray.config import load_config
from qgm_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: nobody listens there


def test_unreachable_ray_address_fails_fast_with_one_line():
    from qgm_ray.engine.ray_setup import probe_address
    port = _closed_port()
    t0 = time.time()
    with pytest.raises(ConfigError, match=rf"ray.address='127.0.0.1:{port}': cannot reach a Ray head"):
        probe_address(f"127.0.0.1:{port}")
    assert time.time() - t0 < 5
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        probe_address("head:notaport")


def test_main_reports_unreachable_address_before_writing_anything(tmp_path):
    port = _closed_port()
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "main.py", "--quiet", "--output-dir", str(out),
                        "--set", "backend=ray", "--set", f"ray.address=127.0.0.1:{port}",
                        "--set", "data.name=synthetic", "--set", "model.name=mlp", "--set", "topology.n_clients=4"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("config error")]
    assert len(errors) == 1 and "cannot reach a Ray head" in errors[0], p.stderr
    assert not out.exists()


def test_gpu_share_rules():
    from qgm_ray.engine.ray_setup import gpus_per_client, resolve_clients_per_actor
    assert gpus_per_client(load_config(None, []), 16, 0.0) == 0.0            # auto, no GPU: CPU
    cfg = resolve_clients_per_actor(load_config(None, []), 3, {"CPU": 8.0, "GPU": 4.0})
    assert gpus_per_client(cfg, 3, 4.0) == 1.0                               # auto: one GPU per actor at most
    assert gpus_per_client(load_config(None, ["ray.gpus_per_client=0.25"]), 16, 0.0) == 0.25


@pytest.mark.parametrize("n,k,gpus", [(16, 1, 16), (16, 1, 8), (16, 2, 8), (32, 1, 16), (15, 4, 4), (16, 3, 4),
                                      (16, 1, 3), (5, 1, 0.5)])
def test_auto_gpu_shares_place_every_actor_on_one_gpu(n, k, gpus):
    """Place the actors as Ray does (fill a GPU before the next) and check that every actor is
    placed and none spans GPUs."""
    from qgm_ray.engine.ray_setup import gpus_per_client
    cfg = load_config(None, [f"topology.n_clients={n}", f"ray.clients_per_actor={k}"])
    actor = gpus_per_client(cfg, n, gpus) * k
    assert 0 < actor <= 1
    free = [min(1.0, gpus - i) for i in range(math.ceil(gpus))]
    for _ in range(math.ceil(n / k)):
        slot = next(i for i, f in enumerate(free) if f >= actor - 1e-12)
        free[slot] -= actor


@pytest.mark.parametrize("n,cpus,gpus,share,k", [
    (16, 2, 0, "auto", 8),      # CPU: one actor per core
    (16, 64, 0, "auto", 1),     # more cores than clients: one actor per client
    (15, 4, 0, "auto", 4),      # rounded up: 4 actors, the last with 3 clients
    (16, 8, 4, "auto", 4),      # GPUs: one actor per GPU
    (16, 8, 0.5, "auto", 2),    # half a GPU in the cluster is no GPU for auto
    (16, 8, 4, 0.25, 4),        # explicit fraction: 1/0.25 clients fill a GPU
    (16, 8, 4, 2.0, 1),         # 2 GPUs per client: one client per actor
])
def test_clients_per_actor_auto(n, cpus, gpus, share, k):
    from qgm_ray.engine.ray_setup import auto_clients_per_actor, resolve_clients_per_actor
    assert auto_clients_per_actor(n, cpus, gpus, share) == k
    cfg = load_config(None, [f"topology.n_clients={n}", f"ray.gpus_per_client={share}"])
    assert cfg.ray.clients_per_actor == "auto"
    assert resolve_clients_per_actor(cfg, n, {"CPU": cpus, "GPU": gpus}).ray.clients_per_actor == k
    fixed = load_config(None, [f"topology.n_clients={n}", "ray.clients_per_actor=3"])
    assert resolve_clients_per_actor(fixed, n, {"CPU": cpus, "GPU": gpus}) is fixed


@pytest.mark.parametrize("name", ["aws.yaml", "local.yaml"])
def test_cluster_yaml_passes_rays_schema_validator(name):
    from ray.autoscaler._private.util import prepare_config, validate_config
    raw = yaml.safe_load((ROOT / "cluster" / name).read_text())
    validate_config(prepare_config(copy.deepcopy(raw)))
    bad = copy.deepcopy(raw)
    bad["not_a_ray_key"] = 1
    import jsonschema
    with pytest.raises(jsonschema.ValidationError, match="not_a_ray_key"):   # strict: it catches a typo
        validate_config(prepare_config(bad))


def test_aws_yaml_shape_and_security():
    cfg = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    assert "GPU" not in head.get("resources", {}) and not head["node_config"]["InstanceType"].startswith(("g", "p"))
    (gpu,) = workers.values()
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))  # a GPU instance family
    setup = " ".join(cfg["setup_commands"])
    assert "requirements.txt" in setup and "qgm-ray" in setup
    assert any("qgm-ray" in k for k in cfg["file_mounts"])
    # Nothing opens the dashboard / GCS / metrics ports to the internet.
    sg = cfg["provider"].get("security_group", {})
    for perm in sg.get("IpPermissions", []):
        opened = any(r.get("CidrIp") == "0.0.0.0/0" for r in perm.get("IpRanges", []))
        assert not (opened and perm.get("ToPort") != 22), perm
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start


def _silent_server():
    """A TCP port that accepts connections and never answers: not a Ray GCS."""
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    held = []
    threading.Thread(target=lambda: [held.append(srv.accept()) for _ in iter(int, 1)], daemon=True).start()
    return srv


def test_an_open_port_that_is_not_a_ray_gcs_fails_within_10s_with_one_line():
    from qgm_ray.engine.ray_setup import probe_address
    srv = _silent_server()
    port = srv.getsockname()[1]
    t0 = time.time()
    with pytest.raises(ConfigError, match=rf"ray.address='127.0.0.1:{port}': 127.0.0.1:{port} answers but is not "
                                          r"a Ray cluster's GCS") as e:
        probe_address(f"127.0.0.1:{port}")
    assert time.time() - t0 < 10 and "\n" not in str(e.value)
    srv.close()


def test_a_ray_client_address_that_is_no_ray_client_server_fails_within_10s_with_one_line():
    """ray:// to a port that never answers, or to an HTTP server: ray.init retried for 35 s."""
    import http.server
    import threading

    from qgm_ray.engine.ray_setup import probe_address
    silent = _silent_server()
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        for port in (silent.getsockname()[1], httpd.server_address[1]):
            t0 = time.time()
            with pytest.raises(ConfigError, match=rf"ray.address='ray://127.0.0.1:{port}': 127.0.0.1:{port} answers "
                                                  r"but is not a Ray Client server") as e:
                probe_address(f"ray://127.0.0.1:{port}")
            assert time.time() - t0 < 10 and "\n" not in str(e.value)
    finally:
        silent.close()
        httpd.shutdown()


def test_main_with_an_address_that_is_not_ray_is_one_line_before_rays_retries_end(tmp_path):
    srv = _silent_server()
    out = tmp_path / "run"
    t0 = time.time()
    p = subprocess.run([sys.executable, "main.py", "--quiet", "--output-dir", str(out),
                        "--set", "backend=ray", "--set", f"ray.address=127.0.0.1:{srv.getsockname()[1]}",
                        "--set", "data.name=synthetic", "--set", "model.name=mlp", "--set", "topology.n_clients=4"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    took = time.time() - t0
    srv.close()
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not a Ray cluster's GCS" in lines[0], p.stderr
    # The probe's own bound is checked in-process above; the whole command adds a Python start and
    # imports, which a loaded 2-core CI machine can stretch past 10 s. What this bound tells apart:
    # an answer, against ray.init retrying the address for a minute or more.
    assert took < 45, took
    assert not out.exists()


@pytest.mark.ray
def test_a_live_ray_gcs_passes_the_probe(ray_session):
    import ray

    from qgm_ray.engine.ray_setup import probe_address
    probe_address(ray.get_runtime_context().gcs_address)


# ---------------------------------------------------------------- console (issue 18)

def test_the_console_switch_gives_back_rays_own_printer(monkeypatch):
    from qgm_ray import ray_private
    from qgm_ray.engine import ray_setup
    ray_worker = ray_private.get(ray_private.WORKER)
    original = getattr(ray_worker.print_to_stdstream, "_qgm_original", ray_worker.print_to_stdstream)
    try:
        monkeypatch.delenv(ray_setup.CONSOLE_ENV, raising=False)
        ray_setup.route_ray_console(print)
        assert ray_worker.print_to_stdstream is not original
        assert ray_worker.print_to_stdstream._qgm_original is original   # routing twice keeps Ray's
        monkeypatch.setenv(ray_setup.CONSOLE_ENV, "1")
        ray_setup.route_ray_console(print)
        assert ray_worker.print_to_stdstream is original
    finally:
        ray_worker.print_to_stdstream = original


@pytest.mark.ray
@pytest.mark.slow
def test_a_worker_death_is_one_line_of_ours_and_rays_message_goes_to_its_logs(tmp_path):
    """issue 18: every actor death printed a ~900-character `(raylet) A worker died ...` line."""
    import os
    import re
    import signal

    from bench import procs   # the driver's descendants and their command lines, as the benchmarks read them

    cfg = tmp_path / "run.yaml"
    # The actor is killed once the first evaluation is written: 5 of the 6 epochs still to run.
    cfg.write_text("name: death\nbackend: ray\nprogress: false\n"
                   f"data: {{name: synthetic, batch_size: 16, alpha: 1.0, root: {tmp_path / 'data'}}}\n"
                   "model: {name: mlp, options: {hidden: [16]}}\ntopology: {name: ring, n_clients: 4}\n"
                   "algorithm: {name: dsgd, lr: 0.05}\nschedule: {epochs: 6}\n"
                   "eval: {every_epochs: 1, local_models: false}\nray: {clients_per_actor: 2}\n")
    env = {k: v for k, v in os.environ.items() if k != "QGM_RAY_CONSOLE"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--config", str(cfg), "--output-dir",
                             str(tmp_path / "run")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**env, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("run directory"):
            break

    t0 = time.time()
    while not (tmp_path / "run" / "metrics.csv").exists():   # training, past the first checkpoint
        assert proc.poll() is None and time.time() - t0 < 120
        time.sleep(0.05)
    actor = next(pid for pid in procs.descendants(proc.pid) if "ClientActor" in procs.cmdline(pid))
    os.kill(actor, signal.SIGKILL)
    output = "".join(lines) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-3000:]
    assert "recovered from" in output   # the run's own account of the death
    assert "(raylet)" not in output, output[-3000:]
    ours = [line for line in output.splitlines() if "A worker died" in line]
    assert len(ours) == 1 and ours[0].startswith("ray: ") and len(ours[0]) < 300, ours
    log = re.search(r"Ray's messages: (\S+);", ours[0]).group(1)
    assert "A worker died" in open(log).read()


# ---------------------------------------------------------------- resources per actor (issue 17)

@pytest.mark.parametrize("n,cpus,extra,k,actors,cpu", [
    (16, 2, [], 8, 2, 1.0),                                  # the default run: 2 actors of 1 core
    (32, 2, [], 16, 2, 1.0),                                 # was refused (0.125 CPU per client)
    (16384, 2, [], 8192, 2, 1.0),
    (64, 4, [], 16, 4, 1.0),
    (4, 2, ["ray.clients_per_actor=1"], 1, 4, 0.5),          # more actors than cores: 2 share each
    (64, 2, ["ray.clients_per_actor=1"], 1, 64, 0.25),       # at most 4 a core: does not fit (below)
    (7, 5, ["ray.clients_per_actor=1"], 1, 7, 0.5),          # 1/ceil(7/5), not 5/7: packs node by node
    (16, 2, ["compute.torch_threads=2"], 8, 2, 1.0),             # 2 actors x 2 threads on 2 cores: shared
    (16, 8, ["compute.torch_threads=2"], 2, 8, 1.0),
    (16, 16, ["compute.torch_threads=2"], 1, 16, 1.0),
    (16, 64, ["compute.torch_threads=2"], 1, 16, 2.0),
    (4, 2, ["ray.clients_per_actor=1", "ray.cpus_per_actor=1"], 1, 4, 1.0),    # explicit: as given
    (8, 2, ["ray.clients_per_actor=4", "ray.cpus_per_client=0.25"], 4, 2, 1.0),  # per-client accounting
])
def test_actor_resources(n, cpus, extra, k, actors, cpu):
    from qgm_ray.engine.ray_setup import actor_resources
    cfg = load_config(None, [f"topology.n_clients={n}"] + extra)
    plan = actor_resources(cfg, n, {"CPU": float(cpus)})
    assert (plan["k"], plan["actors"], plan["num_cpus"], plan["num_gpus"]) == (k, actors, cpu, 0.0)


def test_auto_actor_cpus_pack_on_every_node():
    """Whole-CPU nodes take every actor at the auto share (Ray places an actor on one node)."""
    from qgm_ray.layout import actor_cpus
    cfg = load_config(None, ["ray.clients_per_actor=1"])
    for nodes in ([3, 2], [1, 1, 1], [4], [2, 2, 3], [1, 7]):
        for n_actors in range(1, 40):
            share = actor_cpus(cfg, 1, n_actors, float(sum(nodes)))
            assert share <= 1.0
            if n_actors <= 4 * sum(nodes):   # beyond 4 actors a core the plan is refused, not packed
                assert sum(math.floor(c / share + 1e-9) for c in nodes) >= n_actors


def test_tune_trial_bundles_fit_the_cluster_by_default():
    """A Ray-backend trial keeps half a CPU for its own process; its actors share the rest."""
    from qgm_ray.tune import trial_bundles
    for n in (4, 16, 32, 1024):
        cfg = load_config(None, ["backend=ray", f"topology.n_clients={n}"])
        bundles = trial_bundles(cfg, {"CPU": 2.0})
        assert sum(b["CPU"] for b in bundles) <= 2.0, bundles
        assert len(bundles) == 1 + min(n, 2)


def test_plan_resources_names_what_is_missing(monkeypatch):
    import ray

    from qgm_ray.engine.ray_setup import plan_resources
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "memory": 2**30})
    got = plan_resources(load_config(None, ["topology.n_clients=32"]), 32, True, lambda m: None)
    assert got == {"num_cpus": 1.0, "num_gpus": 0.0}
    # a Tune trial's process holds 0.5 of the 2 CPUs: the 2 actors share 1 (rounded to 1/m of a core)
    got = plan_resources(load_config(None, ["topology.n_clients=32"]), 32, True, lambda m: None, reserved_cpus=0.5)
    assert got == {"num_cpus": 0.5, "num_gpus": 0.0}
    cfg = load_config(None, ["topology.n_clients=64", "ray.clients_per_actor=1"])   # 64 torch processes: no
    with pytest.raises(ConfigError, match=r"64 clients in 64 ClientActor\(s\) of 1 need 16 CPU .*ray.cpus_per_actor=auto"):
        plan_resources(cfg, 64, True, lambda m: None)
    cfg = load_config(None, ["topology.n_clients=4", "ray.clients_per_actor=1", "ray.cpus_per_actor=1"])
    with pytest.raises(ConfigError, match=r"4 clients in 4 ClientActor\(s\) of 1 need 4 CPU .*ray.cpus_per_actor=1"):
        plan_resources(cfg, 4, True, lambda m: None)


def test_cpus_per_actor_and_per_client_are_exclusive():
    with pytest.raises(ConfigError, match="set only one"):
        load_config(None, ["ray.cpus_per_actor=1", "ray.cpus_per_client=0.5"])
    with pytest.raises(ConfigError, match="ray.cpus_per_actor must be 'auto' or a number > 0"):
        load_config(None, ["ray.cpus_per_actor=0"])

"""Starting or joining Ray, and sizing the actors: every check here runs before an actor starts.

GPUs. `ray.gpus_per_client` is the fraction of a GPU each client asks Ray for; an actor of k
clients asks for k times that. Fractions pack several clients on one GPU (Ray places actors
so that the fractions on a GPU sum to at most 1) but they are scheduling bookkeeping only:
Ray does not cap a process's GPU memory, so clients sharing a GPU must fit in its memory
together (lower `ray.gpus_per_client`'s denominator, i.e. use more GPUs, if they do not).
`auto` spreads the actors evenly over the cluster's G GPUs (never more than one GPU per actor)
and uses the CPU when there is no GPU (the averaged model is evaluated inside the first
ClientActor, on its GPU: nothing else asks for one). On an autoscaling cluster whose GPU workers start at zero,
`auto` sees no GPU: set the fraction explicitly and the autoscaler adds GPU nodes.

Actors. `ray.clients_per_actor: auto` gives one ClientActor per GPU when the clients get GPUs
and one per CPU core otherwise: on CPU, more actors than cores buy no parallelism, and each
costs a torch process's memory and slows the rounds (docs/results/bench). Each actor
asks Ray for the cores its block's threads use (`ray.cpus_per_actor`, auto: compute.torch_threads)
whatever its k, so any client count fits any cluster by default (`actor_resources`).
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from typing import Callable, Optional

from qgm_ray import errors, ray_private
from qgm_ray.config import Config
from qgm_ray.engine.placement import actors_fit
from qgm_ray.errors import ConfigError
from qgm_ray.layout import actor_cpus, auto_clients_per_actor, with_clients_per_block  # noqa: F401 - re-exported

CONNECT_TIMEOUT_S = 3.0


def ray_address(cfg: Config) -> Optional[str]:
    return cfg.ray.address or os.environ.get("RAY_ADDRESS") or None


def probe_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in seconds on an address nobody answers (ray.init would retry for a minute)."""
    if address == "local":
        return
    if address == "auto":
        # `auto` joins the cluster Ray's address file records (the last `ray start`); once that
        # cluster has died the file still names it and ray.init retries it for minutes.
        find_bootstrap_address = ray_private.optional(ray_private.FIND_BOOTSTRAP_ADDRESS)
        if find_bootstrap_address is None:   # let ray.init decide
            return
        try:
            recorded = find_bootstrap_address(None)
        except Exception:  # noqa: BLE001 - an unreadable address file: let ray.init decide
            return
        if recorded:
            try:
                probe_address(recorded, timeout)
            except ConfigError as e:
                raise ConfigError(f"ray.address='auto' names the cluster of the last `ray start` on this "
                                  f"machine, {recorded}, which is not running "
                                  f"({str(e).split(': ', 1)[-1].split(';')[0]}); start it again, give its "
                                  f"address, or unset ray.address and RAY_ADDRESS to run on a local Ray") from None
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host:
        host, port = hostport, "6379"
    try:
        port_num = int(port)
    except ValueError:
        raise ConfigError(f"ray.address={address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379 or ray://head:10001)") from None
    try:
        with socket.create_connection((host, port_num), timeout=timeout):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(f"ray.address={address!r}: cannot reach a Ray head at {host}:{port_num} ({reason}); "
                          f"start one with `ray start --head`, fix the address, or unset ray.address and "
                          f"RAY_ADDRESS to run on a local Ray") from None
    if address.startswith("ray://"):  # ray:// is the Ray Client server, not the GCS
        _probe_ray_client(address, host, port_num, timeout)
    else:
        _probe_gcs(address, host, port_num, timeout)


def _probe_gcs(address: str, host: str, port: int, timeout: float) -> None:
    """Something listens there; is it a Ray GCS? ray.init would retry a port that is not one
    for minutes. One GCS call with a deadline: any answer of the GCS service counts (with
    RAY_AUTH_MODE=token an unauthenticated call is refused, which still proves it is one)."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return  # a TLS cluster needs the certificates Ray reads itself; keep the TCP check only
    try:
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # Ray moved its generated code: the TCP check above has to do
        return
    refused = _grpc_refusal(host, port, lambda channel: gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
                            .GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout))
    if refused:
        raise ConfigError(f"ray.address={address!r}: {host}:{port} answers but is not a Ray cluster's GCS "
                          f"({refused}); use the head's GCS address (`ray status` on the head, default port "
                          f"6379), or unset ray.address and RAY_ADDRESS to run on a local Ray")


def _probe_ray_client(address: str, host: str, port: int, timeout: float) -> None:
    """Something listens at a ray:// address; is it a Ray Client server? ray.init retries
    anything else for a long while and then prints lines of gRPC (docs/results/processes). One
    PING with a deadline."""
    try:
        from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc
    except ImportError:  # Ray moved its generated code: the TCP check has to do
        return
    refused = _grpc_refusal(host, port, lambda channel: ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(
        ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING), timeout=timeout))
    if refused:
        raise ConfigError(f"ray.address={address!r}: {host}:{port} answers but is not a Ray Client server "
                          f"({refused}); use ray://HEAD:10001 (`ray start --head` starts one there), a GCS "
                          f"address HOST:6379, or unset ray.address and RAY_ADDRESS to run on a local Ray")


def _grpc_refusal(host: str, port: int, call) -> Optional[str]:
    """Make one gRPC `call(channel)` there. None if the service answered (a refusal for want of
    Ray's auth token counts: only that service knows to ask), else the gRPC status code's name."""
    import grpc
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        call(channel)
        return None
    except grpc.RpcError as e:
        code = e.code()
        return None if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) else code.name
    finally:
        channel.close()


# Ray's own switch for a single-machine Ray (its default on macOS / Windows): the node's IP
# is 127.0.0.1, so GCS, raylet, object manager, workers, the dashboard agent and the metrics
# endpoint all listen on loopback instead of every interface. ray.init maps an explicit
# _node_ip_address="127.0.0.1" back to the machine's IP, so this is the way Ray allows.
_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_only():
    """While starting a local Ray: every Ray process of it listens on 127.0.0.1 only."""
    ray_constants = ray_private.optional(ray_private.RAY_CONSTANTS)
    if ray_constants is None:   # a Ray without the switch: it binds where it binds
        yield
        return
    old_env, old = os.environ.get(_SINGLE_MACHINE_ENV), getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_SINGLE_MACHINE_ENV] = "0"      # the processes Ray starts read the variable
    ray_constants.ENABLE_RAY_CLUSTER = False   # this process read it at import
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop(_SINGLE_MACHINE_ENV, None)
        else:
            os.environ[_SINGLE_MACHINE_ENV] = old_env
        if old is not None:
            ray_constants.ENABLE_RAY_CLUSTER = old


def ray_temp_root() -> tuple[str, str]:
    """(the variable that sets it, the directory) under which a local Ray makes its `ray/`
    session tree: $RAY_TMPDIR, else $TMPDIR, else /tmp (Ray's get_default_system_temp_dir)."""
    for var in ("RAY_TMPDIR", "TMPDIR"):
        if os.environ.get(var):
            return var, os.environ[var]
    return "RAY_TMPDIR", "/tmp"


def _token_dir() -> Optional[str]:
    """~/.ray, where a new local Ray writes its authentication token, when it will: token mode
    is on (Ray's default) and no token is given or there already."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    path = os.path.join(os.path.expanduser("~"), ".ray")
    return None if os.path.isfile(os.path.join(path, "auth_token")) else path


def check_environment() -> None:
    """Before a local Ray starts: the places it writes can be written. Either one failing is an
    OSError traceback from inside ray.init; checked here, it is one line naming the variable to
    change."""
    from qgm_ray.outputs import writable_problem

    var, root = ray_temp_root()
    places = [(os.path.join(root, "ray"), var, f"set {var} to a writable directory")]
    token = _token_dir()
    if token is not None:
        places.append((token, "HOME", "set HOME to a writable directory, or name a token file in "
                                      "RAY_AUTH_TOKEN_PATH"))
    for path, source, fix in places:
        why = writable_problem(path)
        if why:
            raise ConfigError(f"backend=ray: a local Ray writes to {path} (from ${source}), but {why}; {fix}")


def connect(cfg: Config, log: Callable[[str], None], runtime_env: Optional[dict] = None) -> bool:
    """Join the configured cluster or start a local Ray sized to this machine.
    Returns True when this call started Ray (and the engine should shut it down).
    `runtime_env`: the job's (a sweep ships plug-in code to every trial with it)."""
    import ray

    env = {"runtime_env": runtime_env} if runtime_env else {}
    if ray.is_initialized():  # a test session, a Tune trial, a notebook: use what is there
        return False
    address = ray_address(cfg)
    route_ray_console(log)
    if address:
        probe_address(address)
        try:
            with keep_signal_handlers():
                ctx = ray.init(address=address, logging_level="WARNING", **env)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"ray.address={address!r}: could not join the Ray cluster: "
                              f"{errors.first_line(e)}") from None
        where = f"joined the Ray cluster at {address}"
    else:
        # address="local": a fresh Ray of our own, never a `ray start` cluster that Ray's
        # address file still names (a dead one there made ray.init fail on num_cpus).
        check_environment()
        start_reaper()
        from qgm_ray.signals import shielded_children
        with loopback_only(), keep_signal_handlers(), _quiet_token_notice(), shielded_children():
            ctx = start_local_ray(cfg, log, **env)
        tell_reaper_session()
        where = "started a local Ray"
    url = getattr(ctx, "dashboard_url", None)
    gcs = ray.get_runtime_context().gcs_address   # what another process passes to ray.init(address=...)
    off = not address and not cfg.ray.dashboard
    log(f"ray: {where} (address {gcs}); dashboard: " + (dashboard_access(url) if url else
                                                        "off (ray.dashboard: false)" if off else
                                                        "not running (needs ray[default])"))
    return not address


def start_local_ray(cfg: Config, log: Callable[[str], None], runtime_env: Optional[dict] = None):
    """A local Ray with the dashboard (unless ray.dashboard is false), or without it where its
    packages are missing (a minimal `pip install ray`, as on some GPU machines): a log line,
    not a crash."""
    import ray

    kwargs = dict(address="local", num_cpus=cfg.ray.num_cpus or os.cpu_count(), logging_level="WARNING")
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    if not cfg.ray.dashboard:
        return ray.init(include_dashboard=False, **kwargs)
    try:
        return ray.init(include_dashboard=True, dashboard_host=cfg.ray.dashboard_host, **kwargs)
    except Exception as e:  # noqa: BLE001 - Ray raises several kinds here; the retry tells
        if ray.is_initialized():
            ray.shutdown()
        log(f"ray: the dashboard could not start ({errors.first_line(e)}); starting Ray without it "
            f"(pip install 'ray[default]' for the dashboard)")
        return ray.init(include_dashboard=False, **kwargs)


# ---------------------------------------------------------------- signals, processes, console

@contextlib.contextmanager
def keep_signal_handlers():
    """ray.init replaces the SIGTERM handler with `sys.exit(15)` (a silent exit 15 when SIGTERM
    lands while Ray starts): keep ours (qgm_ray.signals) in place."""
    original = ray_private.optional(ray_private.SET_SIGTERM_HANDLER)
    if original is None:   # Ray moved it: the run's StopSignals.reinstall() still helps
        yield
        return
    ray_utils = ray_private.module_of(ray_private.SET_SIGTERM_HANDLER)
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = original


_REAPER = {"proc": None}


def start_reaper() -> None:
    """A watchdog (engine/reaper.py) that ends the Ray processes this process starts when it
    dies, however it dies (SIGKILL, a second Ctrl-C, os._exit): Ray's fate-sharing alone leaves
    its agents alive for many seconds. Linux only (it reads /proc)."""
    import subprocess
    import sys

    proc = _REAPER["proc"]
    if proc is not None and proc.poll() is None:
        return
    if not os.path.isdir("/proc/self"):
        return
    from qgm_ray.engine import reaper
    # A session of its own: a Ctrl-C to the terminal's process group does not reach it, and it
    # outlives this process by design. The pipe's other end is not inherited by Ray's children
    # (Python's pipes are close-on-exec), so its EOF means this process is gone.
    tag = f"{os.getpid()}-{time.time_ns()}"
    _REAPER["proc"] = subprocess.Popen([sys.executable, "-I", "-S", reaper.__file__, str(os.getpid()), tag],
                                       stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
    os.environ[reaper.TAG_ENV] = tag   # inherited by every Ray process started from now on


def tell_reaper_session() -> None:
    """Every Ray daemon names its session directory in its command line: hand it to the reaper."""
    proc = _REAPER["proc"]
    if proc is None or proc.poll() is not None:
        return
    ray_worker = ray_private.optional(ray_private.WORKER)
    if ray_worker is None:   # the reaper still follows the children
        return
    try:
        session = ray_worker._global_node.get_session_dir_path()
        proc.stdin.write(f"session {session}\n".encode())
        proc.stdin.flush()
    except Exception:  # noqa: BLE001 - no node (Ray shut down) or a closed pipe: the reaper still follows the children
        pass


@contextlib.contextmanager
def _quiet_token_notice():
    """Ray 2.60 turns token authentication on for the local clusters it starts and says so in a
    WARNING line; our dashboard line says it too, with where the token is."""
    import logging
    notice = logging.getLogger(ray_private.TOKEN_NOTICE_LOGGER)
    level = notice.level
    notice.setLevel(logging.ERROR)
    try:
        yield
    finally:
        notice.setLevel(level)


def dashboard_access(url: str) -> str:
    """The dashboard's URL and, with Ray's token authentication on, where its token is: the
    page asks for it ("Authentication Token Required") and keeps it in a cookie."""
    link = url if url.startswith("http") else f"http://{url}"
    is_token_auth_enabled = ray_private.optional(ray_private.IS_TOKEN_AUTH_ENABLED)
    if is_token_auth_enabled is None or not is_token_auth_enabled():
        return link
    if os.environ.get("RAY_AUTH_TOKEN"):
        where = "the RAY_AUTH_TOKEN environment variable"
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        where = os.environ["RAY_AUTH_TOKEN_PATH"]
    else:
        where = "~/.ray/auth_token"
    return f"{link} (sign in with the token in {where}; `ray get-auth-token` prints it)"


CONSOLE_ENV = "QGM_RAY_CONSOLE"
CONSOLE_LOG = "qgm_ray_console.log"


def ray_console_shown() -> bool:
    return os.environ.get(CONSOLE_ENV, "").lower() in ("1", "true", "yes")


def route_ray_console(log: Callable[[str], None]) -> None:
    """Ray prints its workers' output and its own messages (a worker's death: a ~900-character
    `(raylet) A worker died ...`; a lost node: 40 and more lines) on the driver's console. Send
    them to a file in the Ray session's log directory instead, with one line of ours the first
    time; QGM_RAY_CONSOLE=1 shows them as Ray prints them. Call before ray.init: Ray binds the
    printer when it connects."""
    ray_worker = ray_private.optional(ray_private.WORKER)
    if ray_worker is None:   # Ray's console stays as Ray prints it
        return
    original = getattr(ray_worker.print_to_stdstream, "_qgm_original", ray_worker.print_to_stdstream)
    if ray_console_shown():
        ray_worker.print_to_stdstream = original
        return
    state = {"told": False}

    def to_file(data, ignore_prefix: bool):
        try:
            path = os.path.join(ray_worker._global_node.get_logs_dir_path(), CONSOLE_LOG)
            with open(path, "a") as f:
                for line in data.get("lines", []):
                    f.write(f"({data.get('actor_name') or data.get('task_name') or data.get('pid')}) {line}\n")
        except Exception:  # noqa: BLE001 - no session (shutting down): show it rather than lose it
            return original(data, ignore_prefix)
        # One line of ours for what a user would want to know of (a worker's death, an error
        # output); the autoscaler's INFO lines and the like go to the file silently.
        if not state["told"] and (data.get("pid") == "raylet" or data.get("is_err")):
            state["told"] = True
            first = next((ln for ln in data.get("lines", []) if ln.strip()), "").strip()
            log(f"ray: {first[:70]}{'...' if len(first) > 70 else ''} (Ray's messages: {path}; "
                f"{CONSOLE_ENV}=1 prints them here)")

    to_file._qgm_original = original
    ray_worker.print_to_stdstream = to_file


def describe_resources(res: dict) -> str:
    shown = {k: v for k, v in res.items() if not k.startswith("node:") and "memory" not in k}
    mem = res.get("memory", 0) / 2**30
    return ", ".join(f"{k}: {v:g}" for k, v in sorted(shown.items())) + f", memory: {mem:.1f} GiB"


def cluster_autoscales() -> bool:
    """Whether a Ray autoscaler with real node types manages this cluster (it would add nodes
    for actors waiting for resources). Every Ray head runs a monitor; on a cluster started
    without an autoscaling config (`ray.init()`, `ray start --head`) it uses a read-only
    provider whose node types are named after node ids ("node_<hex>")."""
    try:
        import json

        from ray.experimental.internal_kv import _internal_kv_get
        ray_constants = ray_private.optional(ray_private.RAY_CONSTANTS)
        if ray_constants is None:
            return False
        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)   # autoscaler v1
        if raw is not None:
            report = json.loads(raw).get("autoscaler_report") or {}
            types = (report.get("node_type_mapping") or {}).values()
            return any(not str(t).startswith("node_") for t in types)
        from ray.autoscaler.v2.utils import is_autoscaler_v2
        return bool(is_autoscaler_v2(fetch_from_server=True))          # v2: KubeRay, ray up
    except Exception:  # noqa: BLE001 - no autoscaler, or an API that moved: be strict
        return False


def reserved_clients(n: int, k: int) -> int:
    """Every ClientActor reserves GPU room for k clients, also when it holds fewer (the last
    one, or after a resize), so it can take joiners without outgrowing its reservation."""
    return math.ceil(n / k) * k


# What a Tune trial's own process reserves (qgm_ray/tune/resources.py: the first bundle of a trial); its
# engine's actors share the rest of the cluster (actor_resources).
TRIAL_PROCESS_CPUS = 0.5


def resolve_clients_per_actor(cfg: Config, n_max: int, cluster: dict) -> Config:
    """`cfg` with a number for ray.clients_per_actor (auto resolved for this cluster's resources
    by qgm_ray.layout, which the local engine reads too)."""
    if cfg.ray.clients_per_actor != "auto":
        return cfg
    return with_clients_per_block(cfg, auto_clients_per_actor(n_max, cluster.get("CPU", 1.0),
                                                              cluster.get("GPU", 0.0), cfg.ray.gpus_per_client))


def actor_resources(cfg: Config, n_max: int, cluster: dict, reserved_cpus: float = 0.0) -> dict:
    """What each ClientActor asks Ray for on this cluster: {"k", "actors", "num_cpus",
    "num_gpus"} (per actor). `reserved_cpus`: CPUs of the cluster something else holds (a Tune
    trial's process). RayEngine and tune.trial_bundles both call this, so a trial's bundles are
    exactly what its actors ask for."""
    k = resolve_clients_per_actor(cfg, n_max, cluster).ray.clients_per_actor
    actors = math.ceil(n_max / k)
    cpus = actor_cpus(cfg, k, actors, cluster.get("CPU", 0.0) - reserved_cpus)
    gpu = gpus_per_client(cfg, n_max, cluster.get("GPU", 0.0))
    return {"k": k, "actors": actors, "num_cpus": cpus, "num_gpus": gpu * k}


def gpus_per_client(cfg: Config, n_max: int, cluster_gpus: float) -> float:
    if cfg.ray.gpus_per_client == "auto":
        if cluster_gpus <= 0:
            return 0.0
        k = resolve_clients_per_actor(cfg, n_max, {"GPU": cluster_gpus}).ray.clients_per_actor
        actors = math.ceil(n_max / k)
        # Actors spread evenly over the GPUs, never more than one GPU per actor (Ray fills a
        # GPU with fractions before it moves to the next).
        per_gpu = math.ceil(actors / max(1, math.floor(cluster_gpus)))
        actor_share = min(1.0 / per_gpu, cluster_gpus / actors)
        return math.floor(actor_share / k * 1e4) / 1e4  # Ray keeps 4 decimals: never round up
    return float(cfg.ray.gpus_per_client)


def plan_resources(cfg: Config, n_max: int, started_here: bool, log: Callable[[str], None],
                   reserved_cpus: float = 0.0) -> dict:
    """Per-actor {"num_cpus", "num_gpus"} (actor_resources); ConfigError when this cluster can
    never run it, naming what is missing."""
    import ray

    res = ray.cluster_resources()
    plan = actor_resources(cfg, n_max, res, reserved_cpus)
    k, actors, cpu, gpu_actor = plan["k"], plan["actors"], plan["num_cpus"], plan["num_gpus"]
    gpu = gpu_actor / k
    if gpu_actor > 1 and abs(gpu_actor - round(gpu_actor)) > 1e-9:
        raise ConfigError(f"ray.gpus_per_client={gpu:g} x ray.clients_per_actor={k} = {gpu_actor:g} GPUs per actor: "
                          f"Ray needs a fraction <= 1 or a whole number")
    if cfg.device == "cuda" and gpu == 0:
        raise ConfigError(f"device=cuda but the clients get no GPU (ray.gpus_per_client={cfg.ray.gpus_per_client}, "
                          f"cluster: {describe_resources(res)})")
    need = {"CPU": cpu * actors + reserved_cpus, "GPU": gpu * reserved_clients(n_max, k)}
    short = {r: v for r, v in need.items() if v > res.get(r, 0.0) + 1e-6}
    if short:
        what = " and ".join(f"{v:g} {r}" for r, v in short.items())
        sizing = (f"ray.cpus_per_client={cfg.ray.cpus_per_client:g}" if cfg.ray.cpus_per_client is not None
                  else f"ray.cpus_per_actor={cfg.ray.cpus_per_actor}")
        msg = (f"{n_max} clients in {actors} ClientActor(s) of {k} need {what} ({cpu:g} CPU per actor: {sizing}; "
               f"ray.gpus_per_client={cfg.ray.gpus_per_client}) but the Ray cluster has {describe_resources(res)}")
        if not started_here and cluster_autoscales():
            log(f"ray: {msg}; the autoscaler will add nodes, the run waits for them")
        else:
            hint = ("set ray.gpus_per_client: 0 (or auto) to train on CPU, or join a cluster with GPUs (ray.address)"
                    if "GPU" in short else
                    "set ray.cpus_per_actor: auto (and ray.cpus_per_client: null), raise ray.clients_per_actor "
                    "(or auto), or raise ray.num_cpus")
            raise ConfigError(f"{msg}; {hint}")
    if gpu > 0:
        log(f"ray: {gpu:g} GPU per client ({gpu_actor:g} per actor of {k}); fractions share a GPU's memory, "
            f"they do not cap it")
    return {"num_cpus": cpu, "num_gpus": gpu_actor}


def replan_resources(cfg: Config, n_max: int, n_actors: int, nodes: list[dict], current: dict) -> Optional[dict]:
    """Per-actor {"num_cpus", "num_gpus"} that let the run's `n_actors` ClientActors (its blocks
    unchanged: the numbers depend on the blocks, not on where they run) fit on these `nodes`
    (each alive node's total resources, as ray.nodes() gives them), or None where they cannot:
    sharing cores as `ray.cpus_per_actor: auto` does (at most layout.MAX_ACTORS_PER_CORE actors
    a core) does not make them fit, or explicit ray.cpus_per_actor / cpus_per_client fix what
    each asks for. The CPU share is that of the run's largest client count (as plan_resources),
    so a later grow fits too where it can; GPUs stay as they are."""
    k = cfg.ray.clients_per_actor
    cpus = sum(x.get("CPU", 0.0) for x in nodes)
    cpu = actor_cpus(cfg, k, max(n_actors, math.ceil(n_max / k)), cpus)
    if cpu >= current["num_cpus"] - 1e-9:
        return None   # nothing smaller to ask for: the replacements already asked for this
    need = {"CPU": cpu, "GPU": current["num_gpus"]}
    if sum(actors_fit(x, need) for x in nodes) < n_actors:
        return None
    return {"num_cpus": cpu, "num_gpus": current["num_gpus"]}

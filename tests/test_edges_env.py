"""The environment a local Ray writes to: an unwritable HOME (its token), TMPDIR or RAY_TMPDIR
(its session tree) is one line naming the variable and exit 2, before Ray or any actor starts
and with nothing written; a writable one passes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qgm_ray.engine import ray_setup
from qgm_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.name=synthetic", "model.name=mlp", "model.options={hidden: [16]}", "topology.n_clients=4",
         "data.batch_size=16", "schedule.epochs=1", "eval.every_epochs=1", "backend=ray", "progress=false",
         "ray.num_cpus=2"]
VARS = ["HOME", "TMPDIR", "RAY_TMPDIR"]


@pytest.fixture
def blocked(tmp_path):
    """A path no one can make a directory under (a file is in the way), root included."""
    f = tmp_path / "a-file"
    f.write_text("")
    return f / "dir"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("RAY_TMPDIR", "TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))   # no token there yet: Ray would write one
    return monkeypatch


def test_ray_temp_root_follows_rays_order(clean_env):
    assert ray_setup.ray_temp_root() == ("RAY_TMPDIR", "/tmp")
    clean_env.setenv("TMPDIR", "/t1")
    assert ray_setup.ray_temp_root() == ("TMPDIR", "/t1")
    clean_env.setenv("RAY_TMPDIR", "/t2")
    assert ray_setup.ray_temp_root() == ("RAY_TMPDIR", "/t2")


@pytest.mark.parametrize("var", VARS)
def test_an_unwritable_place_is_one_line_naming_its_variable(clean_env, blocked, var):
    ray_setup.check_environment()   # all writable: passes
    clean_env.setenv(var, str(blocked))
    with pytest.raises(ConfigError) as e:
        ray_setup.check_environment()
    msg = str(e.value)
    assert "\n" not in msg and f"(from ${var})" in msg and "is a file, not a directory" in msg
    assert f"set {var} to a writable directory" in msg


def test_home_is_not_needed_when_ray_writes_no_token_there(clean_env, blocked, tmp_path):
    clean_env.setenv("HOME", str(blocked))
    clean_env.setenv("RAY_AUTH_MODE", "disabled")
    ray_setup.check_environment()
    clean_env.delenv("RAY_AUTH_MODE")
    clean_env.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    ray_setup.check_environment()
    clean_env.delenv("RAY_AUTH_TOKEN_PATH")
    home = tmp_path / "ro-home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("t")   # a token already there: nothing to write
    clean_env.setenv("HOME", str(home))
    ray_setup.check_environment()


@pytest.mark.slow
@pytest.mark.parametrize("var", VARS)
def test_main_on_ray_with_an_unwritable_place_is_one_line_exit_2_nothing_written(tmp_path, blocked, var):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR", "TMPDIR")}
    env[var] = str(blocked)
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, str(ROOT / "main.py"), *[a for kv in SMALL for a in ("--set", kv)],
                          "--output-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-3000:]
    assert f"(from ${var})" in lines[0] and "Traceback" not in res.stderr
    assert not out.exists()

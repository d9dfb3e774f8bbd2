"""`tune --resume` loads Ray Tune's state (pickles) only when this user's qgm-ray sealed it:
a planted pickle never runs, whatever the sweep directory holds."""
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qgm_ray import seal
from qgm_ray import tune as qtune
from qgm_ray.config import config_dict, from_dict

ROOT = Path(__file__).resolve().parent.parent

SWEEP_YAML = ("name: planted\nbackend: local\nprogress: false\n"
              "data: {name: synthetic, batch_size: 16}\nmodel: {name: mlp, options: {hidden: [16]}}\n"
              "topology: {name: ring, n_clients: 4}\nschedule: {epochs: 1}\n"
              "tune: {grid: {seed: [0, 1]}}\n")


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


class Planted:
    """Unpickling it creates `path`: the proof that code from the sweep directory ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def planted_sweep(tmp_path) -> tuple[Path, Path]:
    sweep, proof = tmp_path / "sweep", tmp_path / "code-ran"
    (sweep / qtune.EXPERIMENT).mkdir(parents=True)
    (sweep / "config.yaml").write_text(SWEEP_YAML)
    (sweep / qtune.EXPERIMENT / "tuner.pkl").write_bytes(pickle.dumps(Planted(proof)))
    return sweep, proof


# ---------------------------------------------------------------- the seal itself

def test_the_key_is_made_once_and_readable_by_its_user_alone(config_home):
    key = seal.load_key(create=True)
    assert len(key) == seal.KEY_BYTES and seal.load_key() == key
    path = seal.key_path()
    assert path.parent == config_home / "qgm-ray"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_sealed_directory_verifies_and_any_change_breaks_the_seal(tmp_path, config_home):
    key = seal.load_key(create=True)
    state = tmp_path / "state"
    (state / "trial_a").mkdir(parents=True)
    (state / "tuner.pkl").write_bytes(b"\x80\x04N.")
    (state / "trial_a" / "result.json").write_text("{}\n")
    sealed = tmp_path / "state.seal"
    assert seal.seal(state, sealed, key)
    seal.verify(state, sealed, "check")

    (state / "trial_a" / "result.json").write_text("{} \n")
    with pytest.raises(seal.SealError, match=r"^check: .* changed since\); it is not loaded"):
        seal.verify(state, sealed, "check")
    (state / "trial_a" / "result.json").write_text("{}\n")
    seal.verify(state, sealed, "check")

    (state / "trial_a" / "result.json").rename(state / "trial_a" / "result2.json")   # a name is sealed too
    with pytest.raises(seal.SealError):
        seal.verify(state, sealed, "check")
    (state / "trial_a" / "result2.json").rename(state / "trial_a" / "result.json")
    (state / "extra.pkl").write_bytes(b"x")   # and so is every file there
    with pytest.raises(seal.SealError):
        seal.verify(state, sealed, "check")


def test_a_seal_made_with_another_key_is_refused(tmp_path, config_home):
    state = tmp_path / "state"
    state.mkdir()
    (state / "tuner.pkl").write_bytes(b"\x80\x04N.")
    assert seal.seal(state, tmp_path / "s", b"k" * seal.KEY_BYTES)   # someone else's key
    seal.load_key(create=True)
    with pytest.raises(seal.SealError, match="another program or user"):
        seal.verify(state, tmp_path / "s", "check")


def test_a_link_in_the_state_cannot_be_sealed(tmp_path, config_home):
    key = seal.load_key(create=True)
    state = tmp_path / "state"
    state.mkdir()
    (state / "tuner.pkl").write_bytes(b"x")
    assert seal.seal(state, tmp_path / "s", key)
    (tmp_path / "elsewhere.pkl").write_bytes(b"x")
    (state / "tuner.pkl").unlink()
    (state / "tuner.pkl").symlink_to(tmp_path / "elsewhere.pkl")   # the same bytes, through a link
    with pytest.raises(seal.SealError, match="tuner.pkl is a symbolic link"):
        seal.verify(state, tmp_path / "s", "check")
    assert not seal.seal(state, tmp_path / "s", key)
    assert not (tmp_path / "s").exists()   # the old seal goes too: nothing vouches for the state


def test_an_unwritable_config_home_is_one_line(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(ro / "cfg"))
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(seal.SealError, match=r"cannot make the key .* XDG_CONFIG_HOME"):
            seal.load_key(create=True)
    finally:
        ro.chmod(0o700)


# ---------------------------------------------------------------- tune --resume

@pytest.mark.parametrize("forged", [False, True], ids=["no-seal", "forged-seal"])
def test_resume_never_unpickles_a_planted_state(tmp_path, config_home, forged):
    sweep, proof = planted_sweep(tmp_path)
    seal.load_key(create=True)
    if forged:   # the attacker seals with a key of their own
        seal.seal(sweep / qtune.EXPERIMENT, sweep / qtune.SEAL, b"a" * seal.KEY_BYTES)
    cfg = from_dict(config_dict(sweep / "config.yaml"))
    with pytest.raises(seal.SealError, match=rf"^--resume {sweep}: .* it is not loaded"):
        qtune.run_sweep(cfg, resume_dir=sweep, log=lambda m: None)
    assert not proof.exists()


def test_resume_after_the_state_changed_refuses(tmp_path, config_home):
    """A state this user's qgm-ray sealed, then replaced: refused, nothing runs."""
    sweep, proof = planted_sweep(tmp_path)
    planted = (sweep / qtune.EXPERIMENT / "tuner.pkl").read_bytes()
    (sweep / qtune.EXPERIMENT / "tuner.pkl").write_bytes(pickle.dumps({"harmless": 1}))
    seal.load_key(create=True)
    assert qtune.seal_state(sweep)
    qtune.verify_state(sweep)
    (sweep / qtune.EXPERIMENT / "tuner.pkl").write_bytes(planted)
    with pytest.raises(seal.SealError, match="changed since"):
        qtune.verify_state(sweep)
    assert not proof.exists()


@pytest.mark.slow
def test_main_tune_resume_of_a_planted_sweep_is_one_line_and_exit_2(tmp_path, config_home):
    sweep, proof = planted_sweep(tmp_path)
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home)}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, str(ROOT / "main.py"), "tune", "--resume", str(sweep)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "carries no valid seal" in lines[0] and "not loaded" in lines[0], res.stderr
    assert not proof.exists()

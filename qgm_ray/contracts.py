"""Checks a plug-in's contract on a tiny batch before the run starts.

A user's rule, model or dataset (README, "Bring your own method") that breaks what qgm-ray
expects of it would otherwise fail deep inside a round as a long traceback, or run on with
wrong numbers (an integer payload truncates every weight and the run still completes).
`check_plugins(cfg, ds)` runs each plug-in the config names once, on its own copies and a
batch of two samples, before the run directory is written or any actor starts. Each broken
contract is one `ContractError` line naming the plug-in, what it returned and what was
expected. The blocks call `rule_result` and `call_rule` every round: those checks read only
a tensor's type, shape and dtype (no device sync), so a rule that breaks its contract later in
a run stops at that round with the same kind of line.

Nothing here changes a valid run: the model is a fresh build (make_model seeds its own
generator), the rule steps fresh state on copies of the parameters, and the global torch,
numpy and random generators are restored after the checks, whatever a plug-in drew from them.
"""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch
import torch.nn.functional as F

from qgm_ray import errors, plugins
from qgm_ray.errors import ConfigError

# Samples in the batch the model and the rule are tried on: two, so that a model that
# squeezes its output loses a dimension visibly and BatchNorm in training mode has a batch.
PROBE_SAMPLES = 2


class ContractError(ConfigError):
    """A plug-in broke its contract: one line naming it (main.py prints it and exits 2)."""

    def __init_subclass__(cls, **kwargs):
        # Ray re-raises an error from an actor as a subclass of both RayTaskError and the error's
        # own class, whose str() is the remote traceback (nested once per actor it crossed). The
        # plug-in's line is what the driver prints: str() of the innermost ContractError.
        super().__init_subclass__(**kwargs)
        cls.__str__ = ContractError.__str__

    def __str__(self) -> str:
        # args[0]: the line, or (in Ray's wrapper) the ContractError it wraps
        return str(self.args[0]) if self.args else ""


def crossing_ray(e: ConfigError) -> ContractError:
    """`e` as a ContractError: raised inside an actor, its line is what the driver prints."""
    return e if isinstance(e, ContractError) else ContractError(str(e))


def first_line(e: BaseException) -> str:
    """`Type: first line of the message`, or the type alone when the message is empty."""
    return f"{type(e).__name__}: {errors.first_line(e)}" if str(e).strip() else type(e).__name__


def rule_key(rule) -> str:
    return f"algorithm.name={getattr(rule, 'name', type(rule).__qualname__)!r}"


# ------------------------------------------------------------------ a rule's results


def call_rule(rule, method: str, *args):
    """`rule.<method>(*args)`, a plug-in rule's exception turned into one line naming it. A
    built-in rule's exception is qgm-ray's own bug and keeps its traceback."""
    fn = getattr(rule, method)
    if not plugins.is_reference(getattr(rule, "name", None)):
        return fn(*args)
    try:
        return fn(*args)
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: its error is this key's problem
        raise ContractError(f"{rule_key(rule)}: {method} raised {first_line(e)}") from None


def rule_result(rule, method: str, value, rows: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """`value`, what `rule.<method>` returned for a block of `rows` clients, if it is a
    (rows, width) tensor of `dtype` (the parameters' dtype); a ContractError otherwise.
    Reads metadata only: cheap enough for every round."""
    what = ("payload_size(P) floats per client, the payload" if method == "pre_mix"
            else "P floats per client, the new parameters")
    expected = f"a ({rows}, {width}) {_dtype(dtype)} tensor ({what})"
    if not isinstance(value, torch.Tensor):
        raise ContractError(f"{rule_key(rule)}: {method} returned {_describe(value)}; expected {expected}")
    if tuple(value.shape) != (rows, width):
        raise ContractError(f"{rule_key(rule)}: {method} returned a tensor of shape {tuple(value.shape)}; "
                            f"expected {expected}")
    if value.dtype != dtype:
        raise ContractError(f"{rule_key(rule)}: {method} returned {_dtype(value.dtype)} values; expected {expected}"
                            + (" (integers would truncate every weight)" if not value.is_floating_point() else ""))
    return value


def _finite_result(rule, method: str, value: torch.Tensor) -> None:
    bad = int((~torch.isfinite(value)).sum())
    if bad:
        raise ContractError(f"{rule_key(rule)}: {method} returned {bad} non-finite value(s) (NaN or inf) "
                            f"from finite parameters and gradients; expected finite numbers")


def _describe(value) -> str:
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_rule(rule, params: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
    """One round of `rule` for two clients on copies of (P,) `params` and `grad`, each
    client mixing only itself: both methods implemented, results of the right shape and dtype,
    finite."""
    from qgm_ray.algorithms.base import Algorithm
    key = rule_key(rule)
    for method in ("pre_mix", "post_mix"):
        if getattr(type(rule), method, None) is getattr(Algorithm, method):
            raise ContractError(f"{key} does not implement {method}; a subclass of qgm_ray.Algorithm must "
                                f"define pre_mix(state, params, grad, lr) and post_mix(state, params, mixed, lr)")
    rows = 2
    block = params.detach().reshape(1, -1).repeat(rows, 1)
    grads = grad.detach().reshape(1, -1).repeat(rows, 1)
    state = call_rule(rule, "init", block)
    width = rule.payload_size(block.shape[1])
    payload = rule_result(rule, "pre_mix", call_rule(rule, "pre_mix", state, block.clone(), grads, lr),
                          rows, width, block.dtype)
    _finite_result(rule, "pre_mix", payload)
    new = rule_result(rule, "post_mix", call_rule(rule, "post_mix", state, block.clone(), payload.clone(), lr),
                      rows, block.shape[1], block.dtype)
    _finite_result(rule, "post_mix", new)


# ------------------------------------------------------------------ a model and its data


def check_features(key: str, ds) -> None:
    """Floating-point features are finite: one NaN poisons every client it reaches through the
    mixing, and the run would end as a divergence blamed on the learning rate."""
    for what, x in (("train_x", ds.train_x), ("test_x", ds.test_x)):
        if not x.is_floating_point():
            continue
        bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ContractError(f"{key}: {what} holds NaN or infinite features in {int(bad.sum())} row(s) "
                                f"(the first is row {row}); expected finite numbers")


def check_model(key: str, model: torch.nn.Module, ds, data_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The model trains as a block does: float32 parameters, and one forward and backward on
    the first samples of the training set giving (batch, num_classes) finite scores.
    Returns its (P,) parameters and gradients there."""
    params = list(model.parameters())
    if not params:
        raise ContractError(f"{key} built a {type(model).__name__} with no parameters; expected a torch.nn.Module "
                            f"with trainable parameters")
    for name, p in model.named_parameters():
        if p.dtype != torch.float32:
            raise ContractError(f"{key}: parameter {name!r} is {_dtype(p.dtype)}; expected float32 parameters "
                                f"(the clients' rows are float32)")
    from qgm_ray.data import pixel_table, to_float
    n = min(PROBE_SAMPLES, len(ds.train_x))
    x = to_float(ds.train_x[:n], pixel_table(ds.norm) if ds.norm is not None else None)
    y = ds.train_y[:n]
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            out = model(x)
        except Exception as e:  # noqa: BLE001 - the user's code: its error is this key's problem
            if not x.is_floating_point():
                raise ContractError(f"{data_key} gives {_dtype(x.dtype)} features and {key} failed on them "
                                    f"({first_line(e)}); expected float features (astype(np.float32)) "
                                    f"or a model that takes integer token ids") from None
            raise ContractError(f"{key}: its first forward, on a batch of shape {tuple(x.shape)}, raised "
                                f"{first_line(e)}") from None
        expected = (n, ds.num_classes)
        if not isinstance(out, torch.Tensor):
            raise ContractError(f"{key}: forward returned {_describe(out)}; expected a {expected} tensor "
                                f"(one score per class for each of the {n} inputs)")
        if tuple(out.shape) != expected:
            raise ContractError(f"{key}: forward on a batch of {n} returned shape {tuple(out.shape)}; expected "
                                f"{expected} (one score per class for each input, num_classes={ds.num_classes})")
        if not out.is_floating_point():
            raise ContractError(f"{key}: forward returned {_dtype(out.dtype)} scores; expected float32")
        if not bool(torch.isfinite(out).all()):
            raise ContractError(f"{key}: forward returned NaN or infinite scores on finite inputs; expected finite numbers")
        try:
            F.cross_entropy(out, y).backward()
        except Exception as e:  # noqa: BLE001
            raise ContractError(f"{key}: backward through its output raised {first_line(e)}") from None
    grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    return torch.cat([p.detach().reshape(-1) for p in params]), grad


def check_plugins(cfg, ds) -> None:
    """Every plug-in the run names, tried once before anything starts (see the module doc).
    Built-in names are left alone: their contract is the test suite's."""
    with _random_state_kept():
        _check_plugins(cfg, ds)


@contextlib.contextmanager
def _random_state_kept():
    # A plug-in may draw from the global generators (a noisy rule, a model with dropout): the
    # run's draws must be those of a run without the checks.
    py, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)


def _check_plugins(cfg, ds) -> None:
    from qgm_ray import build
    from qgm_ray.algorithms import make_algorithm_from_config
    data_key, model_key = plugins.KEYS["data"], plugins.KEYS["model"]
    named = {kind: plugins.is_reference(getattr(cfg, kind).name) for kind in ("data", "model", "algorithm")}
    if named["data"]:
        check_features(f"{data_key}={cfg.data.name!r}", ds)
    if not any(named.values()):
        return
    model = build.build_model(cfg, ds)
    params, grad = check_model(f"{model_key}={cfg.model.name!r}", model, ds, f"{data_key}={cfg.data.name!r}")
    if named["algorithm"]:
        rule = make_algorithm_from_config(cfg.algorithm.name, cfg.algorithm.hparams(), cfg.algorithm.options)
        check_rule(rule, params, grad, float(cfg.algorithm.lr))


__all__ = ["ContractError", "call_rule", "check_plugins", "rule_result"]

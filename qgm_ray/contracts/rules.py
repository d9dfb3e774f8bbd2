"""A rule's results: what `pre_mix` and `post_mix` return, checked every round by the blocks
(`call_rule`, `rule_result`: a tensor's type, shape and dtype only, no device sync), and one
round of a plug-in rule on copies before the run (`check_rule`)."""
from __future__ import annotations

import torch

from qgm_ray import plugins
from qgm_ray.contracts.error import ContractError, _describe, _dtype, first_line, rule_key


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

"""engine/kernels.py: k clients' Linear and Conv1d as batched matrix products, the model run
on them, the choice between them and vmap, and a block's step on either path.

Bounds follow the arithmetic (Higham 3.1): a float32 dot product of length K is within
gamma_K |a|.|b| of the exact one, gamma_K = K u / (1 - K u). So each layer's forward and
gradients are compared, element by element, with a float64 reference of the same op, within
gamma_K times that op applied to the absolute values (computed in float64 too)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from qgm_ray.config import load_config
from qgm_ray.engine import kernels
from qgm_ray.models.small import CNN1d, MLP

from numerics import longest_reduction, normwise_error, reduction_bound, unit_roundoff
from test_block import BASE, _assert_rounds_agree, _engine

U = unit_roundoff(torch.float32)


def gamma(k: int) -> float:
    return k * U / (1 - k * U)


def assert_within(got, exact, absolute, length, what):
    """|got - exact| <= gamma_length * absolute, every element (float64 comparison)."""
    err = (got.detach().double() - exact.detach()).abs()
    allowed = gamma(length) * absolute.detach()
    worst = float((err - allowed).max())
    assert worst <= 0, f"{what}: an element exceeds gamma_{length} |.| by {worst:.3g}"


def _clients(k, make):
    gen = torch.Generator().manual_seed(k)
    return [make(gen) for _ in range(k)]


# ---------------------------------------------------------------------------- the layers

@pytest.mark.parametrize("k,n,fan_in,fan_out,bias", [(1, 5, 7, 3, True), (3, 4, 40, 25, True), (3, 1, 9, 2, False)])
def test_linear_equals_each_clients_linear_and_its_gradients(k, n, fan_in, fan_out, bias):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(k, n, fan_in, generator=gen, requires_grad=True)
    w = torch.randn(k, fan_out, fan_in, generator=gen, requires_grad=True)
    b = torch.randn(k, fan_out, generator=gen, requires_grad=True) if bias else None
    g = torch.randn(k, n, fan_out, generator=gen)
    out = kernels.linear(x, w, b)
    ins = [x, w] + ([b] if bias else [])
    grads = torch.autograd.grad(out, ins, g)
    for i in range(k):
        xi, wi = x[i].detach().double().requires_grad_(), w[i].detach().double().requires_grad_()
        bi = b[i].detach().double().requires_grad_() if bias else None
        exact = F.linear(xi, wi, bi)
        ex = torch.autograd.grad(exact, [xi, wi] + ([bi] if bias else []), g[i].double())
        abs_out = F.linear(xi.abs(), wi.abs(), bi.abs() if bias else None)
        assert_within(out[i], exact, abs_out, fan_in + 1, "forward")
        # dx sums over fan_out, dw over the n samples, db over the n samples
        assert_within(grads[0][i], ex[0], g[i].double().abs() @ wi.abs(), fan_out, "input gradient")
        assert_within(grads[1][i], ex[1], g[i].double().abs().T @ xi.abs(), n, "weight gradient")
        if bias:
            assert_within(grads[2][i], ex[2], g[i].double().abs().sum(0), n, "bias gradient")


CONVS = [
    # k, n, C_in, C_out, L, K, stride, padding, dilation: cnn1d's three layers, then odd ones
    (3, 4, 1, 25, 40, 5, 2, 1, 1),
    (3, 4, 25, 25, 19, 3, 2, 1, 1),
    (1, 2, 25, 25, 10, 3, 2, 1, 1),
    (3, 3, 4, 5, 13, 3, 1, 0, 1),
    (3, 2, 3, 2, 17, 3, 3, 2, 2),
    (1, 1, 2, 3, 6, 5, 1, 4, 1),
]


@pytest.mark.parametrize("k,n,c_in,c_out,length,taps,stride,padding,dilation", CONVS)
def test_conv1d_equals_each_clients_conv1d_and_its_gradients(k, n, c_in, c_out, length, taps, stride, padding, dilation):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(k, n, c_in, length, generator=gen, requires_grad=True)
    w = torch.randn(k, c_out, c_in, taps, generator=gen, requires_grad=True)
    b = torch.randn(k, c_out, generator=gen, requires_grad=True)
    conv = dict(stride=stride, padding=padding, dilation=dilation)
    out = kernels.conv1d(x, w, b, **conv)
    assert out.is_contiguous()
    g = torch.randn(out.shape, generator=gen)
    gx, gw, gb = torch.autograd.grad(out, [x, w, b], g)
    l_out = out.shape[-1]
    for i in range(k):
        xi, wi = x[i].detach().double().requires_grad_(), w[i].detach().double().requires_grad_()
        bi = b[i].detach().double().requires_grad_()
        exact = F.conv1d(xi, wi, bi, **conv)
        ex, ew, eb = torch.autograd.grad(exact, [xi, wi, bi], g[i].double())
        gi = g[i].double().abs()
        xa, wa = xi.detach().abs().requires_grad_(), wi.detach().abs().requires_grad_()
        abs_out = F.conv1d(xa, wa, bi.abs(), **conv)
        abs_gx, abs_gw = torch.autograd.grad(abs_out, [xa, wa], gi)
        assert_within(out[i], exact, abs_out, c_in * taps + 1, "forward")
        # an input's gradient: C_out terms per tap in one product, then one add per tap
        assert_within(gx[i], ex, abs_gx, c_out * taps + taps, "input gradient")
        assert_within(gw[i], ew, abs_gw, n * l_out, "weight gradient")
        assert_within(gb[i], eb, gi.sum((0, 2)), n * l_out, "bias gradient")


def test_first_layer_takes_no_input_gradient():
    """The data needs no gradient: the backward skips col2im."""
    x = torch.randn(2, 3, 1, 11)
    w = torch.randn(2, 4, 1, 3, requires_grad=True)
    out = kernels.conv1d(x, w, None, 2, 1, 1)
    (gw,) = torch.autograd.grad(out.sum(), [w])
    assert gw.shape == w.shape and torch.isfinite(gw).all()


# ---------------------------------------------------------------------------- the model

def _stacked(model, k, gen):
    """k clients' parameters, each a perturbation of the model's own."""
    return {name: torch.stack([p.detach() + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
                               for _ in range(k)]) for name, p in model.named_parameters()}


@pytest.mark.parametrize("make,shape", [(lambda: CNN1d((40,), 10), (40,)), (lambda: MLP((40,), 10, hidden=(16, 8)), (40,)),
                                        (lambda: CNN1d((2, 23), 3, channels=5), (2, 23))])
def test_batched_model_gradients_are_each_clients_own(make, shape):
    """Row i of the batched step is client i's gradient of its mean cross-entropy and its loss,
    as torch.func computes them for client i alone; in float64, to the rounding bound of the
    longest sum (tests/numerics.py), per row."""
    torch.manual_seed(0)
    model = make().double()
    gen = torch.Generator().manual_seed(3)
    k, b = 3, 5
    views = _stacked(model, k, gen)
    x = torch.randn(k, b, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (k, b), generator=gen)
    grads, losses = kernels.BatchedModel(model).gradients(views, x, y)
    bound = 8 * reduction_bound(longest_reduction(model, b, shape if len(shape) > 1 else (1, *shape)), torch.float64)
    for i in range(k):
        p = {name: v[i].clone().requires_grad_() for name, v in views.items()}
        loss = F.cross_entropy(functional_call(model, p, (x[i],)), y[i])
        want = torch.autograd.grad(loss, list(p.values()))
        got = torch.cat([grads[name][i].reshape(-1) for name in p])
        assert float(normwise_error(got, torch.cat([g.reshape(-1) for g in want]))) <= bound
        assert float(losses[i]) == pytest.approx(float(loss.detach()), rel=bound, abs=0)


class _MixesSamples(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x - x.mean(0))   # batch statistics: samples of different clients would mix


class _Dropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("model,shape,expected", [
    (CNN1d((40,), 10), (40,), True),
    (MLP((40,), 10), (40,), True),
    (_MixesSamples(), (4,), False),                                          # the probe catches it
    (_Dropout(), (4,), False),                                               # dropout draws stay vmap's
    (nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), nn.Flatten(), nn.Linear(4, 2)), (1, 6), False),
    (nn.Sequential(nn.Conv1d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(8, 2)), (2, 6), False),
])
def test_which_models_run_batched(model, shape, expected):
    assert kernels.supports(model, shape) is expected


def test_the_choice_follows_the_config_and_the_device_only():
    """Never a timing: every process (Ray actors, the local engine, a resume) chooses alike."""
    m = CNN1d((40,), 10)
    assert kernels.choose("auto", m, (40,), "cpu", packed=True) == "batched"
    assert kernels.choose("auto", m, (40,), "cuda:0", packed=True) == "vmap"
    assert kernels.choose("vmap", m, (40,), "cpu", packed=True) == "vmap"
    assert kernels.choose("batched", m, (40,), "cpu", packed=False) == "vmap"   # unpacked rows step alone
    assert kernels.choose("batched", _MixesSamples(), (4,), "cpu", packed=True) == "vmap"


def test_compute_kernels_is_checked():
    from qgm_ray.errors import ConfigError
    with pytest.raises(ConfigError, match=r"^compute.kernels='fast' is not allowed; choose one of auto, vmap, batched$"):
        load_config(None, BASE + ["compute.kernels=fast"])


# ---------------------------------------------------------------------------- a block's step

@pytest.mark.parametrize("family", [["data.name=synthetic", "model.name=mlp", "model.options={hidden: [16]}"],
                                    ["data.name=mnist1d", "model.name=cnn1d"]])
def test_block_steps_alike_on_both_paths(family):
    """A packed block of 4 on vmap and on the batched kernels: round by round from the same
    state, within test_block's bounds (float64); and float32 runs the same program."""
    torch.set_num_threads(1)
    on = {mode: _engine(family + [f"compute.kernels={mode}"], 4, "true", float64=True) for mode in ("vmap", "batched")}
    assert [b.kernels for b in on["vmap"].blocks] == ["vmap"] and [b.kernels for b in on["batched"].blocks] == ["batched"]
    _assert_rounds_agree(on["vmap"], on["batched"], rounds=2)
    auto = _engine(family, 4, "true")
    assert [b.kernels for b in auto.blocks] == ["batched"]   # what test_block's packed checks run on
    auto.train(range(2), lambda t: 0.05)
    assert torch.isfinite(auto.params).all()

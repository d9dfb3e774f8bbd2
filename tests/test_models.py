import pytest
import torch
import torch.nn as nn

from qgm_ray.errors import ConfigError
from qgm_ray.models import MODELS, make_model, num_parameters
from qgm_ray.models.evonorm import EvoNorm2dS0, group_std
from numerics import assert_normwise_close, longest_reduction, reduction_bound

CASES = [
    ("resnet20", (3, 32, 32), {}),
    ("resnet20", (3, 32, 32), {"norm": "gn"}),
    ("resnet20", (1, 28, 28), {}),
    ("resnet_evonorm20", (3, 32, 32), {}),
    ("resnet_evonorm20", (3, 32, 32), {"v1": False}),
    ("cnn", (3, 32, 32), {}),
    ("cnn", (1, 28, 28), {}),
    ("cnn", (1, 8, 8), {}),
    ("cnn1d", (1, 40), {}),
    ("cnn1d", (20,), {}),
    ("mlp", (1, 40), {}),
    ("mlp", (20,), {"hidden": [32]}),
    ("mlp", (3, 32, 32), {}),
    ("lenet5", (1, 28, 28), {}),
    # Tiny widths / small inputs keep the file fast; the paper sizes are checked by parameter
    # count in test_new_model_sizes (built, not run).
    ("vgg11", (3, 32, 32), {"width": 0.0625}),
    ("vgg11", (3, 32, 32), {"width": 0.0625, "norm": "none"}),
    ("vgg16", (3, 32, 32), {"width": 0.0625, "norm": "gn"}),
    ("wideresnet28", (3, 8, 8), {"width": 1}),
    ("wideresnet28", (3, 8, 8), {"width": 1, "norm": "gn", "dropout": 0.3}),
    ("densenet_bc", (3, 8, 8), {"depth": 10, "growth": 4}),
    ("densenet_bc", (3, 8, 8), {"depth": 16, "growth": 4, "norm": "gn", "groups": 2}),
]


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("name,shape,kw", CASES)
def test_forward_backward(name, shape, kw):
    model = make_model(name, shape, num_classes=7, seed=0, **kw)
    x = torch.randn(4, *shape)
    out = model(x)
    assert out.shape == (4, 7)
    nn.functional.cross_entropy(out, torch.arange(4)).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


def test_all_models_covered():
    # distilbert takes token ids and needs the optional NLP packages: tests/test_nlp.py.
    assert set(MODELS) == {c[0] for c in CASES} | {"distilbert"}


@pytest.mark.parametrize("name,shape,kw", [c for c in CASES if c[1] != (1, 28, 28)])
def test_seeded_init(name, shape, kw):
    global_state = torch.get_rng_state()
    a = make_model(name, shape, 10, seed=3, **kw)
    assert torch.equal(torch.get_rng_state(), global_state), "global RNG must not move"
    b = make_model(name, shape, 10, seed=3, **kw)
    c = make_model(name, shape, 10, seed=4, **kw)
    assert torch.equal(_flat(a), _flat(b))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert not torch.equal(_flat(a), _flat(c))


def test_sizes_and_state():
    cnn1d = make_model("cnn1d", (1, 40), 10)
    assert num_parameters(cnn1d) == 5210 < 10_000
    assert len(list(cnn1d.buffers())) == 0
    assert 270_000 < num_parameters(make_model("resnet20", (3, 32, 32), 10)) < 275_000

    bn = make_model("resnet20", (3, 32, 32), 10)
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) and len(list(bn.buffers())) > 0
    gn = make_model("resnet20", (3, 32, 32), 10, norm="gn")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    assert all(m.num_groups == 2 for m in gn.modules() if isinstance(m, nn.GroupNorm))
    assert len(list(gn.buffers())) == 0
    assert all(m.num_groups == 4 for m in make_model("resnet20", (3, 32, 32), 10, norm="gn", groups=4).modules()
               if isinstance(m, nn.GroupNorm))

    evo = make_model("resnet_evonorm20", (3, 32, 32), 10)
    assert len(list(evo.buffers())) == 0  # every state is parameters only
    assert sum(isinstance(m, EvoNorm2dS0) for m in evo.modules()) == 1 + 9
    assert all(m.v1 is not None for m in evo.modules() if isinstance(m, EvoNorm2dS0))
    for name, shape in [("cnn", (1, 8, 8)), ("mlp", (20,))]:
        assert len(list(make_model(name, shape, 10).buffers())) == 0


def test_evonorm_train_and_eval():
    model = make_model("resnet_evonorm20", (3, 32, 32), 10)
    x = torch.randn(3, 3, 32, 32)
    model.train()
    y_train = model(x)
    model.eval()
    with torch.no_grad():
        y_eval = model(x)
        y_one = model(x[:1])
    assert y_train.shape == y_eval.shape == (3, 10) and torch.isfinite(y_eval).all()
    assert y_one.shape == (1, 10)

    layer = EvoNorm2dS0(8, groups=4)
    z = torch.randn(2, 8, 5, 5)
    out = layer(z)
    # by hand: swish(v1 * z) gate over the std of each (sample, group of 2 channels)
    std = z.view(2, 4, -1).var(dim=2, unbiased=True).add(1e-5).sqrt().repeat_interleave(2, dim=1).view(2, 8, 1, 1)
    assert torch.allclose(out, z * torch.sigmoid(z) / std, atol=1e-6)
    # per-sample: no dependence on the rest of the batch
    assert torch.allclose(layer(z[:1]), out[:1], atol=1e-6)
    assert group_std(z, 8, 1e-5).shape == z.shape


def test_errors():
    with pytest.raises(ConfigError) as e:
        make_model("vgg19", (3, 32, 32), 10)
    assert all(n in str(e.value) for n in MODELS)
    with pytest.raises(ConfigError, match="norm"):
        make_model("resnet20", (3, 32, 32), 10, norm="ln")
    with pytest.raises(ConfigError, match="widht"):
        make_model("mlp", (20,), 10, widht=3)
    with pytest.raises(ConfigError):
        make_model("cnn", (40,), 10)


@pytest.mark.parametrize("name,kw,message", [
    ("vgg11", {"norm": "ln"}, "bn, gn, none"),
    ("vgg16", {"width": 0}, "width"),
    ("vgg11", {"dropout": 1.0}, "dropout"),
    ("wideresnet28", {"norm": "none"}, "bn, gn"),
    ("wideresnet28", {"width": 2.5}, "width"),
    ("wideresnet28", {"depth": 28}, "allowed: width, norm, groups, dropout"),
    ("densenet_bc", {"depth": 41}, "6n\\+4"),
    ("densenet_bc", {"growth": 0}, "growth"),
    ("densenet_bc", {"compression": 0}, "compression"),
    ("densenet_bc", {"growth": 5, "norm": "gn", "groups": 4}, "groups=4"),
])
def test_new_model_options_are_validated(name, kw, message):
    with pytest.raises(ConfigError, match=message) as e:
        make_model(name, (3, 32, 32), 10, **kw)
    assert "\n" not in str(e.value)


def test_new_models_need_images_and_32px_for_vgg():
    for name in ("vgg11", "wideresnet28", "densenet_bc"):
        with pytest.raises(ConfigError, match="image input"):
            make_model(name, (40,), 10)
    with pytest.raises(ConfigError, match="32px"):
        make_model("vgg11", (3, 16, 16), 10)


def test_new_model_sizes():
    # The published sizes (CIFAR-10 heads): VGG-11/16 with the 512-512 classifier, WRN-28-10
    # 36.5M, DenseNet-BC-100-12 0.8M; the official code's LeNet-5 on 32px colour images.
    assert 9_700_000 < num_parameters(make_model("vgg11", (3, 32, 32), 10)) < 9_800_000
    assert 15_200_000 < num_parameters(make_model("vgg16", (3, 32, 32), 10)) < 15_300_000
    assert 36_400_000 < num_parameters(make_model("wideresnet28", (3, 32, 32), 10)) < 36_550_000
    assert 760_000 < num_parameters(make_model("densenet_bc", (3, 32, 32), 10, depth=100)) < 800_000
    assert num_parameters(make_model("lenet5", (3, 32, 32), 10)) == 62_006
    gn = make_model("vgg11", (3, 32, 32), 10, norm="gn", width=0.125)
    assert len(list(gn.buffers())) == 0 and not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    plain = make_model("vgg11", (3, 32, 32), 10, norm="none", width=0.125)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in plain.modules())


PACKED = [c for c in CASES if c[0] in ("lenet5", "vgg11", "vgg16", "wideresnet28", "densenet_bc")]


@pytest.mark.parametrize("name,shape,kw", PACKED)
def test_vmap_packed_step_equals_separate_steps(name, shape, kw):
    """What engine/packed.py does: one vmap(grad_and_value(functional_call)) over two stacked
    clients gives each client's own gradient, loss and BatchNorm running statistics."""
    from torch.func import functional_call, grad_and_value, vmap

    if name != "lenet5":
        kw = {**kw, "dropout": 0.0}  # dropout masks are drawn differently by the two ways
    # float64: a float32 rounding difference can cross a ReLU kink (tests/numerics.py)
    model = make_model(name, shape, num_classes=5, seed=0, **kw).double()
    model.train()
    base = {n: p.detach() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(1)
    params = [base, {n: p + 0.05 * torch.randn(p.shape, generator=g) for n, p in base.items()}]
    buffers = [{n: b.clone() for n, b in model.named_buffers()} for _ in range(2)]
    xs = torch.randn(2, 3, *shape, generator=g, dtype=torch.float64)
    ys = torch.randint(0, 5, (2, 3), generator=g)

    def loss(p, b, x, y):
        return nn.functional.cross_entropy(functional_call(model, (p, b), (x,)), y)

    stacked_p = {n: torch.stack([params[0][n], params[1][n]]) for n in base}
    stacked_b = {n: torch.stack([buffers[0][n], buffers[1][n]]) for n in buffers[0]}
    grads, losses = vmap(grad_and_value(loss), randomness="different")(stacked_p, stacked_b, xs, ys)
    # One grouped convolution vs separate ones sums in another order: compare whole vectors
    # with the rounding bound of the longest sum (tests/numerics.py), not element by element.
    bound = reduction_bound(longest_reduction(model, 3, shape), torch.float64)
    for i in range(2):
        grad_i, loss_i = grad_and_value(loss)(params[i], buffers[i], xs[i], ys[i])
        assert_normwise_close(losses[i], loss_i, bound, f"{name} loss")
        assert_normwise_close(torch.cat([grads[n][i].flatten() for n in base]),
                              torch.cat([grad_i[n].flatten() for n in base]), bound, f"{name} gradient")
        # running stats were updated in place, per client (counters exactly)
        floats = [n for n in buffers[i] if buffers[i][n].is_floating_point()]
        for n in buffers[i]:
            if n not in floats:
                assert torch.equal(stacked_b[n][i], buffers[i][n]), (name, n)
        if floats:
            assert_normwise_close(torch.cat([stacked_b[n][i].flatten() for n in floats]),
                                  torch.cat([buffers[i][n].flatten() for n in floats]), bound, f"{name} buffers")

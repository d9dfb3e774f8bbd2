import pytest
import torch
import torch.nn as nn

from qgm_ray.errors import ConfigError
from qgm_ray.models import MODELS, make_model, num_parameters
from qgm_ray.models.evonorm import EvoNorm2dS0, group_std

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
    assert set(MODELS) == {c[0] for c in CASES}


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
        make_model("vgg16", (3, 32, 32), 10)
    assert all(n in str(e.value) for n in MODELS)
    with pytest.raises(ConfigError, match="norm"):
        make_model("resnet20", (3, 32, 32), 10, norm="ln")
    with pytest.raises(ConfigError, match="widht"):
        make_model("mlp", (20,), 10, widht=3)
    with pytest.raises(ConfigError):
        make_model("cnn", (40,), 10)

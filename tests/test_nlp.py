"""The NLP path offline: a generated AG-News-like dataset saved in the datasets format, a
WordPiece tokenizer trained on it with `tokenizers`, and a tiny random DistilBERT.

Needs requirements-nlp.txt (`make test` installs it); without those packages only the
"missing package" test runs and the rest is skipped.
"""
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from qgm_ray.data import load_dataset
from qgm_ray.errors import ConfigError
from qgm_ray.models import make_model

TOPICS = [
    ["war", "election", "minister", "treaty", "border", "summit"],
    ["match", "goal", "season", "coach", "league", "score"],
    ["market", "shares", "profit", "bank", "trade", "oil"],
    ["software", "chip", "internet", "phone", "space", "robot"],
]
SHARED = ["the", "a", "on", "after", "new", "report", "says", "week"]
TINY = {"dim": 16, "n_layers": 2, "n_heads": 2, "hidden_dim": 32, "max_position_embeddings": 32}
MAX_LEN = 12


def _texts(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    texts = []
    for y in labels:
        words = list(rng.choice(TOPICS[y], size=4)) + list(rng.choice(SHARED, size=rng.integers(1, 10)))
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts, labels.tolist()


@pytest.fixture(scope="module")
def nlp_root(tmp_path_factory):
    """root/agnews (a saved DatasetDict like the hub's) and root/tok (a saved tokenizer)."""
    datasets = pytest.importorskip("datasets")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    root = tmp_path_factory.mktemp("nlp")
    train, test = _texts(48, 0), _texts(16, 1)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["World", "Sports", "Business", "Sci/Tech"])})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": train[0], "label": train[1]}, features=features),
        "test": datasets.Dataset.from_dict({"text": test[0], "label": test[1]}, features=features),
    })
    dd.save_to_disk(str(root / "agnews"))

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(train[0], tokenizers.trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]")
    fast.save_pretrained(str(root / "tok"))
    return root, fast


def _tiny(vocab_size, **kw):
    return make_model("distilbert", (MAX_LEN,), 4, seed=0, pretrained=None,
                      config=dict(TINY, vocab_size=vocab_size), **kw)


def test_agnews_reads_a_saved_dataset_as_token_ids_and_caches_them(nlp_root, monkeypatch):
    root, tok = nlp_root
    ds = load_dataset("agnews", root=str(root), tokenizer=str(root / "tok"), max_length=MAX_LEN)
    assert ds.num_classes == 4 and ds.input_shape == (MAX_LEN,) and ds.augment is None
    assert ds.train_x.shape == (48, MAX_LEN) and ds.test_x.shape == (16, MAX_LEN)
    assert ds.train_x.dtype == torch.int64 and ds.train_y.tolist() == [i % 4 for i in range(48)]
    texts, _ = _texts(48, 0)
    want = tok(texts[5], padding="max_length", truncation=True, max_length=MAX_LEN)["input_ids"]
    assert ds.train_x[5].tolist() == want
    assert (ds.train_x[:, 0] == tok.cls_token_id).all() and (ds.train_x == 0).any()  # [CLS] first, padded with 0
    # The ids are cached: a second load does not tokenise again.
    from qgm_ray.data import text

    monkeypatch.setattr(text, "_encode", lambda *a: (_ for _ in ()).throw(AssertionError("re-tokenised")))
    again = load_dataset("agnews", root=str(root), tokenizer=str(root / "tok"), max_length=MAX_LEN)
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)


def test_agnews_subsets(nlp_root):
    root, _ = nlp_root
    ds = load_dataset("agnews", root=str(root), tokenizer=str(root / "tok"), max_length=8,
                      max_train_samples=8, max_test_samples=4)
    assert ds.train_x.shape == (8, 8) and ds.test_x.shape == (4, 8)
    with pytest.raises(ConfigError, match="max_length"):
        load_dataset("agnews", root=str(root), tokenizer=str(root / "tok"), max_length=1)
    with pytest.raises(ConfigError, match="bogus"):
        load_dataset("agnews", root=str(root), bogus=1)


def test_agnews_missing_data_or_tokenizer_is_one_line_and_fetches_nothing(nlp_root, tmp_path):
    root, _ = nlp_root
    with pytest.raises(ConfigError) as e:
        load_dataset("agnews", root=str(tmp_path / "empty"))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "empty" / "agnews") in msg and "data.download=true" in msg
    # the data is there, the hub tokenizer is not in the (empty) cache: refused, not fetched
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "agnews").symlink_to(root / "agnews")
    with pytest.raises(ConfigError) as e:
        load_dataset("agnews", root=str(tmp_path / "r"), tokenizer="distilbert-base-uncased")
    msg = str(e.value)
    assert "\n" not in msg and "distilbert-base-uncased" in msg and "data.download=true" in msg
    with pytest.raises(ConfigError) as e:
        make_model("distilbert", (MAX_LEN,), 4, cache_dir=str(tmp_path / "hf"))
    msg = str(e.value)
    assert "\n" not in msg and "distilbert-base-uncased" in msg and "data.download=true" in msg


def test_missing_packages_are_one_line_errors(monkeypatch, tmp_path):
    for module in ("transformers", "datasets"):
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ConfigError) as e:
        make_model("distilbert", (MAX_LEN,), 4)
    assert "requirements-nlp.txt" in str(e.value) and "'transformers'" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_dataset("agnews", root=str(tmp_path))
    assert "requirements-nlp.txt" in str(e.value) and "'datasets'" in str(e.value)


def test_tiny_distilbert_forward_backward_mask_and_seed(nlp_root):
    _, tok = nlp_root
    model = _tiny(len(tok))
    x = torch.tensor(tok(["war on the border", "the new chip and phone report says"], padding="max_length",
                         max_length=MAX_LEN)["input_ids"])
    out = model(x)
    assert out.shape == (2, 4)
    nn.functional.cross_entropy(out, torch.tensor([0, 3])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        # our ready-made 4-D mask == the library's own 2-D mask
        ref = model.bert(input_ids=x, attention_mask=(x != 0).long()).logits
        torch.testing.assert_close(model(x), ref)
        # padding is invisible: the first sentence alone, with fewer pads, gives the same logits
        short = torch.tensor(tok(["war on the border"], padding="max_length", max_length=8)["input_ids"])
        torch.testing.assert_close(model(short)[0], model(x)[0], rtol=1e-5, atol=1e-6)
    same = _tiny(len(tok))
    other = make_model("distilbert", (MAX_LEN,), 4, seed=1, pretrained=None, config=dict(TINY, vocab_size=len(tok)))
    flat = [torch.cat([p.flatten() for p in m.parameters()]) for m in (model, same, other)]
    assert torch.equal(flat[0], flat[1]) and not torch.equal(flat[0], flat[2])


def test_tiny_distilbert_vmap_packed_step_equals_separate_steps(nlp_root):
    """The packed engine's step (engine/packed.py) works on DistilBERT: vmap over two
    stacked clients (parameters and buffers) gives each client's own gradient and loss."""
    from torch.func import functional_call, grad_and_value, vmap

    _, tok = nlp_root
    model = _tiny(len(tok), dropout=0.0)
    model.bert.config.dropout = model.bert.config.attention_dropout = 0.0
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # dropout masks are drawn differently by the two ways
    model.train()
    base = {n: p.detach() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(2)
    params = [base, {n: p + 0.02 * torch.randn(p.shape, generator=g) for n, p in base.items()}]
    buffers = {n: b for n, b in model.named_buffers()}
    texts, labels = _texts(6, 3)
    ids = torch.tensor(tok(texts, padding="max_length", truncation=True, max_length=MAX_LEN)["input_ids"])
    xs, ys = ids.view(2, 3, MAX_LEN), torch.tensor(labels).view(2, 3)

    def loss(p, b, x, y):
        return nn.functional.cross_entropy(functional_call(model, (p, b), (x,)), y)

    stacked_p = {n: torch.stack([params[0][n], params[1][n]]) for n in base}
    stacked_b = {n: torch.stack([b, b]) for n, b in buffers.items()}
    grads, losses = vmap(grad_and_value(loss), randomness="different")(stacked_p, stacked_b, xs, ys)
    for i in range(2):
        grad_i, loss_i = grad_and_value(loss)(params[i], buffers, xs[i], ys[i])
        torch.testing.assert_close(losses[i], loss_i, rtol=1e-5, atol=1e-6)
        for n in base:
            torch.testing.assert_close(grads[n][i], grad_i[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("kw,message", [
    ({"pretrained": None, "config": {"dimm": 8}}, "dimm"),
    ({"config": {"dim": 8}}, "pretrained=null"),
    ({"pretrained": None, "config": dict(TINY, max_position_embeddings=8)}, "max_length"),
    ({"pretrained": None, "config": {"dim": 10, "n_heads": 3}}, "DistilBertConfig|dim"),
    ({"bogus": 1}, "bogus"),
])
def test_distilbert_options_are_validated(nlp_root, kw, message):
    with pytest.raises(ConfigError, match=message) as e:
        make_model("distilbert", (MAX_LEN,), 4, **kw)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="token-id input"):
        make_model("distilbert", (3, 32, 32), 4, pretrained=None, config=TINY)


def test_agnews_distilbert_qg_adam_run_offline(nlp_root, tmp_path):
    """A whole (tiny) run through the local engine with packed clients: config, data,
    tokenizer, model, QG-Adam; the paper config differs only in sizes."""
    from qgm_ray.runner import run as runner
    from qgm_ray.config import load_config

    root, tok = nlp_root
    cfg = load_config("configs/paper/agnews_qg_adam.yaml", [
        f"data.root={root}", f"data.options={{tokenizer: {root / 'tok'}, max_length: {MAX_LEN}}}",
        f"model.options={{pretrained: null, config: {json.dumps(dict(TINY, vocab_size=len(tok)))}}}",
        "backend=local", "topology.n_clients=2", "data.batch_size=4", "schedule.epochs=2", "eval.every_epochs=1",
        "progress=false", "algorithm.lr=1e-3", "compute.pack_clients=true", "tune.grid={}", "device=cpu",
    ])
    summary = runner.run(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["status"] == "completed" and summary["algorithm"] == "qg_adam_v2"
    assert 0.0 <= summary["final_test_accuracy"] <= 1.0


def _tiny_run_config(root, tok, *extra, dropout=0.1):
    from qgm_ray.config import load_config

    config = dict(TINY, vocab_size=len(tok), dropout=dropout, attention_dropout=dropout, seq_classif_dropout=dropout)
    return load_config("configs/paper/agnews_qg_adam.yaml", [
        f"data.root={root}", f"data.options={{tokenizer: {root / 'tok'}, max_length: {MAX_LEN}}}",
        f"model.options={{pretrained: null, config: {json.dumps(config)}}}",
        "backend=local", "topology.n_clients=4", "data.batch_size=4", "data.alpha=10", "schedule.epochs=1",
        "progress=false", "algorithm.lr=1e-3", "tune.grid={}", "device=cpu", *extra,
    ])


@pytest.mark.ray
def test_agnews_distilbert_on_ray_matches_local_engine(nlp_root, ray_session):
    """Ray actors rebuild the tokenised dataset from the object store and DistilBERT from the
    config; 4 packed clients in one actor give the local engine's numbers.

    With dropout: a block seeds the global RNG from (seed, clients, step) around its forward
    (engine/block.py), so the dropout masks are the same in both engines."""
    from qgm_ray.runner import run as runner
    from qgm_ray.engine.local import LocalEngine
    from qgm_ray.engine.ray_engine import RayEngine

    root, tok = nlp_root
    cfg = _tiny_run_config(root, tok, "backend=ray", "ray.clients_per_actor=4", "compute.pack_clients=true",
                           "ray.cpus_per_client=0.25", dropout=0.1)
    ds, parts = runner.prepare(cfg, log=lambda m: None)
    results = {}
    for name in ("local", "ray"):
        engine = LocalEngine(cfg, ds, parts) if name == "local" else RayEngine(cfg, ds, parts, log=lambda m: None)
        try:
            results[name] = (engine.train(range(0, 4), lambda t: 1e-3), engine.evaluate())
        finally:
            engine.close()
    (la, ea), (lb, eb) = results["local"], results["ray"]
    assert len(la) == 4
    np.testing.assert_allclose([r.loss for r in la], [r.loss for r in lb], rtol=1e-5)
    assert ea.keys() == eb.keys()
    for k in ea:
        assert ea[k] == pytest.approx(eb[k], rel=1e-5, abs=1e-7), k


def test_dropout_does_not_depend_on_the_process_rng(nlp_root):
    from qgm_ray.runner import run as runner
    from qgm_ray.engine.local import LocalEngine

    root, tok = nlp_root
    cfg = _tiny_run_config(root, tok, "topology.n_clients=2", dropout=0.3)
    ds, parts = runner.prepare(cfg, log=lambda m: None)
    losses = []
    for rng_seed in (1, 2):
        torch.manual_seed(rng_seed)  # what else the process drew before the run
        engine = LocalEngine(cfg, ds, parts)
        try:
            losses.append(engine.train(range(0, 2), lambda t: 1e-3))
        finally:
            engine.close()
    assert losses[0] == losses[1]

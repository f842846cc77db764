"""Token-level exits, the token-state cache, BADGE bypasses and LECO on tiny random models."""

import torch
from conftest import middle_thresholds

from eebert_cli.model.artifact import load_artifact
from eebert_cli.backbones import Dims
from eebert_cli.scoring.threshold_search import INF
from eebert_cli.model.checkpoint import load_deployed
from eebert_cli.train.config import AttachConfig
from eebert_cli.model.cost import exit_costs
from eebert_cli.criteria import build_criterion
from eebert_cli.data import DataConfig, load_data
from eebert_cli.exits import EXITS, ExitSet, ExitSpec, Tokens
from eebert_cli.exits.leco import CANDIDATES
from eebert_cli.exits.tokens import ClsAttention
from eebert_cli.model.features import encode, extract
from eebert_cli.train.attach import attach
from eebert_cli.scoring.outputs import split_outputs
from eebert_cli.model.runtime import EarlyExitModel
from eebert_cli.train.config import TrainConfig

DIMS = Dims(num_layers=4, hidden_size=32, intermediate_size=64, num_heads=4, num_labels=3)
TOKEN_HEADS = ["attention", "max-mlp", "attn-pool", "conv", "transformer"]


def test_cls_attention_equals_full_self_attention_read_at_cls():
    torch.manual_seed(0)
    att = ClsAttention(16, 2)
    x, mask = torch.randn(3, 7, 16), torch.ones(3, 7, dtype=torch.long)
    mha = torch.nn.MultiheadAttention(16, 2, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([att.q.weight, att.k.weight, att.v.weight]))
        mha.in_proj_bias.copy_(torch.cat([att.q.bias, att.k.bias, att.v.bias]))
        mha.out_proj.weight.copy_(att.o.weight)
        mha.out_proj.bias.copy_(att.o.bias)
        full = mha(x, x, x, need_weights=False)[0][:, 0]
        assert torch.allclose(att(x, mask), full, atol=1e-5)


def test_token_heads_ignore_padding_and_count_their_flops():
    torch.manual_seed(0)
    for name in TOKEN_HEADS:
        head = EXITS.get(name)(DIMS).eval()
        h = torch.randn(2, 5, 32)
        short = head(Tokens(h, torch.ones(2, 5, dtype=torch.long)))
        padded_h = torch.cat([h, torch.randn(2, 3, 32) * 50], 1)
        mask = torch.cat([torch.ones(2, 5), torch.zeros(2, 3)], 1).long()
        assert torch.allclose(head(Tokens(padded_h, mask)), short, atol=1e-5), name
        f10, f20 = head.flops(10), head.flops(20)
        assert f20 > f10 > 0, name


def test_token_cache_holds_each_layers_states(tiny_ckpt, tiny_data):
    dep = load_deployed(tiny_ckpt)
    split = load_data(DataConfig(spec=str(tiny_data))).split("validation")
    enc = encode(dep.tokenizer, split, 32)
    feats = extract(dep.adapter, enc, [1, 3], set(), needs={1: {"tokens"}, 3: {"tokens", "mean"}})
    i = 5
    ids = torch.tensor([enc.input_ids[i]])
    hidden = dep.adapter.forward_all(ids)
    tok = feats.getter(torch.tensor([i]))("tokens", 3)
    assert tok.mask.sum() == len(enc.input_ids[i])
    assert torch.allclose(tok.hidden[0], hidden[2][0], atol=2e-3)  # fp16 storage
    assert torch.allclose(feats.for_layer("mean", 3)[i], hidden[2][0].mean(0), atol=1e-5)


def _runtime_matches_simulation(path, data_dir, texts):
    art = load_artifact(path)
    out = split_outputs(art, load_data(DataConfig(spec=str(data_dir))), "test")
    crit = build_criterion("entropy")
    scores = crit.scores(out.logits)[:, :-1]
    thresholds = middle_thresholds(scores)  # about half leave at each exit
    model = EarlyExitModel(art, crit, thresholds)
    p1 = model.predict(texts, batch_size=1)
    p8 = model.predict(texts, batch_size=8)
    assert [(a.label, a.exit_layer) for a in p1] == [(b.label, b.exit_layer) for b in p8]
    assert len({p.exit_layer for p in p1}) > 1
    return art, out


def test_token_exits_and_bypasses_run_the_same_at_inference(tiny_ckpt, tiny_data, tmp_path):
    from conftest import make_rows

    texts = [r["text"] for r in make_rows(24, seed=3)]
    cfg = AttachConfig(exits="attention", bypass={"type": "badge", "block_size": 2},
                       train=TrainConfig(epochs=3))
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), cfg, tmp_path / "a")
    art, out = _runtime_matches_simulation(tmp_path / "a", tiny_data, texts)
    # runtime logits at exit 2 match the cached-feature simulation (fp16 token cache)
    enc = encode(art.deployed.tokenizer, load_data(DataConfig(spec=str(tiny_data))).split("test"), 128)
    model = EarlyExitModel(art, build_criterion("entropy"), [-INF, INF, INF])
    logits, k = model.forward_one(torch.tensor([enc.input_ids[0]]), torch.tensor([enc.token_type_ids[0]]))
    assert k == 1 and torch.allclose(logits[0], out.logits[0, 1], atol=1e-2)


def test_bypasses_leave_the_deployed_logits_bit_identical(tiny_ckpt, tiny_data, tmp_path):
    data = DataConfig(spec=str(tiny_data))
    attach(str(tiny_ckpt), data, AttachConfig(train=TrainConfig(epochs=2)), tmp_path / "plain")
    res = attach(str(tiny_ckpt), data, AttachConfig(bypass={"type": "badge", "block_size": 2},
                                                    train=TrainConfig(epochs=2)), tmp_path / "bp")
    plain, bp = load_artifact(tmp_path / "plain"), load_artifact(tmp_path / "bp")
    assert bp.exits.bypass is not None and any(k.startswith("bypass.") for k in bp.exits.state_dict())
    assert any(p.abs().sum() > 0 for n, p in bp.exits.named_parameters() if n.endswith("mods.0.2.weight"))
    d = load_data(data)
    o_plain, o_bp = split_outputs(plain, d, "test"), split_outputs(bp, d, "test")
    assert torch.equal(o_plain.logits[:, -1], o_bp.logits[:, -1])
    never = [-INF] * len(bp.exits.layers)
    enc = encode(bp.deployed.tokenizer, d.split("test"), 128).collate(list(range(16)))
    a = EarlyExitModel(plain, build_criterion("entropy"), never).forward_batch(
        enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])[0]
    b = EarlyExitModel(bp, build_criterion("entropy"), never).forward_batch(
        enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])[0]
    assert torch.equal(a, b)
    # the cost model charges the bypass on top of each exit head
    lengths = torch.tensor([10, 20])
    with_bp = exit_costs(bp.deployed.adapter.dims, lengths, bp.exits.layers, bp.exits.flops)
    heads = exit_costs(bp.deployed.adapter.dims, lengths, bp.exits.layers, lambda k, s: bp.exits.heads[k].flops(s))
    assert (with_bp[:, :-1] > heads[:, :-1]).all()
    assert 0 < res["bypass"]["overhead_per_layer"] < 0.05


def test_leco_search_picks_a_candidate_and_retrains_that_architecture(tiny_ckpt, tiny_data, tmp_path):
    res = attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)),
                 AttachConfig(exits="leco", exit_params={"search_epochs": 1}, train=TrainConfig(epochs=1)),
                 tmp_path / "a")
    search = res["leco_search"]
    assert search["candidates"] == CANDIDATES
    for layer, probs in search["alphas"].items():
        assert abs(sum(probs.values()) - 1) < 1e-3
        assert probs[search["choices"][layer]] >= max(probs.values()) - 1e-4  # reported probs are rounded
    art = load_artifact(tmp_path / "a")
    assert art.config["exits"]["type"] == "leco"
    assert art.exits.describe() == [search["choices"][str(l)] for l in art.exits.layers]
    for head, layer in zip(art.exits.heads, art.exits.layers):
        assert isinstance(head, EXITS.get(search["choices"][str(layer)]))
    assert art.config["leco_search"]["choices"] == search["choices"]


def test_leco_spec_builds_per_layer_types():
    exits = ExitSet(ExitSpec("leco", [1, 2], {"choices": {"1": "linear", "2": "conv"}}), DIMS)
    assert exits.describe() == ["linear", "conv"] and exits.reduction is None
    assert exits.needs() == {1: {"cls"}, 2: {"tokens"}}

"""ModernBERT specifics: sliding-window masks through prepare/select, both attention paths, and the cost model.

The family tests (tests/test_families.py) already run both poolings ("modernbert" = cls,
"modernbert-mean") through exact logits, attach/calibrate/benchmark and per-sample batching.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification
from transformers.masking_utils import create_bidirectional_sliding_window_mask
from typer.testing import CliRunner

from conftest import make_model
from eebert_cli.backbones import adapter_for
from eebert_cli.model.checkpoint import load_deployed
from eebert_cli.cli import app
from eebert_cli.model.cost import attended_pairs, full_cost, layer_costs, layer_flops

TEXTS = ["good movie", "the plot was very dull and the acting was poor not great", "nice film",
         "the acting was not very good but the plot is fine"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("modernbert")
    return {f: make_model(root / f, f, seed=2) for f in ("modernbert", "modernbert-mean")}


def run_layers(ad, ids, mask):
    h = ad.embed(ids, mask)
    state = ad.prepare(h, mask)
    for i in range(ad.dims.num_layers):
        h = ad.layer(i, h, state)
    return h, state


def test_the_tiny_config_exercises_what_makes_modernbert_different(ckpts):
    dep = load_deployed(ckpts["modernbert"])
    cfg = dep.model.config
    assert cfg.layer_types == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    rope = cfg.rope_parameters
    assert rope["full_attention"]["rope_theta"] != rope["sliding_attention"]["rope_theta"]
    assert dep.adapter.dims.attention_spans == (None, 2, 2, None) and dep.adapter.dims.ffn_matrices == 3
    batch = dep.tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert "token_type_ids" not in batch and batch["input_ids"].shape[1] > cfg.local_attention + 1
    with torch.no_grad():
        ref = dep.model(**batch).logits
        cfg.local_attention = 64  # the window now covers every input: local attention becomes global
        wide = dep.model(**batch).logits
        ours = dep.adapter.head(run_layers(dep.adapter, batch["input_ids"], batch["attention_mask"])[0],
                                batch["attention_mask"])
    assert (ref - wide).abs().max() > 1e-3, "the window must matter on the test inputs"
    assert (ours - wide).abs().max() <= 1e-5  # the adapter reads the window from the config, as the model does


@pytest.mark.parametrize("family", ["modernbert", "modernbert-mean"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_both_padded_attention_paths_reproduce_the_logits(ckpts, family, attn):
    model = AutoModelForSequenceClassification.from_pretrained(ckpts[family], attn_implementation=attn).eval()
    ad = adapter_for(model)
    assert model.config._attn_implementation == attn
    tok = load_deployed(ckpts[family]).tokenizer
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    one = tok(TEXTS[1:2], return_tensors="pt")
    with torch.no_grad():
        for b, mask in ((batch, batch["attention_mask"]), (one, None)):
            ref = model(**b).logits
            assert (ad.head(run_layers(ad, b["input_ids"], mask)[0], mask) - ref).abs().max().item() <= 1e-5


def test_an_unpadded_flash_checkpoint_runs_on_the_padded_path(ckpts):
    model = AutoModelForSequenceClassification.from_pretrained(ckpts["modernbert"]).eval()
    model.config._attn_implementation = "flex_attention"  # stands in for flash attention (not installed here)
    adapter_for(model)
    assert model.config._attn_implementation == "sdpa"


def test_rows_leaving_a_batch_keep_their_sliding_window_masks(ckpts):
    ad = load_deployed(ckpts["modernbert-mean"]).adapter
    tok = load_deployed(ckpts["modernbert-mean"]).tokenizer
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rows = torch.tensor([3, 1])
    with torch.no_grad():
        h = ad.embed(ids, mask)
        state = ad.prepare(h, mask)
        h = ad.layer(0, h, state)  # one layer with every row, then two rows go on
        kept = ad.select(state, rows)
        assert kept["sliding_attention"].shape[0] == 2 and kept["rope"] is state["rope"]
        sub = h[rows]
        for i in range(1, ad.dims.num_layers):
            h = ad.layer(i, h, state)
            sub = ad.layer(i, sub, kept)
        assert torch.allclose(sub, h[rows], atol=1e-6)
        assert torch.allclose(ad.head(sub, mask[rows]), ad.head(h, mask)[rows], atol=1e-6)


def test_export_state_builds_the_same_masks_as_transformers(ckpts):
    ad = load_deployed(ckpts["modernbert"]).adapter
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5])
    h = ad.embed(torch.full((2, 9), 7), mask)
    ref, ours = ad.prepare(h, mask), ad.export_state(h, mask)
    for kind in ("full_attention", "sliding_attention"):
        want = ref[kind].expand(2, 1, 9, 9)
        got = (ours[kind] == 0).expand(2, 1, 9, 9)  # additive: 0 where a query attends
        real = mask.bool()[:, None, :, None]  # rows of padding queries are free (their output is never read)
        assert torch.equal(got & real, want & real), kind


def test_sliding_window_cost_counts_the_window(ckpts):
    dims = load_deployed(ckpts["modernbert"]).adapter.dims
    h = dims.hidden_size
    # attended pairs are exactly the pairs transformers' sliding-window mask lets through
    cfg = load_deployed(ckpts["modernbert"]).model.config
    for t in (1, 2, 3, 5, 12):
        m = create_bidirectional_sliding_window_mask(config=cfg, inputs_embeds=torch.zeros(1, t, h),
                                                     attention_mask=torch.ones(1, t, dtype=torch.long))
        n = t * t if m is None else int(m.sum())
        assert attended_pairs(torch.tensor([float(t)]), cfg.sliding_window).item() == n
    full = type(dims)(dims.num_layers, h, dims.intermediate_size, dims.num_heads, dims.num_labels,
                      ffn_matrices=dims.ffn_matrices)  # the same shapes with every layer global
    # 3 tokens fit in a window of 2 either side; 200 do not
    short, long = torch.tensor([3.0], dtype=torch.float64), torch.tensor([200.0], dtype=torch.float64)
    assert torch.equal(layer_flops(dims, short, 1), layer_flops(full, short, 1))
    assert torch.equal(full_cost(dims, short), full_cost(full, short))
    assert layer_flops(dims, long, 1) < layer_flops(full, long, 1)
    assert torch.equal(layer_flops(dims, long, 0), layer_flops(full, long, 0))  # global layers unchanged
    # attention scores + weighted sum: 4 * T * min(T, window) * h, up to the edges of the input
    saved = layer_flops(full, long, 1) - layer_flops(dims, long, 1)
    assert saved.item() == 4 * h * (200 * 200 - (200 * 5 - 2 * 3))  # 5 keys a query, fewer at both ends
    assert torch.allclose(full_cost(full, long) - full_cost(dims, long), 2 * saved)


def test_the_cost_models_matrices_are_the_layers_weights(ckpts):
    dep = load_deployed(ckpts["modernbert"])
    d, layer = dep.adapter.dims, dep.model.model.layers[1]
    h, f = d.hidden_size, d.intermediate_size
    assert sum(p.numel() for p in layer.mlp.parameters()) == d.ffn_matrices * h * f  # GLU: Wi is h x 2f
    assert sum(p.numel() for p in layer.attn.parameters()) == 4 * h * h
    seq = torch.tensor([2.0])  # no window effect: projections + FFN + 4 * T * T * h
    assert layer_costs(d, seq)[0, 1].item() == 2 * 2 * (4 * h * h + 3 * h * f) + 4 * 4 * h


def test_other_families_cost_what_they_did(tiny_ckpt):
    d = load_deployed(tiny_ckpt).adapter.dims
    assert d.attention_spans == () and d.ffn_matrices == 2
    seq = torch.tensor([7.0, 130.0], dtype=torch.float64)
    h, f = d.hidden_size, d.intermediate_size
    want = 2 * seq * (4 * h * h + 2 * h * f) + 4 * seq * seq * h
    assert torch.equal(layer_costs(d, seq), want[:, None].expand(2, d.num_layers))


def test_eebert_list_shows_modernbert():
    r = CliRunner().invoke(app, ["list", "--json"])
    assert json.loads(r.stdout)["backbones"]["modernbert"]["model_types"] == ["modernbert"]

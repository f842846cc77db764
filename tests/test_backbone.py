import pytest
import torch

from eebert_cli.backbones import adapter_for
from eebert_cli.model.checkpoint import load_deployed
from eebert_cli.core.errors import EebertError


def _padded_batch(tok):
    texts = ["good movie", "the plot was very dull and the acting was poor not great", "nice"]
    return tok(texts, padding=True, return_tensors="pt")


def test_layer_by_layer_reproduces_deployed_logits_on_padded_batches(tiny_ckpt):
    dep = load_deployed(tiny_ckpt)
    batch = _padded_batch(dep.tokenizer)
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    with torch.no_grad():
        ref = dep.model(**batch).logits
        ad = dep.adapter
        h = ad.embed(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        state = ad.prepare(h, batch["attention_mask"])
        for i in range(ad.dims.num_layers):
            h = ad.layer(i, h, state)
        ours = ad.head(h, batch["attention_mask"])
    assert (ours - ref).abs().max().item() <= 1e-5


def test_unpadded_single_example_matches_too(tiny_ckpt):
    dep = load_deployed(tiny_ckpt)
    ids = dep.tokenizer(["the film was great"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = dep.model(input_ids=ids).logits
        h = dep.adapter.embed(ids, None)
        for i in range(dep.adapter.dims.num_layers):
            h = dep.adapter.layer(i, h, dep.adapter.prepare(h, None))
        assert (dep.adapter.head(h, None) - ref).abs().max().item() <= 1e-5


def test_dims_are_read_from_the_config(tiny_ckpt):
    dims = load_deployed(tiny_ckpt).adapter.dims
    assert (dims.num_layers, dims.hidden_size, dims.intermediate_size, dims.num_labels) == (4, 32, 64, 2)


def test_unsupported_architecture_names_the_supported_ones():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(EebertError) as e:
        adapter_for(model)
    msg = e.value.message
    assert "gpt2" in msg and "\n" not in msg
    for t in ("albert", "bert", "camembert", "deberta-v2", "distilbert", "electra", "modernbert", "mpnet", "roberta",
              "xlm-roberta"):
        assert t in msg

import pytest
import torch

from eebert_cli.backbones import Dims
from eebert_cli.model.checkpoint import load_deployed
from eebert_cli.core.errors import EebertError
from eebert_cli.exits import EXITS, ExitSet, ExitSpec, reduce
from eebert_cli.exits.base import Mlp

DIMS = Dims(num_layers=4, hidden_size=16, intermediate_size=32, num_heads=2, num_labels=3)


# LECO's heads are its candidates', one per layer, chosen by its search (tests/test_registry_contract.py runs it)
@pytest.mark.parametrize("name", [n for n in EXITS.names() if n != "leco"])
def test_every_registered_head_maps_its_reduction_to_logits(name):
    """Logits of the task's shape from the reduction the head names, whatever lies under padding."""
    head = EXITS.get(name)(DIMS).eval()
    per_token = head.reduction == "word"
    hidden = torch.randn(5, 7, 16)
    mask = torch.ones(5, 7, dtype=torch.long)
    mask[1, 4:] = 0
    logits = head(reduce(head.reduction, hidden, mask))
    assert logits.shape == ((5, 7, 3) if per_token else (5, 3))
    assert torch.isfinite(logits).all() and head.flops(7) > 0
    noisy = hidden.clone()
    noisy[1, 4:] = 1e3 * torch.randn(3, 16)
    again = head(reduce(head.reduction, noisy, mask))
    mine = (lambda x: x[1, :4]) if per_token else (lambda x: x[1])  # noqa: E731 - the padded row's own answer
    torch.testing.assert_close(mine(again), mine(logits))


def test_mlp_fast_path_is_the_sequential_it_replaced():
    """The exits' MLP calls its layers' functions directly (batch-1 speed); artifacts saved with the
    plain Sequential (keys 0.*, 3.*) load into it, and it computes what that Sequential computed."""
    torch.manual_seed(0)
    old = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.GELU(), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    new = Mlp(16, 8, 3, 0.5)
    assert list(new.state_dict()) == list(old.state_dict())
    new.load_state_dict(old.state_dict())
    x = torch.randn(4, 16)
    old.eval(), new.eval()
    assert torch.equal(new(x), old(x))
    assert torch.equal(new.encode(x), old[:3](x))
    new.train()  # dropout still applies while training
    torch.manual_seed(1)
    dropped = new.encode(x)
    assert (dropped == 0).any() and not torch.equal(dropped, new.eval().encode(x))


def test_mean_reduction_ignores_padding():
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    got = reduce("mean", hidden, mask)
    assert torch.allclose(got[0], hidden[0, :2].mean(0))
    assert torch.allclose(got[1], hidden[1].mean(0))
    assert torch.allclose(reduce("mean", hidden[1:], None), got[1:])


def test_pooler_mlp_starts_from_the_models_pooler(tiny_ckpt):
    dep = load_deployed(tiny_ckpt)
    exits = ExitSet(ExitSpec("pooler-mlp", [1, 2]), dep.adapter.dims)
    exits.init_from(dep.adapter)
    for head in exits.heads:
        assert torch.equal(head.dense.weight, dep.adapter.pooler().weight)


def test_unknown_exit_type_is_a_clear_error():
    with pytest.raises(EebertError) as e:
        ExitSet(ExitSpec("nope", [1]), DIMS)
    assert "mean-mlp" in e.value.hint

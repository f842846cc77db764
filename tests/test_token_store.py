"""TokenStore.batch: the unpadded token states of any rows, re-padded exactly (exits train on these)."""

import torch

from eebert_cli.model.features import TokenStore


def test_a_batch_repads_each_rows_tokens_exactly_and_masks_the_rest():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([3, 1, 7, 4, 2])
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
    offsets[1:] = lengths.cumsum(0)
    states = torch.randn(int(offsets[-1]), 3, 8, generator=gen).half()  # [sum T, layers, H], 16-bit as stored
    store = TokenStore(states, offsets)
    rows = torch.tensor([2, 0, 4, 0])  # any order, repeats allowed
    got = store.batch(1, rows)
    assert got.hidden.shape == (4, 7, 8) and got.hidden.dtype == torch.float32
    for r, row in enumerate(rows.tolist()):
        a, n = int(offsets[row]), int(lengths[row])
        assert torch.equal(got.hidden[r, :n], states[a:a + n, 1].float())
        assert torch.equal(got.mask[r], (torch.arange(7) < n).long())
        assert not got.hidden[r, n:].any()  # padding is zeros
    empty = store.batch(0, torch.tensor([], dtype=torch.long))
    assert empty.hidden.shape == (0, 0, 8) and empty.mask.shape == (0, 0)

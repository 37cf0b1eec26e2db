"""Vector quantiser: nearest codes, straight-through gradient, statistics, revival."""

import pytest
import torch

from caloforge.models import VectorQuantizer
from caloforge.models.autoencoders import QuantizerLosses

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_nearest_code_and_decode_indices():
    torch.manual_seed(0)
    q = VectorQuantizer(8, 3)
    with torch.no_grad():
        q.codebook.weight.copy_(torch.randn(8, 3))
    z = torch.randn(4, 3, 5)
    zq, idx, losses = q(z)
    assert zq.shape == z.shape and idx.shape == (4, 5) and idx.dtype == torch.long
    assert isinstance(losses, QuantizerLosses)
    # brute force nearest neighbour
    flat = z.permute(0, 2, 1).reshape(-1, 3)
    ref = torch.cdist(flat, q.codebook.weight).argmin(1).view(4, 5)
    assert torch.equal(idx, ref)
    torch.testing.assert_close(q.decode_indices(idx), zq)


def test_straight_through_gradient_reaches_the_encoder():
    torch.manual_seed(1)
    enc = torch.nn.Conv1d(2, 4, 1)
    q = VectorQuantizer(16, 4)
    x = torch.randn(3, 2, 6)
    z = enc(x)
    zq, _, losses = q(z)
    # a loss on the quantised output alone (no commitment term) must still train the encoder
    (zq**2).sum().backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0
    # and the gradient is copied unchanged: d/dz of sum(zq * w) is w
    z2 = torch.randn(2, 4, 3, requires_grad=True)
    w = torch.randn(2, 4, 3)
    (q(z2)[0] * w).sum().backward()
    torch.testing.assert_close(z2.grad, w)


def test_codebook_and_commitment_terms_move_the_right_tensors():
    torch.manual_seed(2)
    q = VectorQuantizer(8, 2)
    z = torch.randn(4, 2, 3, requires_grad=True)
    _, _, losses = q(z)
    losses.codebook.backward()
    assert z.grad is None and q.codebook.weight.grad.abs().sum() > 0
    q.zero_grad()
    z = torch.randn(4, 2, 3, requires_grad=True)
    _, _, losses = q(z)
    losses.commitment.backward()
    assert z.grad.abs().sum() > 0 and (
        q.codebook.weight.grad is None or q.codebook.weight.grad.abs().sum() == 0
    )
    torch.testing.assert_close(
        losses.codebook, losses.commitment
    )  # same value, different gradients


def test_perplexity_and_usage():
    q = VectorQuantizer(4, 1)
    with torch.no_grad():
        q.codebook.weight.copy_(torch.tensor([[0.0], [1.0], [2.0], [3.0]]))
    z = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 4)  # every code once
    _, _, l1 = q(z)
    torch.testing.assert_close(l1.perplexity, torch.tensor(4.0))
    torch.testing.assert_close(l1.usage, torch.tensor(1.0))
    _, _, l2 = q(torch.zeros(1, 1, 4))  # a single code
    torch.testing.assert_close(l2.perplexity, torch.tensor(1.0))
    torch.testing.assert_close(l2.usage, torch.tensor(0.25))


def test_dead_code_revival_is_a_switch():
    torch.manual_seed(3)
    for revive in (False, True):
        q = VectorQuantizer(
            32, 2, revive_dead_codes=revive, dead_code_threshold=0.5, usage_decay=0.5
        ).train()
        before = q.codebook.weight.detach().clone()
        z = torch.randn(2, 2, 10) + 5.0  # far from the small initial codes: one code wins
        for _ in range(4):
            q(z)
        changed = (q.codebook.weight.detach() != before).any(1).sum().item()
        if revive:
            assert changed > 1
            # revived codes sit on encoder outputs, so more codes are now used
            _, _, losses = q(z)
            assert losses.usage > 1 / 32
        else:
            assert changed == 0
            assert q.codebook_usage() < 1.0

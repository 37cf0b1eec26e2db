"""Encoder-decoder transformer: causality and cached incremental decoding."""

import pytest
import torch

from caloforge.nn import EncoderDecoderTransformer

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def _model(norm_first=False, dropout=0.0):
    torch.manual_seed(0)
    return EncoderDecoderTransformer(
        16, 4, 2, 3, 32, dropout=dropout, norm_first=norm_first
    ).double()


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("max_len", [None, 6, 9])
def test_incremental_decoding_equals_full_pass(norm_first, max_len):
    m = _model(norm_first, dropout=0.2).eval()  # eval: dropout off, as in sampling
    src = torch.randn(3, 2, 16, dtype=torch.float64)
    tgt = torch.randn(3, 6, 16, dtype=torch.float64)
    full = m(src, tgt)
    assert full.shape == (3, 6, 16)
    state = m.start(src, max_len=max_len)
    steps = []
    for i in range(6):
        assert state.length == i
        steps.append(m.step(state, tgt[:, i]))
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-10, atol=1e-10)
    # the memory keys/values were computed once, one pair per decoder layer
    assert len(state.memory_kv) == 3 and state.memory_kv[0][0].shape == (3, 4, 2, 4)


def test_decoder_is_causal_and_sees_the_memory():
    m = _model().eval()
    src = torch.randn(2, 3, 16, dtype=torch.float64)
    tgt = torch.randn(2, 5, 16, dtype=torch.float64)
    out = m(src, tgt)
    tgt2 = tgt.clone()
    tgt2[:, 2] += 1.0
    out2 = m(src, tgt2)
    torch.testing.assert_close(out2[:, :2], out[:, :2], rtol=0, atol=0)
    assert (out2[:, 2:] - out[:, 2:]).abs().amax(-1).min() > 1e-6  # every later position moves
    src2 = src.clone()
    src2[:, 1] += 1.0
    assert (m(src2, tgt) - out).abs().amax(-1).min() > 1e-6  # every position sees the memory


def test_every_parameter_gets_a_gradient():
    m = _model(dropout=0.1).train()
    src = torch.randn(2, 3, 16, dtype=torch.float64)
    tgt = torch.randn(2, 4, 16, dtype=torch.float64)
    (m(src, tgt) ** 2).mean().backward()
    missing = [k for k, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_bad_arguments():
    with pytest.raises(ValueError):
        EncoderDecoderTransformer(10, 3, 1, 1, 8)
    with pytest.raises(ValueError):
        EncoderDecoderTransformer(8, 2, 0, 1, 8)
    with pytest.raises(ValueError):
        EncoderDecoderTransformer(8, 2, 1, 1, 8, activation="tanh")

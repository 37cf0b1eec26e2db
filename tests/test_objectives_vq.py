"""Stage-1 objective (Eq. 2 in x space), physics-aware term, and a tiny VQ-VAE that learns."""

import math

import pytest
import torch

from caloforge.models import CylindricalVQVAE, VQVAEConfig
from caloforge.models.autoencoders import QuantizerLosses, VQVAEOutput
from caloforge.objectives import PhysicsAwareLoss, VQObjective, fractions_from_x, x_from_fractions

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_x_space_mapping_round_trip_and_range():
    f = torch.tensor([0.0, 1e-4, 0.3, 1.0], dtype=torch.float64)
    x = x_from_fractions(f, 1.0, 3000.0, 7.0)
    torch.testing.assert_close(fractions_from_x(x, 1.0, 3000.0, 7.0), f)
    assert x[0] == 0.0 and math.isclose(float(x[-1]), math.log(3001.0) / 7.0)
    assert math.isclose(VQObjective().x_max, 1.1439, abs_tol=1e-4)  # Calo-VQ's x_max for ds2 (docs/calovq.md)


def _fake_output(f, codebook, commitment):
    q = QuantizerLosses(
        torch.tensor(codebook), torch.tensor(commitment), torch.tensor(1.0), torch.tensor(1.0)
    )
    return VQVAEOutput(f, torch.log(f), torch.zeros(1, dtype=torch.long), q)


def test_terms_and_beta():
    f_true = torch.tensor([[0.5, 0.25, 0.25]])
    x = x_from_fractions(f_true, 1.0, 3000.0, 7.0)
    obj = VQObjective(beta=1.0)
    t = obj.terms(x, _fake_output(f_true, 0.3, 0.3))
    assert float(t["rec"]) == 0.0
    torch.testing.assert_close(t["loss"], torch.tensor(0.6))
    t2 = VQObjective(beta=0.25).terms(x, _fake_output(f_true, 0.3, 0.3))
    torch.testing.assert_close(t2["loss"], torch.tensor(0.3 + 0.075))
    f_bad = torch.tensor([[0.25, 0.5, 0.25]])
    rec = obj.terms(x, _fake_output(f_bad, 0.0, 0.0))["rec"]
    expected = ((x_from_fractions(f_bad, 1, 3000, 7) - x) ** 2).mean()
    torch.testing.assert_close(rec, expected)
    assert set(t) == {"loss", "rec", "codebook", "commitment", "physics", "perplexity", "usage"}


def test_physics_aware_term_off_by_default_and_sensitive_to_shifts():
    # one layer of 4 voxels on a line; eta = position, phi = 0
    eta = torch.tensor([-1.5, -0.5, 0.5, 1.5])
    phi = torch.zeros(4)
    layer = torch.zeros(4, dtype=torch.long)
    phys = PhysicsAwareLoss(eta, phi, layer)
    f = torch.tensor([[0.1, 0.6, 0.2, 0.1]])
    assert float(phys(f, f)) < 1e-6
    shifted = torch.roll(f, 1, -1)
    assert float(phys(shifted, f)) > 0.05
    x = x_from_fractions(f, 1.0, 3000.0, 7.0)
    out = _fake_output(shifted, 0.0, 0.0)
    off = VQObjective(physics=phys).terms(x, out)  # weight 0: the paper's objective
    on = VQObjective(physics=phys, physics_weight=2.0).terms(x, out)
    assert float(off["physics"]) == 0.0
    torch.testing.assert_close(on["loss"], off["loss"] + 2.0 * on["physics"])


def _synthetic_showers(n: int, gen: torch.Generator):
    """Gaussian blobs on a (C=3, Z=6, A=8) cylinder; position depends on the condition."""
    cond = torch.rand(n, 1, generator=gen)
    z = torch.arange(6.0)[None, :, None]
    a = torch.arange(8.0)[None, None, :]
    zc = 1.0 + 3.0 * cond[:, :, None]
    ac = torch.randint(0, 8, (n, 1, 1), generator=gen).float()
    da = torch.minimum((a - ac).abs(), 8 - (a - ac).abs())
    blob = torch.exp(-((z - zc) ** 2) / 2.0 - da**2 / 1.5)  # (n, Z, A)
    radial = torch.tensor([1.0, 0.4, 0.1])[None, :, None, None]
    e = blob[:, None] * radial
    f = e / e.sum((1, 2, 3), keepdim=True)
    return x_from_fractions(f, 1.0, 3000.0, 7.0), cond


def test_tiny_vqvae_stage1_loss_falls():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x, cond = _synthetic_showers(64, gen)
    cfg = VQVAEConfig(
        in_channels=3,
        n_layers=6,
        n_alpha=8,
        channels=(16, 16),
        resolutions=((4, 4), (3, 2)),
        vq_dim=8,
        n_codes=32,
        cond_dim=4,
        cond_hidden_dim=16,
        attention=True,
        n_heads=1,
    )
    model = CylindricalVQVAE(cfg)
    obj = VQObjective(a=1.0, b=3000.0, c=7.0, beta=0.25)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = {"x": x, "cond": cond}
    with torch.no_grad():
        first = float(obj(model, batch)["rec"])
    for _ in range(60):
        terms = obj(model, batch)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    with torch.no_grad():
        last = obj(model.eval(), batch)
    assert float(last["rec"]) < 0.5 * first
    assert float(last["perplexity"]) > 1.0

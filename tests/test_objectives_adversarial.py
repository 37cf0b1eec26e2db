"""GAN losses, the adaptive weight on a toy case, warm-up, and the VQGAN objective."""

import math

import pytest
import torch

from caloforge.models import (
    CylindricalDiscriminator,
    CylindricalDiscriminatorConfig,
    CylindricalVQVAE,
    VQVAEConfig,
)
from caloforge.objectives import (
    VQGANObjective,
    VQObjective,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    warmup_factor,
)

# tiny tensors: one torch thread (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_bce_gan_losses_known_values():
    zero = torch.zeros(5)
    torch.testing.assert_close(discriminator_loss(zero, zero), torch.tensor(2 * math.log(2)))
    torch.testing.assert_close(generator_loss(zero), torch.tensor(math.log(2)))
    # a confident, correct discriminator has a small loss; the fooled generator a large one
    assert float(discriminator_loss(torch.full((3,), 10.0), torch.full((3,), -10.0))) < 1e-3
    assert float(generator_loss(torch.full((3,), -10.0))) > 9.9


def test_adaptive_weight_toy_case():
    # W = last layer; rec = <W, a>, gan = 2 <W, b>: grads a and 2b
    w = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    a = torch.tensor([3.0, 0.0, 4.0])  # |a| = 5
    b = torch.tensor([0.0, 1.0, 0.0])  # |2b| = 2
    lam = adaptive_weight((w * a).sum(), 2 * (w * b).sum(), w)
    torch.testing.assert_close(lam, torch.tensor(5.0 / (2.0 + 1e-4)))
    assert not lam.requires_grad
    # clamp: a vanishing GAN gradient gives at most max_weight
    lam2 = adaptive_weight((w * a).sum(), 0.0 * (w * b).sum(), w, max_weight=100.0)
    torch.testing.assert_close(lam2, torch.tensor(100.0))


def test_warmup_factor():
    assert warmup_factor(0, 10) == 0.0 and warmup_factor(9, 10) == 0.0
    assert warmup_factor(10, 10) == 1.0
    assert warmup_factor(10, 10, ramp=4) == 0.25 and warmup_factor(20, 10, ramp=4) == 1.0


def _tiny():
    torch.manual_seed(0)
    cfg = VQVAEConfig(
        in_channels=2,
        n_layers=4,
        n_alpha=6,
        channels=(8,),
        resolutions=((2, 3),),
        vq_dim=4,
        n_codes=8,
        attention=False,
        cond_dim=2,
        cond_hidden_dim=4,
    )
    model = CylindricalVQVAE(cfg)
    disc = CylindricalDiscriminator(
        CylindricalDiscriminatorConfig(in_channels=2, channels=(8, 8), cond_dim=4)
    )
    x = torch.rand(3, 2, 4, 6) * 0.3
    return model, disc, {"x": x, "cond": torch.rand(3, 1)}


def test_vqgan_objective_warmup_and_gradients():
    model, disc, batch = _tiny()
    obj = VQGANObjective(vq=VQObjective(), disc_start=5)
    assert not obj.discriminator_active(4) and obj.discriminator_active(5)
    g = obj.generator_terms(model, disc, batch, step=0)
    assert float(g["gan"]) == 0.0 and float(g["lambda"]) == 0.0
    torch.testing.assert_close(g["loss"], g["rec"] + g["codebook"] + g["commitment"])
    d = obj.discriminator_terms(model, disc, batch, step=0, x_fake=g["x_fake"])
    assert float(d["loss"].detach()) == 0.0

    g = obj.generator_terms(model, disc, batch, step=5)
    assert float(g["lambda"]) > 0.0
    expected = g["rec"] + g["codebook"] + g["commitment"] + g["lambda"] * g["gan"]
    torch.testing.assert_close(g["loss"], expected)
    # lambda equals the ratio of gradient norms at the decoder's last layer
    out = model(batch["x"], batch["cond"])
    rec = obj.vq.reconstruction(batch["x"], out.fractions)
    x_fake = torch.log(1 + 3000 * out.fractions) / 7
    gan = generator_loss(disc(x_fake, batch["cond"]))
    gr = torch.autograd.grad(rec, model.last_layer, retain_graph=True)[0].norm()
    gg = torch.autograd.grad(gan, model.last_layer)[0].norm()
    torch.testing.assert_close(g["lambda"], gr / (gg + 1e-4))
    # the generator loss does not train the discriminator's parameters through x_fake
    disc.zero_grad()
    model.zero_grad()
    g["loss"].backward()
    assert model.last_layer.grad.abs().sum() > 0
    d = obj.discriminator_terms(model, disc, batch, step=5, x_fake=g["x_fake"])
    model.zero_grad()
    disc.zero_grad()
    d["loss"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())
    assert sum(p.grad.abs().sum() for p in disc.parameters() if p.grad is not None) > 0
    # without gradients (validation) the objective still runs
    with torch.no_grad():
        v = obj.generator_terms(model, disc, batch, step=5)
    assert float(v["lambda"]) == 0.0 and float(v["gan"]) > 0.0


def test_adaptive_weight_matches_a_hand_computation_on_a_tiny_network():
    """Two-layer network y = W tanh(A x); rec = mean((y - t)^2), gan = mean(softplus(-v.y)).
    The gradients at the last layer W are written out by hand (no autograd)."""
    torch.manual_seed(5)
    n, k, m = 4, 3, 2
    x, t, v = torch.randn(n, 5), torch.randn(n, m), torch.randn(m)
    A = torch.randn(k, 5, requires_grad=True)
    W = torch.randn(m, k, requires_grad=True)
    h = torch.tanh(x @ A.t())  # (n, k)
    y = h @ W.t()  # (n, m)
    rec = ((y - t) ** 2).mean()
    s = y @ v  # discriminator logits (n,)
    gan = torch.nn.functional.softplus(-s).mean()
    with torch.no_grad():
        g_rec = 2.0 / (n * m) * (y - t).t() @ h  # d rec / dW, (m, k)
        dsig = -torch.sigmoid(-s) / n  # d gan / d s_i
        g_gan = torch.outer(v, (dsig[:, None] * h).sum(0))  # d gan / dW
        expected = g_rec.norm() / (g_gan.norm() + 1e-4)
    lam = adaptive_weight(rec, gan, W)
    torch.testing.assert_close(lam, expected, rtol=1e-6, atol=0.0)
    assert not lam.requires_grad
    # the clamp: the same losses with max_weight below lambda
    assert float(adaptive_weight(rec, gan, W, max_weight=0.5 * float(expected))) == pytest.approx(
        0.5 * float(expected))


def test_discriminator_contributes_once_warmed_up():
    """After the warm-up the generator loss holds lambda * L_GAN with lambda of the
    reconstruction's scale: at the decoder's last layer the weighted adversarial gradient
    has disc_weight times the norm of the reconstruction gradient, also after the
    discriminator has trained and wins (when lambda itself becomes small)."""
    model, disc, batch = _tiny()
    obj = VQGANObjective(vq=VQObjective(), disc_weight=0.5, disc_start=3)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-2)
    for step in range(3, 40):
        g = obj.generator_terms(model, disc, batch, step)
        d = obj.discriminator_terms(model, disc, batch, step, x_fake=g["x_fake"])
        opt_d.zero_grad()
        d["loss"].backward()
        opt_d.step()
    assert float(d["logits_real"]) > float(d["logits_fake"])  # the discriminator learned
    g = obj.generator_terms(model, disc, batch, step=40)
    assert float(g["gan"]) > 0.0 and float(g["lambda"]) > 0.0
    adversarial = g["loss"] - (g["rec"] + g["codebook"] + g["commitment"])
    torch.testing.assert_close(adversarial, 0.5 * g["lambda"] * g["gan"])
    assert float(adversarial.detach()) > 1e-2 * float(g["rec"].detach())  # not negligible
    # disc_weight * |g_gan| / (|g_gan| + delta): 0.5 up to delta's share of the norm
    torch.testing.assert_close(g["gan_grad_ratio"], torch.tensor(0.5), rtol=1e-2, atol=0.0)
    # the same ratio, measured directly on the gradients the optimiser will see
    w = model.last_layer
    g_adv = torch.autograd.grad(adversarial, w, retain_graph=True)[0]
    g_rec = torch.autograd.grad(g["rec"], w)[0]
    assert float(g_adv.norm() / g_rec.norm()) == pytest.approx(float(g["gan_grad_ratio"]),
                                                               rel=1e-4)
    before = obj.generator_terms(model, disc, batch, step=2)
    assert float(before["gan_grad_ratio"]) == 0.0 and float(before["lambda"]) == 0.0

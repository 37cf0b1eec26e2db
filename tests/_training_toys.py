"""Toy stages shared by the training tests (and the torchrun DDP script)."""

from __future__ import annotations

import torch

from caloforge.training import TensorDictDataset


def regression_data(n: int = 256, seed: int = 0) -> TensorDictDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    y = x @ w + 0.05 * torch.randn(n, 1, generator=g)
    return TensorDictDataset(x=x, y=y)


class RegressionStage:
    """MLP regression with dropout and input noise, so the training uses the global RNG."""

    name = "regressor"

    def __init__(self, seed: int = 0, crash_at: int | None = None) -> None:
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 1)
        )
        self.crash_at = crash_at

    def modules(self):
        return {"net": self.net}

    def optimizer_groups(self):
        return {"main": list(self.net.parameters())}

    def training_step(self, batch, step):
        if self.crash_at is not None and step == self.crash_at:
            raise KeyboardInterrupt("simulated interruption")
        x = batch["x"] + 0.01 * torch.randn_like(batch["x"])
        loss = torch.nn.functional.mse_loss(self.net(x), batch["y"])
        return {"main": loss, "abs_err": (self.net(x) - batch["y"]).abs().mean().detach()}

    def validation_step(self, batch):
        return {"mse": float(torch.nn.functional.mse_loss(self.net(batch["x"]), batch["y"]))}


class ToyGANStage:
    """1-D GAN: generator a*z + b against a small MLP discriminator (two optimisers)."""

    name = "gan"

    def __init__(self, seed: int = 0, disc_start: int = 0) -> None:
        torch.manual_seed(seed)
        self.gen = torch.nn.Linear(1, 1)
        self.disc = torch.nn.Sequential(
            torch.nn.Linear(1, 16), torch.nn.LeakyReLU(0.2), torch.nn.Linear(16, 1)
        )
        self.disc_start = disc_start
        self.calls: list[tuple[int, tuple[str, ...]]] = []

    def modules(self):
        return {"generator": self.gen, "discriminator": self.disc}

    def optimizer_groups(self):
        return {
            "generator": list(self.gen.parameters()),
            "discriminator": list(self.disc.parameters()),
        }

    def training_step(self, batch, step):
        real = batch["x"]
        fake = self.gen(torch.randn_like(real))
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        g_loss = bce(self.disc(fake), torch.ones_like(real))
        out = {"generator": g_loss, "fake_mean": fake.mean().detach()}
        if step >= self.disc_start:
            d_real, d_fake = self.disc(real), self.disc(fake.detach())
            out["discriminator"] = bce(d_real, torch.ones_like(real)) + bce(
                d_fake, torch.zeros_like(real)
            )
        self.calls.append((step, tuple(k for k in out if k in ("generator", "discriminator"))))
        return out

    def validation_step(self, batch):
        with torch.no_grad():
            fake = self.gen(torch.randn_like(batch["x"]))
        return {"mean_gap": float((fake.mean() - batch["x"].mean()).abs())}

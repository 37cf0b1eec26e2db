"""Classifier two-sample tests, as in the CaloChallenge.

A fully connected network learns to tell generated (label 1) from reference (label 0)
showers with binary cross-entropy. The data are split 60/20/20 into train, test and
validation; the epoch with the best test accuracy is kept, an isotonic regression fitted
on its test-split outputs calibrates the probabilities, and on the validation split we
report the AUC and ``JSD = (ln 2 - BCE) / ln 2`` (BCE of the calibrated outputs, in nats).
A perfect generator gives AUC = 0.5 and JSD = 0 (up to statistical noise).

Presets:

* ``official``: three hidden layers of 2048, 50 epochs, batch 1000, Adam lr 2e-4 (the
  challenge's network; meant for a GPU);
* ``cpu``: two hidden layers of 256, 12 epochs, batch 1000, Adam lr 1e-3; small enough
  to run a dataset-2 low-level test on 50k vs 50k showers on a 2-core CPU in minutes. It
  is a weaker classifier, so its AUC/JSD are lower bounds on the official ones; compare
  numbers only between runs of the same preset.

Both sides are truncated to the same size so the two classes are balanced. For small
samples the batch shrinks to ``max(32, n_train / 20)`` so that every epoch still takes
about 20 optimiser steps; at the challenge's sample sizes the preset's batch is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .fpd_kpd import InsufficientDataError

__all__ = ["CLASSIFIER_PRESETS", "ClassifierPreset", "ClassifierResult", "LowLevelInputs",
           "classifier_test", "low_level_inputs"]


@dataclass(frozen=True)
class ClassifierPreset:
    hidden: tuple[int, ...]
    epochs: int
    batch_size: int
    lr: float
    dropout: float = 0.0


CLASSIFIER_PRESETS = {
    "official": ClassifierPreset(hidden=(2048, 2048, 2048), epochs=50, batch_size=1000, lr=2e-4),
    "cpu": ClassifierPreset(hidden=(256, 256), epochs=12, batch_size=1000, lr=1e-3),
}


@dataclass
class ClassifierResult:
    """Outcome of a classifier test.

    Attributes:
        auc: area under the ROC curve on the validation split (calibrated outputs).
        jsd: (ln 2 - BCE) / ln 2 on the validation split.
        weights_ref, weights_gen: (n_val_ref,), (n_val_gen,) classifier weights
            w = C / (1 - C) of the validation showers of each class.
        best_epoch: the epoch kept (best test accuracy), counting from 1.
        test_accuracy: the accuracy of that epoch on the test split.
        n_per_class: showers used per class (after balancing).
        preset: the preset name; ``hidden`` the layer sizes actually used.
    """

    auc: float
    jsd: float
    weights_ref: np.ndarray
    weights_gen: np.ndarray
    best_epoch: int
    test_accuracy: float
    n_per_class: int
    preset: str
    hidden: tuple[int, ...]
    history: list = field(default_factory=list, repr=False)


def low_level_inputs(e_inc: np.ndarray, showers: np.ndarray) -> np.ndarray:
    """The challenge's low-level input: [log10 E_inc, voxels / E_inc], (N, 1 + V) float32."""
    e = np.asarray(e_inc, dtype=np.float64).reshape(-1, 1)
    s = np.asarray(showers)
    out = np.empty((s.shape[0], s.shape[1] + 1), dtype=np.float32)  # no float64 copy of V
    out[:, :1] = np.log10(e)
    np.divide(s, e.astype(np.float32), out=out[:, 1:], casting="unsafe")
    return out


class LowLevelInputs:
    """:func:`low_level_inputs` of ``(e_inc, showers)``, made only for the rows asked for.

    :func:`classifier_test` copies the rows it uses into its own training matrix; handing
    it this view instead of the finished (N, 1 + V) array spares a second copy of every
    sample's voxels (for ds3, 162 kB a shower).
    """

    ndim = 2

    def __init__(self, e_inc: np.ndarray, showers: np.ndarray):
        self.e_inc = np.asarray(e_inc, dtype=np.float64).reshape(-1)
        self.showers = showers
        if self.showers.ndim != 2 or len(self.showers) != len(self.e_inc):
            raise ValueError(f"showers must be (N, V) with N = {len(self.e_inc)} energies, "
                             f"got {self.showers.shape}")
        self.shape = (len(self.e_inc), self.showers.shape[1] + 1)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        return low_level_inputs(self.e_inc[rows], self.showers[rows])


def _build(d_in: int, hidden, dropout: float):
    import torch.nn as nn

    layers, prev = [], d_in
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.LeakyReLU(0.2)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = h
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers)


def classifier_test(x_ref: np.ndarray, x_gen: np.ndarray, *, preset: str = "cpu",
                    hidden: tuple[int, ...] | None = None, epochs: int | None = None,
                    seed: int = 0, device: str | None = None, standardise: bool = True,
                    min_per_class: int = 100) -> ClassifierResult:
    """Train a classifier to separate ``x_gen`` (label 1) from ``x_ref`` (label 0).

    Args:
        x_ref, x_gen: (N1, D) and (N2, D) inputs (e.g. :func:`low_level_inputs`, a
            :class:`LowLevelInputs` view, or
            :func:`~caloforge.evaluation.features.high_level_vector`).
        preset: ``"cpu"`` or ``"official"`` (see module docstring).
        hidden: hidden layer sizes overriding the preset's.
        epochs: number of epochs overriding the preset's.
        seed: seeds the split, the initialisation and the batch order.
        device: torch device (default: CUDA when available).
        standardise: standardise inputs with the mean and std of (up to 20k showers of)
            the training split (the
            challenge feeds raw inputs; standardising only speeds up training and does not
            change what can be separated).
        min_per_class: fewer showers per class raise :class:`InsufficientDataError`.
    """
    import torch
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score

    if preset not in CLASSIFIER_PRESETS:
        raise ValueError(f"unknown classifier preset {preset!r}; known: {sorted(CLASSIFIER_PRESETS)}")
    p = CLASSIFIER_PRESETS[preset]
    hidden = tuple(p.hidden if hidden is None else hidden)
    n_epochs = p.epochs if epochs is None else int(epochs)
    x_ref = x_ref if isinstance(x_ref, LowLevelInputs) else np.asarray(x_ref)
    x_gen = x_gen if isinstance(x_gen, LowLevelInputs) else np.asarray(x_gen)
    if x_ref.ndim != 2 or x_gen.ndim != 2 or x_ref.shape[1] != x_gen.shape[1]:
        raise ValueError(f"inputs must be (N, D) with the same D, got {x_ref.shape} and {x_gen.shape}")
    n = min(len(x_ref), len(x_gen))
    if n < min_per_class:
        raise InsufficientDataError(
            f"classifier test needs at least {min_per_class} showers per class, got {n}")
    rng = np.random.default_rng(seed)
    ir = rng.permutation(len(x_ref))[:n]
    ig = rng.permutation(len(x_gen))[:n]
    x = np.empty((2 * n, x_ref.shape[1]), dtype=np.float32)  # filled in place (memory)
    for lo in range(0, n, 2048):  # in chunks: a lazy view makes only these rows
        hi = min(lo + 2048, n)
        x[lo:hi] = x_ref[ir[lo:hi]]
        x[n + lo:n + hi] = x_gen[ig[lo:hi]]
    y = np.concatenate([np.zeros(n, np.float32), np.ones(n, np.float32)])
    perm = rng.permutation(2 * n)
    n_tr, n_te = int(0.6 * 2 * n), int(0.2 * 2 * n)
    tr, te, va = perm[:n_tr], perm[n_tr:n_tr + n_te], perm[n_tr + n_te:]
    if standardise:
        sub = x[tr[:20_000]]  # statistics from (part of) the training split only
        mu = sub.mean(axis=0, dtype=np.float64).astype(np.float32)
        sd = sub.std(axis=0, dtype=np.float64).astype(np.float32)
        sd[sd == 0] = 1.0
        x -= mu
        x /= sd
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    net = _build(x.shape[1], hidden, p.dropout).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=p.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xt = torch.from_numpy(np.ascontiguousarray(x))
    yt = torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)

    def predict(idx: np.ndarray) -> np.ndarray:
        net.eval()
        out = []
        with torch.no_grad():
            for lo in range(0, len(idx), 4096):
                out.append(torch.sigmoid(net(xt[idx[lo:lo + 4096]].to(dev))).cpu().numpy()[:, 0])
        return np.concatenate(out).astype(np.float64)

    best_acc, best_epoch, best_state, history = -1.0, 0, None, []
    tr_t = torch.from_numpy(tr)
    # small samples: at least ~20 optimiser steps per epoch (the preset's batch is kept for
    # the challenge's sizes: 1000 <= 60% of 2 x 17k showers / 20)
    batch = int(min(p.batch_size, max(32, len(tr) // 20)))
    for epoch in range(1, n_epochs + 1):
        net.train()
        order = tr_t[torch.randperm(len(tr), generator=gen)]
        for lo in range(0, len(order), batch):
            b = order[lo:lo + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt[b].to(dev))[:, 0], yt[b].to(dev))
            loss.backward()
            opt.step()
        acc = float(((predict(te) > 0.5) == (y[te] > 0.5)).mean())
        history.append(acc)
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(predict(te), y[te])
    c_val = iso.predict(predict(va))
    y_val = y[va]
    eps = 1e-7
    c_clip = np.clip(c_val, eps, 1 - eps)
    bce = float(-np.mean(y_val * np.log(c_clip) + (1 - y_val) * np.log(1 - c_clip)))
    jsd = (math.log(2) - bce) / math.log(2)
    auc = float(roc_auc_score(y_val, c_val))
    w = c_clip / (1 - c_clip)
    return ClassifierResult(auc=auc, jsd=float(jsd), weights_ref=w[y_val == 0],
                            weights_gen=w[y_val == 1], best_epoch=best_epoch,
                            test_accuracy=best_acc, n_per_class=n, preset=preset,
                            hidden=hidden, history=history)

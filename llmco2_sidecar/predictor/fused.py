"""Inference-only forward of a GNN ensemble in NumPy, every member and head fused.

The sidecar predicts a few steps at a time (a micro-batch closes as soon as a request finishes), so
the cost of a prediction is mostly per call, not per step: the torch path runs about 60 small ops
(2 members x 2 heads x 2 SAGE layers, pooling, 2 linear layers), each with its dispatch overhead.
Here the first SAGE layer of all heads is one matrix product (``[A x, x] @ W1``), the second one
block-diagonal product, the pooling one reduction, and only the readouts stay per head: the same
arithmetic in float32, a fraction of the calls. :class:`~.gnn.GNNPredictor` uses it for
``predict_steps``; training and evaluation keep the torch modules (tests check both agree).
"""

from __future__ import annotations

import numpy as np
import torch

from .layers import SAGEHead, TwoStageGNN


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy().astype(np.float32)


def _linear(lin) -> tuple[np.ndarray, np.ndarray | None]:
    """``(W^T, b)`` of a torch/PyG linear layer."""
    return _np(lin.weight).T.copy(), _np(getattr(lin, "bias", None))


class FusedForward:
    """``(x [S,N,F], adj [N,N], g [S,G], log_prior_pre [S], log_prior_tot [S]) -> (log_pre, log_tot)``,
    the mean over the members of :meth:`TwoStageGNN.forward`, as float32 NumPy arrays.

    Built from the modules' current parameters; :meth:`stamp` tells when they have changed since.
    """

    def __init__(self, nets: list[TwoStageGNN]):
        self._nets = tuple(nets)
        self._params = tuple(p for n in nets for p in n.parameters())
        self.built_at = self.stamp(nets)
        heads: list[SAGEHead] = []
        self.members: list[tuple[int | None, int]] = []  # per member: (index of its prefill head or None, total head)
        for net in nets:
            pre = None
            if net.pre is not None:
                pre = len(heads)
                heads.append(net.pre)
            self.members.append((pre, len(heads)))
            heads.append(net.tot)
        widths = [h.conv1.out_channels for h in heads]
        self.slices = []
        off = 0
        for w in widths:
            self.slices.append(slice(off, off + w))
            off += w
        total = off
        # layer 1 of every head: (A x) Wl + x Wr + b  ==  [A x, x] @ [[Wl], [Wr]] + b
        w1, b1 = [], []
        for h in heads:
            wl, bl = _linear(h.conv1.lin_l)
            wr, br = _linear(h.conv1.lin_r)
            w1.append(np.concatenate([wl, wr], axis=0))
            bias = np.zeros(wl.shape[1], np.float32)
            for b in (bl, br):  # PyG's lin_r has no bias by default; either may be absent
                if b is not None:
                    bias += b
            b1.append(bias)
        self.w1 = np.ascontiguousarray(np.concatenate(w1, axis=1))
        self.b1 = np.concatenate(b1).astype(np.float32)
        # layer 2: block-diagonal over the heads, on [A h, h]
        self.w2 = np.zeros((2 * total, total), dtype=np.float32)
        self.b2 = np.zeros(total, dtype=np.float32)
        for h, sl in zip(heads, self.slices):
            wl, bl = _linear(h.conv2.lin_l)
            wr, br = _linear(h.conv2.lin_r)
            self.w2[sl, sl] = wl
            self.w2[total + sl.start:total + sl.stop, sl] = wr
            if bl is not None:
                self.b2[sl] += bl
            if br is not None:
                self.b2[sl] += br
        self.readouts = [(*_linear(h.lin1), *_linear(h.lin2)) for h in heads]

    def stamp(self, nets: list[TwoStageGNN]) -> tuple:
        """The networks' identities and the in-place version of every parameter (an optimizer step
        bumps it); cheap for the networks this was built from (their parameters are kept)."""
        if len(nets) == len(self._nets) and all(a is b for a, b in zip(nets, self._nets)):
            params = self._params
        else:
            params = tuple(p for n in nets for p in n.parameters())
        return tuple(map(id, nets)), tuple(p._version for p in params)

    def _readout(self, i: int, pooled: np.ndarray, g: np.ndarray) -> np.ndarray:
        w1, b1, w2, b2 = self.readouts[i]
        z = np.concatenate([pooled, g], axis=1) @ w1 + b1
        np.maximum(z, 0.0, out=z)
        return (z @ w2 + b2)[:, 0]

    def __call__(self, x: np.ndarray, adj: np.ndarray, g: np.ndarray, log_prior_pre: np.ndarray,
                 log_prior_tot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.concatenate([adj @ x, x], axis=2) @ self.w1 + self.b1
        np.maximum(h, 0.0, out=h)
        h = np.concatenate([adj @ h, h], axis=2) @ self.w2 + self.b2
        np.maximum(h, 0.0, out=h)
        mean, amax = h.mean(axis=1), h.max(axis=1)
        pres, tots = [], []
        for pre_i, tot_i in self.members:
            if pre_i is not None:
                sl = self.slices[pre_i]
                log_pre = log_prior_pre + self._readout(pre_i, np.concatenate([mean[:, sl], amax[:, sl]], axis=1), g)
                g2 = np.concatenate([g, (log_pre - log_prior_tot)[:, None]], axis=1)
            else:
                log_pre, g2 = log_prior_pre, g
            sl = self.slices[tot_i]
            tots.append(log_prior_tot + self._readout(tot_i, np.concatenate([mean[:, sl], amax[:, sl]], axis=1), g2))
            pres.append(log_pre)
        if len(tots) == 1:
            return pres[0], tots[0]
        return np.mean(pres, axis=0), np.mean(tots, axis=0)

"""Inference-only forward of a GNN ensemble in NumPy: every member and head fused, the feature
normalisation and a deployment's constant node features folded into the weights.

The torch modules (:mod:`.layers`) stay the reference: training and evaluation run them, and the
tests check this forward against them. What is fused here, all derived from the loaded parameters
and the normalisation arrays (nothing hard-coded, so a retrained model file works unchanged):

* **Normalisation.** ``((x - mean) / std) @ W == x @ (W / std) - (mean / std) @ W``: the weights of
  every layer reading features (the first SAGE layer, the readouts' global part) take the raw
  features; the constant goes into the bias. Feature columns a model does not read get zero rows.
* **Static node features.** A node's kernel type and dimensions never change for a deployment: their
  share of the first layer (``A (s Wl) + s Wr`` plus the folded constants and the bias) is one
  ``[N, H]`` array per layer graph (:meth:`FusedForward.plan`), so a step only multiplies its
  dynamic (Roofline) features.
* **Layout.** Node-major ``[N, S, F]``: the mean aggregation over the layer graph is ONE matrix
  product ``A [N, N] @ X [N, S F]`` for all steps, and the pooling reduces over the leading axis.
* **Heads.** The first layer of every head of every member is one product (their weights side by
  side); the second layer is per head (block-diagonal weights would waste most of their products);
  the readouts' first layers are one product over the pooled features and one over the globals.

Float32 throughout, as the torch modules; the folding moves the last digits only (the tests hold it
to 1e-5 in log energy against the modules).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch

from .layers import SAGEHead, TwoStageGNN

_VERSION = operator.attrgetter("_version")


def _np64(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy().astype(np.float64)


def _linear(lin) -> tuple[np.ndarray, np.ndarray]:
    """``(W^T, b)`` of a torch/PyG linear layer in float64 (a missing bias as zeros)."""
    w = _np64(lin.weight).T.copy()
    b = _np64(getattr(lin, "bias", None))
    return w, (np.zeros(w.shape[1]) if b is None else b)


@dataclass
class GraphPlan:
    """What :class:`FusedForward` keeps per layer graph: the mean adjacency and the first layer's
    constant part per node."""

    adj: np.ndarray  # float32 [N, N]
    c1: np.ndarray  # float32 [N, 1, H]: A (s Wl + cl) + s Wr + cr + b, s the node's static features
    wread: np.ndarray  # float32 [2H + G + 1, R]: the readouts' first layers over [sum_nodes h, max_nodes h, g, 1]
    #: ``(p0, p1, w)`` when every node averages at most two predecessors (the layer graphs: chains
    #: with residual joins): ``A X == (X[p0] + X[p1]) * w`` row for row, the same floats as the
    #: product (``0.5 x + 0.5 y == (x + y) * 0.5``, ``x == (x + x) * 0.5``); else None
    gather: tuple | None = None


def _gather_form(a: np.ndarray) -> tuple | None:
    """:attr:`GraphPlan.gather` of a mean adjacency ``a`` [N, N] (float32), or None."""
    N = a.shape[0]
    p0, p1 = np.zeros(N, np.intp), np.zeros(N, np.intp)
    w = np.zeros((N, 1), np.float32)
    for i in range(N):
        nz = np.flatnonzero(a[i])
        if nz.size == 0:
            continue
        if nz.size > 2 or not (a[i, nz] == np.float32(1.0 / nz.size)).all():
            return None
        p0[i], p1[i] = nz[0], nz[-1]
        w[i] = 0.5
    return p0, p1, w


class FusedForward:
    """``(plan, xd [N, S, Fd], g [S, G], log_prior_pre [S], log_prior_tot [S]) -> (log_pre, log_tot)``,
    the mean over the members of :meth:`TwoStageGNN.forward` on the normalised features, float32.

    Args:
        nets: the ensemble's networks (same feature columns).
        norm: ``node_mean``, ``node_std``, ``glob_mean``, ``glob_std`` over the model's columns.
        node_cols: for each model node column, its index in the full node feature row
            (static columns first: ``0..n_static-1``, then the dynamic ones).
        glob_cols: for each model global column, its index in the full global row.
        n_static, n_dynamic, n_global: widths of the full static, dynamic and global rows.

    Built from the modules' current parameters; :meth:`stamp` tells when they have changed since.
    """

    def __init__(self, nets: list[TwoStageGNN], norm: dict, node_cols, glob_cols, n_static: int, n_dynamic: int,
                 n_global: int):
        self._nets = tuple(nets)
        self._params = tuple(p for n in nets for p in n.parameters())
        self.built_at = self.stamp(nets)
        self.n_static, self.n_dynamic, self.n_global = n_static, n_dynamic, n_global
        node_cols = np.asarray(node_cols, dtype=np.int64)
        glob_cols = np.asarray(glob_cols, dtype=np.int64)
        nstd = np.asarray(norm["node_std"], dtype=np.float64)
        nmean = np.asarray(norm["node_mean"], dtype=np.float64)
        gstd = np.asarray(norm["glob_std"], dtype=np.float64)
        gmean = np.asarray(norm["glob_mean"], dtype=np.float64)

        heads: list[SAGEHead] = []
        self.members: list[tuple[int | None, int]] = []  # per member: (index of its prefill head or None, total head)
        for net in nets:
            pre = None
            if net.pre is not None:
                pre = len(heads)
                heads.append(net.pre)
            self.members.append((pre, len(heads)))
            heads.append(net.tot)
        self.n_heads = len(heads)

        def spread(w: np.ndarray, cols: np.ndarray, std: np.ndarray, width: int) -> np.ndarray:
            """Rows of ``w`` (model columns) divided by their std, placed at their full-row index."""
            out = np.zeros((width, w.shape[1]))
            np.add.at(out, cols, w / std[:, None])
            return out

        # layer 1 of all heads side by side: x_norm Wl / Wr  ->  raw rows, constants apart
        wl_all, wr_all, cl_all, cr_all, b1 = [], [], [], [], []
        self.slices: list[slice] = []
        off = 0
        for h in heads:
            wl, bl = _linear(h.conv1.lin_l)
            wr, br = _linear(h.conv1.lin_r)
            width = wl.shape[1]
            self.slices.append(slice(off, off + width))
            off += width
            n_all = n_static + n_dynamic
            wl_all.append(spread(wl, node_cols, nstd, n_all))
            wr_all.append(spread(wr, node_cols, nstd, n_all))
            cl_all.append(-(nmean / nstd) @ wl)
            cr_all.append(-(nmean / nstd) @ wr)
            b1.append(bl + br)
        self.hidden = off
        wl_all = np.concatenate(wl_all, axis=1)  # [F_all, H]
        wr_all = np.concatenate(wr_all, axis=1)
        self._w1_static = (wl_all[:n_static], wr_all[:n_static])  # float64, for plan()
        self._c1 = (np.concatenate(cl_all), np.concatenate(cr_all) + np.concatenate(b1))
        # dynamic rows: [A x_d, x_d] @ [[Wl_d], [Wr_d]]
        self.w1 = np.ascontiguousarray(np.concatenate([wl_all[n_static:], wr_all[n_static:]]), dtype=np.float32)

        # layer 2 on [A h_0, h_0, A h_1, h_1, ...] (head k's input a contiguous column range):
        # per head for large blocks (block-diagonal weights would waste most of the products), one
        # block-diagonal product for small ones (there numpy's per-call overhead dominates)
        H = self.hidden
        w2 = np.zeros((2 * H, H))
        b2 = np.zeros(H)
        self.w2_heads = []
        for h, sl in zip(heads, self.slices):
            wl, bl = _linear(h.conv2.lin_l)
            wr, br = _linear(h.conv2.lin_r)
            k0, w = 2 * sl.start, sl.stop - sl.start
            w2[k0:k0 + w, sl] = wl
            w2[k0 + w:k0 + 2 * w, sl] = wr
            b2[sl] = bl + br
            self.w2_heads.append((slice(k0, k0 + 2 * w), sl, np.concatenate([wl, wr]).astype(np.float32),
                                  (bl + br).astype(np.float32)))
        self.w2 = w2.astype(np.float32)  # on the interleaved [A h_0, h_0, A h_1, h_1, ...]
        #: per head: (its columns, Wl_k, Wr_k, b_k), the large blocks' layer 2
        self.w2_split = [(sl, np.ascontiguousarray(w[:sl.stop - sl.start]), np.ascontiguousarray(w[sl.stop - sl.start:]), b)
                         for _, sl, w, b in self.w2_heads]
        # the same on [A h, h] (the small blocks' layout: one concatenation of two arrays)
        order = np.concatenate([np.arange(2 * sl.start, 2 * sl.start + (sl.stop - sl.start)) for sl in self.slices]
                               + [np.arange(2 * sl.start + (sl.stop - sl.start), 2 * sl.stop) for sl in self.slices])
        self.w2_plain = np.ascontiguousarray(w2[order], dtype=np.float32)
        self.b2 = b2.astype(np.float32)

        # readouts' first layers, all heads side by side, over [sum_nodes h, max_nodes h, g_raw]
        # (the mean's 1 / N goes into the per-graph weights, plan())
        r_widths = [h.lin1.out_features for h in heads]
        R = sum(r_widths)
        r_slices = []
        wm = np.zeros((H, R))
        wx = np.zeros((H, R))
        wg = np.zeros((n_global, R))
        br1 = np.zeros(R)
        extra = np.zeros((len(nets), R))  # member m's total head reads log_pre - log_prior_tot (two-stage)
        w2r = np.zeros((R, len(heads)))  # readouts' second layers: head k -> column k
        b2r = np.zeros(len(heads))
        head_member = {}
        for m, (pre_i, tot_i) in enumerate(self.members):
            head_member[tot_i] = m
            if pre_i is not None:
                head_member[pre_i] = m
        roff = 0
        n_g = len(glob_cols)
        for k, h in enumerate(heads):
            w, b = _linear(h.lin1)  # [2w + G (+1), r]
            width, r = self.slices[k].stop - self.slices[k].start, w.shape[1]
            rs = slice(roff, roff + r)
            r_slices.append(rs)
            roff += r
            wm[self.slices[k], rs] = w[:width]
            wx[self.slices[k], rs] = w[width:2 * width]
            wgk = w[2 * width:2 * width + n_g]
            wg[:, rs] = spread(wgk, glob_cols, gstd, n_global)
            br1[rs] = b - (gmean / gstd) @ wgk
            if w.shape[0] > 2 * width + n_g:
                extra[head_member[k], rs] = w[2 * width + n_g]
            lw, lb = _linear(h.lin2)
            w2r[rs, k] = lw[:, 0]
            b2r[k] = lb[0]
        pre_heads = [p for p, _ in self.members if p is not None]
        self.pre_members = np.array([m for m, (p, _) in enumerate(self.members) if p is not None], dtype=np.int64)
        pre_cols = np.concatenate([np.arange(r_slices[k].start, r_slices[k].stop) for k in pre_heads]) \
            if pre_heads else np.zeros(0, np.int64)
        tot_heads = [t for _, t in self.members]
        tot_cols = np.concatenate([np.arange(r_slices[k].start, r_slices[k].stop) for k in tot_heads])
        # readout columns reordered: every prefill head's, then every total head's (two views of z)
        perm = np.concatenate([pre_cols, tot_cols])
        self.n_pre_cols = pre_cols.size
        self._wm = wm[:, perm]  # float64: the plan scales it by 1 / N
        # rows: max-pooled, globals, and the bias (read from a column of ones)
        self.wx_g_b = np.concatenate([wx[:, perm], wg[:, perm], br1[perm][None, :]])  # [H + G + 1, R]
        self.w2_pre = np.ascontiguousarray(w2r[pre_cols][:, pre_heads], dtype=np.float32)  # [Rp, n_pre]
        self.b2_pre = b2r[pre_heads].astype(np.float32)
        self.w2_tot = np.ascontiguousarray(w2r[tot_cols][:, tot_heads], dtype=np.float32)  # [Rt, M]
        self.b2_tot = b2r[tot_heads].astype(np.float32)
        # log_pre - log_prior_tot of each two-stage member -> its total head's first readout layer
        self.extra = np.ascontiguousarray(extra[self.pre_members][:, tot_cols], dtype=np.float32)  # [n_pre, Rt]
        self._plans: dict = {}

    def stamp(self, nets: list[TwoStageGNN]) -> tuple:
        """The networks' identities and the in-place version of every parameter (an optimizer step
        bumps it); cheap for the networks this was built from (their parameters are kept)."""
        if len(nets) == len(self._nets) and all(a is b for a, b in zip(nets, self._nets)):
            params = self._params
        else:
            params = tuple(p for n in nets for p in n.parameters())
        return tuple(map(id, nets)), tuple(map(_VERSION, params))

    def plan(self, static_nodes: np.ndarray, adj: np.ndarray) -> GraphPlan:
        """The per-layer-graph constants for raw static node features ``[N, n_static]`` and the
        mean adjacency ``[N, N]``."""
        s = np.asarray(static_nodes, dtype=np.float64)
        a = np.asarray(adj, dtype=np.float64)
        wl_s, wr_s = self._w1_static
        cl, cr = self._c1
        c1 = a @ (s @ wl_s + cl) + s @ wr_s + cr
        wread = np.concatenate([self._wm / s.shape[0], self.wx_g_b])
        a32 = np.ascontiguousarray(a, dtype=np.float32)
        return GraphPlan(a32, c1.astype(np.float32)[:, None, :], np.ascontiguousarray(wread, dtype=np.float32),
                         _gather_form(a32))

    def plan_for(self, graph, static_nodes: np.ndarray, adj) -> GraphPlan:
        """:meth:`plan`, kept per ``graph`` object (the layer graph: cached, so the same object for a
        deployment); ``adj`` may be a function returning the adjacency (called once)."""
        hit = self._plans.get(id(graph))
        if hit is not None and hit[0] is graph:
            return hit[1]
        p = self.plan(static_nodes, adj() if callable(adj) else adj)
        if len(self._plans) > 256:
            self._plans.clear()
        self._plans[id(graph)] = (graph, p)
        return p

    #: steps per block of the graph part (the arrays of a block stay in the CPU's cache)
    BLOCK_STEPS = 64
    #: up to this many node rows (N x steps) per block, layer 2 is one block-diagonal product
    DENSE_ROWS = 256
    #: from this many columns (steps x hidden) on, the second aggregation gathers rows
    #: (:attr:`GraphPlan.gather`) instead of the ``[N, N]`` product (which slows down past ~4,000
    #: columns on one core: 69 -> 34 us for 64 steps x 96 hidden, 14 nodes)
    GATHER_COLS = 4096

    def __call__(self, plan: GraphPlan, xd: np.ndarray, g: np.ndarray, log_prior_pre: np.ndarray,
                 log_prior_tot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        N, S, F = xd.shape
        H = self.hidden
        G = g.shape[1]
        q = np.empty((S, 2 * H + G + 1), dtype=np.float32)  # [sum_nodes h, max_nodes h, g, 1]
        q[:, 2 * H:2 * H + G] = g
        q[:, -1] = 1.0
        a = plan.adj
        B = self.BLOCK_STEPS
        add, amax = np.add.reduce, np.maximum.reduce
        for s0 in range(0, S, B):
            s1 = min(S, s0 + B)
            x = xd[:, s0:s1] if S > B else xd
            n = s1 - s0
            ax = (a @ x.reshape(N, n * F)).reshape(N, n, F)
            h = np.concatenate((ax, x), axis=2).reshape(N * n, 2 * F) @ self.w1
            h3 = h.reshape(N, n, H)
            h3 += plan.c1
            np.maximum(h, 0.0, out=h)
            hw = h.reshape(N, n * H)
            if plan.gather is not None and n * H >= self.GATHER_COLS:
                p0, p1, w = plan.gather
                ah = np.take(hw, p0, axis=0)
                ah += np.take(hw, p1, axis=0)
                ah *= w
                ah = ah.reshape(N, n, H)
            else:
                ah = (a @ hw).reshape(N, n, H)
            if N * n <= self.DENSE_ROWS:
                h = np.concatenate((ah, h3), axis=2).reshape(N * n, 2 * H) @ self.w2_plain
                h += self.b2
                np.maximum(h, 0.0, out=h)
                h3 = h.reshape(N, n, H)
                add(h3, axis=0, out=q[s0:s1, :H])
                amax(h3, axis=0, out=q[s0:s1, H:2 * H])
            else:
                # per head: [A h_k, h_k] @ [[Wl_k], [Wr_k]] as two products on column views (no
                # interleaved copy of every head's input)
                ah2 = ah.reshape(N * n, H)
                for sl, wl, wr, b in self.w2_split:
                    o = ah2[:, sl] @ wl
                    o += h[:, sl] @ wr
                    o += b
                    np.maximum(o, 0.0, out=o)
                    o3 = o.reshape(N, n, -1)
                    add(o3, axis=0, out=q[s0:s1, sl])
                    amax(o3, axis=0, out=q[s0:s1, H + sl.start:H + sl.stop])
        z = q @ plan.wread  # [S, R]: prefill heads' columns, then the total heads'
        lt = log_prior_tot[:, None]
        zt = z[:, self.n_pre_cols:]
        if self.pre_members.size:
            zp = z[:, :self.n_pre_cols]
            np.maximum(zp, 0.0, out=zp)
            log_pre = log_prior_pre[:, None] + (zp @ self.w2_pre + self.b2_pre)  # [S, n_pre]
            zt += (log_pre - lt) @ self.extra
        np.maximum(zt, 0.0, out=zt)
        log_tot = lt + (zt @ self.w2_tot + self.b2_tot)  # [S, M]
        M = log_tot.shape[1]
        if self.pre_members.size == M:
            pre = log_pre
        else:  # members without a prefill head predict the prior
            pre = np.repeat(log_prior_pre[:, None], M, axis=1)
            if self.pre_members.size:
                pre[:, self.pre_members] = log_pre
        if M == 1:
            return pre[:, 0], log_tot[:, 0]
        inv = np.float32(1.0 / M)
        return add(pre, axis=1) * inv, add(log_tot, axis=1) * inv

"""GraphSAGE heads over a fixed layer graph, batched over many steps.

Every step of a deployment shares one layer graph (same kernels, same edges); only the node and
global features change. So a batch of ``S`` step graphs is a tensor ``x [S, N, F]`` and the mean
aggregation of PyG's :class:`~torch_geometric.nn.SAGEConv` becomes one matrix product with the
row-normalised adjacency ``A [N, N]`` (``A[i, j] = 1 / indeg(i)`` for an edge ``j -> i``). The
parameters *are* PyG ``SAGEConv`` modules (``lin_l``, ``lin_r``), so a model can also be run through
PyG's sparse message passing on a block-diagonal ``edge_index`` (:meth:`SAGEHead.forward_pyg`);
the tests check that both paths agree.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import SAGEConv


def mean_adjacency(edge_index: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Row-normalised adjacency ``[N, N]`` for mean aggregation of messages ``src -> dst``.

    Shapes:
        edge_index: int64 ``[2, E]`` (row 0 source, row 1 target, as in PyG).
    """
    a = torch.zeros(n_nodes, n_nodes, dtype=torch.float32)
    if edge_index.numel():
        a.index_put_((edge_index[1], edge_index[0]), torch.ones(edge_index.shape[1]), accumulate=True)
    deg = a.sum(dim=1, keepdim=True).clamp(min=1.0)
    return a / deg


def block_diagonal_edges(edge_index: torch.Tensor, n_nodes: int, n_graphs: int) -> torch.Tensor:
    """``edge_index`` repeated for ``n_graphs`` graphs of ``n_nodes`` nodes (PyG batching)."""
    offs = (torch.arange(n_graphs, dtype=torch.int64) * n_nodes).repeat_interleave(edge_index.shape[1])
    return edge_index.repeat(1, n_graphs) + offs


class SAGEHead(nn.Module):
    """Two SAGEConv layers, mean+max pooling, concatenation with global features, two linear layers.

    Args:
        node_dim: node feature width ``F``.
        global_dim: global feature width ``G``.
        hidden: width of the graph embedding and of the first linear layer.

    Shapes:
        x: ``[S, N, F]``; adj: ``[N, N]``; g: ``[S, G]``; output ``[S]`` (one scalar per graph).
    """

    def __init__(self, node_dim: int, global_dim: int, hidden: int = 32):
        super().__init__()
        self.conv1 = SAGEConv(node_dim, hidden)
        self.conv2 = SAGEConv(hidden, hidden)
        self.lin1 = nn.Linear(2 * hidden + global_dim, hidden)
        self.lin2 = nn.Linear(hidden, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.conv1.reset_parameters()
        self.conv2.reset_parameters()
        self.lin1.reset_parameters()
        # start from a zero residual: the head's output begins at 0 and grows only where it helps
        nn.init.zeros_(self.lin2.weight)
        nn.init.zeros_(self.lin2.bias)

    @staticmethod
    def _dense_sage(conv: SAGEConv, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return conv.lin_l(torch.matmul(adj, x)) + conv.lin_r(x)

    def embed(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self._dense_sage(self.conv1, x, adj))
        h = torch.relu(self._dense_sage(self.conv2, h, adj))
        return torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=1)

    def readout(self, pooled: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.lin1(torch.cat([pooled, g], dim=1)))
        return self.lin2(z).squeeze(1)

    def forward(self, x: torch.Tensor, adj: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.readout(self.embed(x, adj), g)

    def forward_pyg(self, x: torch.Tensor, edge_index: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The same computation through PyG message passing (reference path, slower)."""
        s, n, f = x.shape
        ei = block_diagonal_edges(edge_index, n, s)
        h = torch.relu(self.conv1(x.reshape(s * n, f), ei))
        h = torch.relu(self.conv2(h, ei)).reshape(s, n, -1)
        return self.readout(torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=1), g)


class TwoStageGNN(nn.Module):
    """The paper's pair: head 1 predicts prefill energy, its prediction joins the global features
    of head 2, which predicts total energy. Both predict log-residuals over a prior (log J).

    With ``two_stage=False`` only head 2 exists (NNLQP-style single GNN, no phase separation).

    Shapes:
        x ``[S, N, F]``, adj ``[N, N]``, g ``[S, G]``, log_prior_pre and log_prior_tot ``[S]``;
        returns ``(log_prefill_j [S], log_total_j [S])``.
    """

    def __init__(self, node_dim: int, global_dim: int, hidden: int = 32, two_stage: bool = True):
        super().__init__()
        self.two_stage = two_stage
        self.pre = SAGEHead(node_dim, global_dim, hidden) if two_stage else None
        self.tot = SAGEHead(node_dim, global_dim + (1 if two_stage else 0), hidden)

    def forward(
        self, x: torch.Tensor, adj: torch.Tensor, g: torch.Tensor, log_prior_pre: torch.Tensor, log_prior_tot: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pre is not None:
            log_pre = log_prior_pre + self.pre(x, adj, g)
            g2 = torch.cat([g, (log_pre - log_prior_tot).unsqueeze(1)], dim=1)
        else:
            log_pre = log_prior_pre
            g2 = g
        log_tot = log_prior_tot + self.tot(x, adj, g2)
        return log_pre, log_tot

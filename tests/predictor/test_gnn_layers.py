import torch

from llmco2_sidecar.predictor.layers import SAGEHead, TwoStageGNN, block_diagonal_edges, mean_adjacency


def _graph():
    # a small DAG with a node of in-degree 2 and a source node
    ei = torch.tensor([[0, 1, 1, 2, 3], [1, 2, 3, 4, 4]], dtype=torch.int64)
    return ei, 5


def test_mean_adjacency_rows():
    ei, n = _graph()
    a = mean_adjacency(ei, n)
    assert a.shape == (5, 5)
    assert a[0].sum() == 0  # no incoming edge
    assert torch.allclose(a[4], torch.tensor([0, 0, 0.5, 0.5, 0]))
    assert torch.allclose(a[1], torch.tensor([1.0, 0, 0, 0, 0]))


def test_block_diagonal_edges():
    ei, n = _graph()
    b = block_diagonal_edges(ei, n, 3)
    assert b.shape == (2, 15)
    assert torch.equal(b[:, 5:10], ei + 5)


def test_dense_path_equals_pyg_sage():
    torch.manual_seed(0)
    ei, n = _graph()
    head = SAGEHead(6, 3, hidden=8)
    torch.nn.init.normal_(head.lin2.weight)  # non-zero output
    x = torch.randn(7, n, 6)
    g = torch.randn(7, 3)
    dense = head(x, mean_adjacency(ei, n), g)
    sparse = head.forward_pyg(x, ei, g)
    assert dense.shape == (7,)
    assert torch.allclose(dense, sparse, atol=1e-5)


def test_two_stage_shapes_and_zero_init():
    ei, n = _graph()
    torch.manual_seed(1)
    m = TwoStageGNN(6, 4, hidden=8)
    x, g = torch.randn(11, n, 6), torch.randn(11, 4)
    lp, lt = torch.randn(11), torch.randn(11)
    pre, tot = m(x, mean_adjacency(ei, n), g, lp, lt)
    assert pre.shape == tot.shape == (11,)
    # zero-initialised output layers: the model starts exactly at the prior
    assert torch.allclose(pre, lp) and torch.allclose(tot, lt)
    single = TwoStageGNN(6, 4, hidden=8, two_stage=False)
    assert single.pre is None
    _, t1 = single(x, mean_adjacency(ei, n), g, lp, lt)
    assert t1.shape == (11,)


def test_deterministic_with_seed():
    ei, n = _graph()
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        m = TwoStageGNN(6, 4, hidden=8)
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.3)
        torch.manual_seed(9)
        x, g = torch.randn(3, n, 6), torch.randn(3, 4)
        outs.append(m(x, mean_adjacency(ei, n), g, torch.zeros(3), torch.zeros(3))[1])
    assert torch.equal(outs[0], outs[1])

import csv

import numpy as np
import pytest

from llmco2_sidecar.errors import InputError
from llmco2_sidecar.predictor.baselines import LLMCarbonBaseline, RandomForestBaseline, RooflineBaseline, tabular_features
from llmco2_sidecar.predictor.dataset import measured_examples
from llmco2_sidecar.predictor.evaluate import load_examples, make_splits, predict_gnn
from llmco2_sidecar.predictor.gnn import GNNConfig
from llmco2_sidecar.predictor.measurements import COLUMNS, read_measurements
from llmco2_sidecar.predictor.training import TrainOptions, train_gnn


def _csv(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "run1.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return folder


def _row(batch, prompt, output, prefill_j, decode_j, **kw):
    r = dict(gpu_name="H100", driver="550.54", torch_version="2.4.0", model="meta-llama/Llama-3.1-8B", layers=32,
             batch=batch, prompt=prompt, output=output, tp=1, prefill_j=prefill_j, decode_j=decode_j,
             prefill_s=prefill_j / 500, decode_s=decode_j / 300, idle_w=70, repetitions=5, spread=0.02)
    r.update(kw)
    return r


def test_read_measurements_and_examples(tmp_path):
    folder = _csv(tmp_path / "m", [_row(4, 512, 128, 40.0, 300.0), _row(16, 256, 1, 60.0, 0.0), _row(8, 128, 64, 20.0, 90.0, layers=4)])
    batches = read_measurements(folder)
    assert [b.batch for b in batches] == [4, 16, 8]
    ex, skipped = measured_examples(batches, k_decode=4)
    assert not skipped
    assert [e.head for e in ex] == ["prefill", "total", "prefill", "prefill", "total"]  # output=1 has no decode
    pre, dec = ex[0], ex[1]
    assert pre.target == 40.0 and pre.steps.n_steps == 1 and pre.steps.steps_tokens()[0] == 4 * 512
    assert dec.target == 300.0 and dec.weight.sum() == pytest.approx(127)
    assert np.allclose(dec.steps.duration_s, (300.0 / 300) / 127)
    assert dec.steps.context_tokens.min() >= 512 and dec.steps.context_tokens.max() < 512 + 127
    assert ex[3].deployment.model.num_layers == 4  # truncated model
    assert read_measurements(tmp_path / "absent") == []
    # a measurement plan in the same folder is not read as measurements
    (folder / "next_plan.csv").write_text("priority,model,gpu,tp,layers,batch,prompt,output,repetitions,reason\n")
    assert len(read_measurements(folder)) == 3


def test_bad_measurement_rows_name_the_field(tmp_path):
    with pytest.raises(InputError, match="batch"):
        read_measurements(_csv(tmp_path / "a", [_row("x", 512, 128, 40.0, 300.0)]))
    with pytest.raises(InputError, match="positive"):
        read_measurements(_csv(tmp_path / "b", [_row(4, 512, 128, -1.0, 300.0)]))


def test_training_reads_measurements_and_supervises_prefill(tmp_path):
    rows = [_row(b, p, 64, 0.02 * b * p ** 1.0 + 5, 2.0 * b + 50) for b in (1, 4, 16) for p in (128, 512, 1024)]
    folder = _csv(tmp_path / "m", rows)
    examples, feats, skipped = load_examples(None, folder)
    assert len(examples) == 18 and {e.source for e in examples} == {"measurements"}
    idx = np.arange(len(examples))
    model = train_gnn(examples, feats, idx, None, GNNConfig(), TrainOptions(epochs=80, weight_decay=0, residual_reg=0))
    y = np.array([e.target for e in examples])
    err = np.abs(predict_gnn(model, examples, feats, idx) / y - 1)
    assert err.mean() < 0.5
    # the prefill head is trained on the prefill labels: its prediction for a prefill step tracks the label
    e = examples[0]
    p = model.predict_steps(e.deployment, e.steps)
    assert p.prefill_energy_j[0] == pytest.approx(p.energy_j[0], rel=0.5)


def test_baselines_fit_on_tiny_data(tiny_data):
    ex, feats = tiny_data
    y = np.array([e.target for e in ex])
    tr, te = np.arange(0, len(ex), 2), np.arange(1, len(ex), 2)
    sub = lambda idx: ([ex[i] for i in idx], [feats[i] for i in idx])  # noqa: E731
    lc = LLMCarbonBaseline().fit(*sub(tr))
    p = lc.predict(*sub(tr))
    # the fitted efficiency makes the geometric mean ratio exactly 1 on the training data
    assert np.exp(np.mean(np.log(p / y[tr]))) == pytest.approx(1.0)
    assert 0 < lc.efficiency
    rf = RandomForestBaseline(seed=0, n_estimators=20).fit(*sub(tr))
    assert rf.predict(*sub(te)).shape == (len(te),)
    assert np.all(rf.predict(*sub(te)) > 0)
    assert tabular_features(*sub(te)).shape[0] == len(te)
    rl = RooflineBaseline().fit(*sub(tr)).predict(*sub(te))
    assert rl.shape == (len(te),) and np.all(rl > 0)


def test_make_splits_never_share_groups(tiny_data):
    ex, _ = tiny_data
    splits = make_splits(ex)
    names = [s.name for s in splits]
    assert "gpu=H100" in names and "gpu=B200" in names  # leave one GPU kind out
    assert any(n.startswith("model=") for n in names)
    # each tiny family holds one architecture: its family split would repeat the model split
    assert not any(n.startswith("family=") for n in names)
    for s in splits:
        key = s.name.split("=")[0].split(":")[0]
        attr = {"gpu": lambda e: e.gpu, "family": lambda e: e.family, "model": lambda e: e.deployment.model.name}[key]
        assert not {attr(ex[i]) for i in s.train} & {attr(ex[i]) for i in s.test}


def test_reads_the_profiling_harness_file_format(tmp_path):
    """The harness writes a provenance comment, then the header, then rows (profile.runner.CsvSink)."""
    import io

    from llmco2_sidecar.predictor.measurements import read_measurements
    from llmco2_sidecar.profile.runner import COLUMNS, CsvSink

    buf = io.StringIO()
    sink = CsvSink(buf, "# provenance: gpu=NVIDIA H100 80GB HBM3; driver=550.1; date=2026-11-26T00:00:00Z")
    row = {c: "" for c in COLUMNS}
    row.update(gpu_name="NVIDIA H100 80GB HBM3", driver="550.1", torch_version="2.5", model="meta-llama/Llama-2-7b-hf",
               layers=32, batch=4, prompt=512, output=64, tp=1, prefill_j=120.0, decode_j=300.0, prefill_s=0.2,
               decode_s=1.5, idle_w=70.0, repetitions=5, spread=0.01)
    sink.write(row)
    bad = dict(row, batch=0)
    (tmp_path / "h100.csv").write_text(buf.getvalue())
    got = read_measurements(tmp_path)
    assert len(got) == 1 and got[0].batch == 4 and got[0].prefill_j == 120.0
    buf2 = io.StringIO()
    sink2 = CsvSink(buf2, "# provenance: gpu=x")
    sink2.write(row)
    sink2.write(bad)
    (tmp_path / "h100.csv").write_text(buf2.getvalue())
    import pytest

    from llmco2_sidecar.errors import InputError

    with pytest.raises(InputError) as e:
        read_measurements(tmp_path)
    assert e.value.field == "h100.csv:4:batch"  # line numbers count the provenance line

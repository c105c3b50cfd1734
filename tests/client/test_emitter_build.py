"""``client/emitter_build.py``: the queued events as one columnar message, and which of them a record awaits."""

from __future__ import annotations

import numpy as np
import pytest

from llmco2_sidecar.client.emitter_build import _BATCH, _DEFERRED, _DONE, _STEP, awaited, build_message


def test_a_record_awaits_finishes_and_static_batches_not_steps():
    step = (_STEP, 1, 0.0, 0.01, ["a"], [4], [0], [4], None)
    deferred = (_DEFERRED, 2, 0.01, 0.02, lambda src: src, (["a"], [1], [4], [4]))
    assert not awaited([step, deferred])
    assert awaited([step, (_DONE, "a", 1, False, 0.0, 4, "")])
    assert awaited([(_BATCH, 1, 0.0, 1.0, ["s"], [4], [2])])


def test_steps_become_columns_phases_padded_and_deferred_columns_read():
    items = [(_STEP, 1, 0.0, 0.01, ["a", "b"], np.array([4, 5]), [0, 0], [4, 5], None),
             (_DEFERRED, 2, 0.01, 0.02, lambda src: src, (["a"], [1], [4], [4])),
             (_STEP, 3, 0.02, 0.03, ("b",), (1,), (5,), (5,), [3]),
             (_DONE, "a", 2, False, 0.05, 4, "")]
    msg, n = build_message(items, client_id_of=lambda rid: f"client-{rid}")
    st = msg.events.steps
    assert n == 4 and list(st.step_id) == [1, 2, 3] and list(st.slice_count) == [2, 1, 1]
    assert list(st.request_id) == ["a", "b", "a", "b"] and list(st.new_tokens) == [4, 5, 1, 1]
    assert list(st.phase) == [0, 0, 0, 3]  # only the last step named its phases: the others padded
    assert msg.events.done[0].client_request_id == "client-a"


def test_a_broken_reader_or_mapping_is_handled_where_it_belongs():
    def broken(_):
        raise RuntimeError("gone")

    with pytest.raises(ValueError, match="step 7"):  # the emitter drops that step, not the stream
        build_message([(_DEFERRED, 7, 0.0, 0.01, broken, None)])
    msg, _ = build_message([(_DONE, "a", 1, False, 0.0, 4, "")], client_id_of=broken)
    assert msg.events.done[0].request_id == "a" and msg.events.done[0].client_request_id == ""

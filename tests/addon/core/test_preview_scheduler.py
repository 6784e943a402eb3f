"""The live preview's request policy (neural_human_addon.core.preview_scheduler) as a state machine, no bpy."""

from __future__ import annotations

import pytest

from neural_human_addon.core.preview_scheduler import PreviewScheduler, scale_label


def _sched(**kw) -> PreviewScheduler:
    kw.setdefault("debounce_s", 0.2)
    kw.setdefault("max_fps", 0.0)
    return PreviewScheduler(**kw)


def test_nothing_before_a_key_and_nothing_during_the_debounce() -> None:
    s = _sched()
    assert s.tick(10.0) is None
    assert s.observe("pose A", 10.0)
    assert not s.observe("pose A", 10.1)  # same key: the debounce does not restart
    assert s.tick(10.1) is None
    req = s.tick(10.2)
    assert req is not None and req.key == "pose A" and req.step == 0 and req.scale == 0.25


def test_every_change_restarts_the_debounce_and_exactly_one_request_follows() -> None:
    s = _sched()
    t = 0.0
    for k in range(10):  # a drag: a new key every 50 ms
        s.observe(("pose", k), t)
        assert s.tick(t) is None
        t += 0.05
    requests = [r for r in (s.tick(t + dt) for dt in (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)) if r is not None]
    assert len(requests) == 1 and requests[0].key == ("pose", 9)


def test_one_in_flight_and_newest_wins_stale_answer_dropped() -> None:
    s = _sched()
    s.observe("A", 0.0)
    a = s.tick(0.3)
    assert a is not None
    for key, t in (("B", 0.4), ("C", 0.5), ("D", 0.6)):
        s.observe(key, t)
        assert s.tick(t + 0.5) is None  # A is still out
    assert s.answer(a.id, 1.5) is False  # A's key is no longer current: dropped
    assert s.dropped == 1
    d = s.tick(1.5)
    assert d is not None and d.key == "D" and d.step == 0  # B and C were never asked
    assert s.answer(d.id, 1.9) is True


def test_answers_for_unknown_or_old_ids_are_dropped() -> None:
    s = _sched()
    s.observe("A", 0.0)
    a = s.tick(1.0)
    assert s.answer(a.id + 99, 1.1) is False
    assert s.busy
    assert s.answer(a.id, 1.2, duration_s=0.05) is True
    assert s.last_duration_s == 0.05
    assert s.answer(a.id, 1.3) is False  # a duplicate answer
    assert s.dropped == 2


def test_progressive_quarter_then_full_then_nothing() -> None:
    s = _sched()
    s.observe("A", 0.0)
    q = s.tick(0.2)
    assert (q.step, q.scale) == (0, 0.25)
    assert s.answer(q.id, 0.4)
    assert s.status_text() == "preview: 0.2 s/frame, 1/4 res"
    f = s.tick(0.4)
    assert (f.step, f.scale) == (1, 1.0)
    assert s.answer(f.id, 1.4)
    assert s.status_text() == "preview: 1.0 s/frame, full res"
    assert s.tick(5.0) is None and s.next_step() is None
    # a change starts over at a quarter, after the debounce
    s.observe("B", 6.0)
    assert s.tick(6.1) is None
    assert s.tick(6.2).step == 0


def test_full_resolution_only_while_still() -> None:
    s = _sched()
    s.observe("A", 0.0)
    q = s.tick(0.2)
    s.observe("B", 0.3)  # moved while the quarter frame was out
    assert not s.answer(q.id, 0.5)
    assert s.tick(0.5).step == 0 and s.key == "B"  # B starts at a quarter, not at full


def test_fps_cap_spaces_request_starts() -> None:
    s = _sched(debounce_s=0.0, max_fps=2.0)
    s.observe("A", 0.0)
    a = s.tick(0.0)
    s.answer(a.id, 0.1)
    assert s.tick(0.3) is None  # full-res step waits for 1/2 s after the last start
    assert s.tick(0.5).step == 1


def test_error_is_reported_once_and_stops_requests_until_reset() -> None:
    s = _sched()
    s.observe("A", 0.0)
    a = s.tick(0.3)
    assert s.fail(a.id, "server unreachable") == "server unreachable"
    assert s.fail(a.id, "server unreachable") is None
    s.observe("B", 1.0)
    assert s.tick(5.0) is None
    assert s.status_text() == "preview: error: server unreachable"
    s.reset()
    s.observe("B", 6.0)
    assert s.tick(6.3) is not None


def test_arguments_checked_and_labels() -> None:
    with pytest.raises(ValueError):
        PreviewScheduler(scales=())
    with pytest.raises(ValueError):
        PreviewScheduler(scales=(0.0, 1.0))
    with pytest.raises(ValueError):
        PreviewScheduler(debounce_s=-1)
    assert [scale_label(x) for x in (0.25, 0.5, 1.0, 0.3)] == ["1/4", "1/2", "full", "0.3×"]

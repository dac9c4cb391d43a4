"""The benchmark's verdicts: each target of the speed issue is reported, and the fixed-path bound
says when a target is out of reach of faster reading alone."""

from __future__ import annotations

from bench.run import SizeResult, fixed_path_bound, targets


def _size(n: int, service: float, floor: float) -> SizeResult:
    return SizeResult(n, service, service * 1.2, floor, floor * 1.2, service / floor, 1.0, 0, 0)


def test_the_fixed_path_bound_adds_only_the_floors_growth() -> None:
    # 2.4 ms with 10 resources; the floor grows 0.4 -> 0.9 ms: at best 2.9 ms at 200
    assert round(fixed_path_bound(_size(10, 2.4, 0.4), _size(200, 4.6, 0.9)), 3) == round(
        2.9 / 0.9, 3
    )


def test_every_target_is_reported_with_its_verdict() -> None:
    sizes = [
        _size(10, 2.4, 0.4),
        _size(200, 4.6, 0.9),
        _size(1000, 14.0, 2.9),
        _size(5000, 66.0, 22.5),
    ]
    verdicts = {name: (value, ok) for name, value, ok in targets(sizes, {})}
    assert verdicts["200: service p50 <= 3x floor p50"] == ("5.11x", False)
    assert verdicts["200: fixed path alone <= 3x floor p50"] == ("3.22x", False)
    assert verdicts["5000: service p50 <= 3x floor p50"] == ("2.93x", True)
    assert verdicts["per-resource cost 200->5000 <= 1.5"][1] is True


def test_a_quick_run_reports_only_what_it_measured() -> None:
    names = [name for name, _, _ in targets([_size(200, 2.5, 0.9)], {})]
    assert names == ["200: service p50 <= 3x floor p50", "200: service p99 <= 4x floor p99"]

"""Value-set matching: the per-system prefix index answers exactly as the plain definition (an
exact (system, code) pair, or a prefix of the same system), on generated and packaged sets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service import knowledge
from cds_service.knowledge import ValueSet

Coding = tuple[str | None, str | None]
SYSTEMS = ["http://a", "http://b", "http://c"]
CODES = ["A", "A1", "A12", "A2", "B", "B1", "D80", "D80.1", "D801", "X"]


def _plain_match(vs: ValueSet, coding: Coding) -> bool:
    """The definition the index must keep: exact pair, else a same-system prefix."""
    system, code = coding
    if coding in vs.exact:
        return True
    return bool(system and code) and any(
        system == s and code is not None and code.startswith(p) for s, p in vs.prefixes
    )


def _plain_display(vs: ValueSet, system: str, code: str) -> str | None:
    hit = vs.displays.get((system, code))
    if hit is not None:
        return hit
    best = max(
        (p for s, p in vs.prefixes if s == system and code.startswith(p)), key=len, default=None
    )
    return None if best is None else vs.displays.get((system, best))


codings = st.tuples(
    st.none() | st.just("") | st.sampled_from(SYSTEMS), st.none() | st.sampled_from(CODES)
)


@st.composite
def valuesets(draw: st.DrawFn) -> ValueSet:
    pairs = st.tuples(st.sampled_from(SYSTEMS), st.sampled_from(CODES))
    exact = draw(st.frozensets(pairs, max_size=6))
    prefixes = tuple(draw(st.lists(pairs, max_size=6)))  # duplicates and overlaps included
    displays = {p: f"name {i}" for i, p in enumerate(draw(st.lists(pairs, max_size=6)))}
    return ValueSet("generated", exact, prefixes, displays=displays)


@settings(max_examples=400, deadline=None)
@given(valuesets(), st.lists(codings, max_size=6))
def test_matching_equals_the_plain_definition(vs: ValueSet, sent: list[Coding]) -> None:
    assert vs.any_match(sent) is any(_plain_match(vs, c) for c in sent)
    for system, code in sent:
        assert vs.matches(system, code) is _plain_match(vs, (system, code))
        if system and code:
            assert vs.display_for(system, code) == _plain_display(vs, system, code)
    distinct = set(sent)
    assert vs.matching(distinct) == {c for c in distinct if _plain_match(vs, c)}


def test_packaged_valuesets_match_as_defined() -> None:
    """Every packaged value set, on its own codes and prefixes, near misses and other systems."""
    kn = knowledge.default()
    for vs in kn.valuesets.values():
        probes: set[Coding] = set()
        for system, code in (*vs.exact, *vs.prefixes):
            probes |= {(system, code), (system, code + "9"), (system, code[:-1]), ("x", code)}
        for coding in probes:
            assert vs.any_match([coding]) is _plain_match(vs, coding), (vs.id, coding)
        assert vs.matching(probes) == {c for c in probes if _plain_match(vs, c)}, vs.id

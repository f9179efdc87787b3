"""The stored criteria of an entry episode (`entry_episodes.criteria`) are each criterion as
`dataclasses.asdict` gives it; `_criteria_json` builds them without asdict's per-leaf deepcopy (issue #27
item 2) and must give the same, as a copy."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date

from sqlalchemy import select

from app.db import get_engine
from app.models import Person
from app.orientation.episodes import _criteria_json, compute_for
from tests.support.factories import ingest
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, write_flux


def test_criteria_rows_are_asdict_of_the_criteria(db, tmp_path):
    dem, cjt = person(NIR_A), person(NIR_B, role="CJT", prenom="MARIE", sexe="2")
    for day, kind, etat in ((date(2024, 2, 1), "M", "2"), (date(2024, 2, 20), "I", "4"), (date(2024, 3, 4), "I", "2")):
        ingest(db, write_flux(tmp_path, [foyer(dem, cjt, etat=etat)], type_flux=kind, day=day), received_on=day)
    with get_engine(db).connect() as conn:
        ids = list(conn.execute(select(Person.id)).scalars())
        results = compute_for(conn, ids)
    episodes = [ep for r in results.values() for ep in r.episodes]
    assert episodes, "the scene makes entry episodes"
    for ep in episodes:
        expected = {name: asdict(c) for name, c in ep.criteria.items()}
        got = _criteria_json(ep)
        assert got == expected
        assert repr(got) == repr(expected)  # same types and order, not only equal
        for name, c in ep.criteria.items():  # a copy: changing the row leaves the episode as it was
            assert got[name]["facts"] is not c.facts
            for copied, original in zip(got[name]["facts"], c.facts, strict=True):
                assert copied is not original

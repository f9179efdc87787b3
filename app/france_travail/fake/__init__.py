"""A fake France Travail (issue #12): the token endpoint and the partner APIs with the shapes and codes of
shared/formats/france-travail-api.md, a population derived from the NIR (so that `flux generate`'s
persons are known, unknown, ambiguous or not certified, always the same way for a seed), header and scope
checks like the real one, and faults set at start or at runtime. Tests and demos never call the real one.

    passerelle fake-ft serve --port 8900 --seed 1

Runtime faults: `POST /_fake/faults` with a JSON object (see `Faults`); `GET /_fake/faults` reads them.

state.py holds the population, what was received and the faults; gate.py the checks before an answer;
answers.py the bodies; app.py the routes; process.py the fake run as a process (tests, demo, bench).
"""

from app.france_travail.fake.app import API, TOKEN_PATH, create_app
from app.france_travail.fake.gate import AGENT_HEADERS, SCOPES
from app.france_travail.fake.process import pointed_at, running_fake
from app.france_travail.fake.state import FakeState, Faults, most_in_one_second

__all__ = [
    "AGENT_HEADERS",
    "API",
    "SCOPES",
    "TOKEN_PATH",
    "FakeState",
    "Faults",
    "create_app",
    "most_in_one_second",
    "pointed_at",
    "running_fake",
]

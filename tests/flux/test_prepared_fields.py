"""Every value the reading process sends to the loader, field by field, on one foyer that carries them all.

The reading process (reader records, then `Deriver.prepare`) is optimised for CPU: a field dropped, moved or
mistyped there must fail here, not only in an ingestion that happens to look at it. The keys are recomputed
with `key_hash` and `NirLookup`, the reference functions, not with the deriver's own shortcut.
"""

from __future__ import annotations

from pathlib import Path

from app.flux.derive import STATE_COLUMNS, Deriver, Prepared
from app.flux.reader import FluxReader
from app.persons.keys import identity_key_text, key_hash, matricule_key_text
from app.security.nir import NirLookup
from tests.support.fluxbuilder import transfer_blocks

EXAMPLE = Path(__file__).parents[1] / "support" / "data" / "example_vrsb0801.xml"
KEY = b"k" * 32

CONJOINT = (
    "<Personne><Identification><QUAL>MR</QUAL><NOM>EXEMPLE</NOM><NOMNAI>AUTRE</NOMNAI><PRENOM>DOMINIQUE</PRENOM>"
    "<DTNAI>1988-07-01</DTNAI><SEXE>1</SEXE><DTDC>2024-02-20</DTDC></Identification>"
    "<Prestations><NATPREST>RSA</NATPREST><ROLEPERS>CJT</ROLEPERS></Prestations>"
    "<MontantCalculDroitRSAPersonne><TOPPERSDRODEVORSA>0</TOPPERSDRODEVORSA>"
    "<TOPPERSENTDRODEVORSA>false</TOPPERSENTDRODEVORSA><IDASSEDIC>1234567A</IDASSEDIC>"
    "</MontantCalculDroitRSAPersonne></Personne>"
    "<Personne><Identification><NOM>EXEMPLE</NOM><PRENOM>LOU</PRENOM><DTNAI>2015-03-03</DTNAI></Identification>"
    "<Prestations><NATPREST>RSA</NATPREST><ROLEPERS>ENF</ROLEPERS></Prestations></Personne>"
)
SITUATION = (
    "</EtatDossierRSA>"
    "<SuspensionDroit><MOTISUSDRORSA>DI</MOTISUSDRORSA><DDSUSDRORSA>2024-02-10</DDSUSDRORSA></SuspensionDroit>"
    "<SuspensionVersement><MOTISUSVERSRSA>02</MOTISUSVERSRSA><DDSUSVERSRSA>2024-02-15</DDSUSVERSRSA>"
    "</SuspensionVersement><SuspensionVersement><MOTISUSVERSRSA>01</MOTISUSVERSRSA>"
    "<DDSUSVERSRSA>2024-02-12</DDSUSVERSRSA></SuspensionVersement>"
    "<FinDroit><MOTICLORSA>PCG</MOTICLORSA><DTCLORSA>2024-02-28</DTCLORSA></FinDroit>"
    "<Refus><DTREFURSA>2024-02-06</DTREFURSA><MOTIREFURSA>DSD</MOTIREFURSA></Refus>"
)


def _file(tmp_path: Path) -> Path:
    xml = EXAMPLE.read_text(encoding="windows-1252")
    xml = xml.replace("</DemandeRSA></IdentificationRSA>", "</DemandeRSA>\n    </IdentificationRSA>")
    for old, new in (
        (
            "</DemandeRSA>\n    </IdentificationRSA>",
            transfer_blocks(cedant=("CAF", "541", "0009876", "2024-01-10"), prenant=("MSA", "555", "2024-03-01")),
        ),
        ("</Personne>", "</Personne>" + CONJOINT),
        ("</EtatDossierRSA>", SITUATION),
        ("<COMPLADR/>", "<COMPLADR> BAT B </COMPLADR>"),
        ("<LIEUDIST/>", "<LIEUDIST>LES ORMES</LIEUDIST>"),
        ("<FG>ENTDED</FG>", "<FG>ENTDED</FG></Evenement><Evenement><DTLIQ>2024-02-28</DTLIQ><FG>SUSDRO</FG>"),
    ):
        assert xml.count(old) == 1, old
        xml = xml.replace(old, new)
    path = tmp_path / "every_field.xml"
    path.write_text(xml, encoding="windows-1252")
    return path


def test_every_prepared_value_of_a_foyer_that_carries_them_all(tmp_path):
    (record,) = list(FluxReader(_file(tmp_path)))
    prepared = Prepared.named(Deriver(KEY).prepare(record))
    people = prepared.people
    assert prepared._replace(people=[]) == Prepared(
        position=1,
        line=8,
        fonorg="CAF",
        numorg="551",
        matricule="0001234",
        departement="055",
        persons_read=3,
        not_stored=1,
        problems=[],
        events=[("2024-02-29", "ENTDED"), ("2024-02-28", "SUSDRO")],
        people=[],
        missing_blocks=0,
    )
    h = lambda text: key_hash(KEY, text)  # noqa: E731
    nir_hash = NirLookup(KEY).lookup_hash("2900555545123")
    assert [p._replace(state=()) for p in people] == [
        (
            1,
            [
                ("nir", nir_hash),
                ("matricule", h(matricule_key_text("CAF", "551", "0001234", "DEM"))),
                ("numdemrsa", h("dem|55000012345|DEM")),
                ("matricule", h(matricule_key_text("CAF", "541", "0009876", "DEM"))),
                ("identity", h(identity_key_text("EXEMPLE", "CAMILLE", "1990-05-14"))),
            ],
            "2900555545123",
            nir_hash,
            ("MME", "EXEMPLE", "EXEMPLE", "CAMILLE", "1990-05-14", "2"),
            (),
        ),
        (
            2,
            [
                ("matricule", h(matricule_key_text("CAF", "551", "0001234", "CJT"))),
                ("numdemrsa", h("dem|55000012345|CJT")),
                ("matricule", h(matricule_key_text("CAF", "541", "0009876", "CJT"))),
                ("identity", h(identity_key_text("EXEMPLE", "DOMINIQUE", "1988-07-01"))),
            ],
            None,
            None,
            ("MR", "EXEMPLE", "AUTRE", "DOMINIQUE", "1988-07-01", "1"),
            (),
        ),
    ]
    foyer_state = {
        "present": True,
        "absence_reason": None,
        "fonorg": "CAF",
        "numorg": "551",
        "matricule": "0001234",
        "numdemrsa": "55000012345",
        "dtdemrsa": "2024-02-05",
        "etat": "2",
        "suspension_versement_motifs": "01,02",
        "suspension_versement_since": "2024-02-12",
        "suspension_droit_motifs": "DI",
        "suspension_droit_since": "2024-02-10",
        "closure_motif": "PCG",
        "closure_date": "2024-02-28",
        "transfer_in_from": "CAF 541",
        "transfer_in_date": "2024-01-10",
        "transfer_out_to": "MSA 555",
        "transfer_out_date": "2024-03-01",
        "numcom": "55545",
        "codepos": "55100",
        "nomcom": "VERDUN",
        "adresse": "12 RUE DES EXEMPLES / BAT B / LES ORMES",
        "sitfam": "ISO",
        "ddnatdro": "2024-02-01",
        "refusal_motif": "DSD",
        "refusal_date": "2024-02-06",
        "pays": None,
    }
    demandeur = {"role": "DEM", "sdd": True, "idassedic": None, "death_date": None, "sdd_entrant": True}
    conjoint = {"role": "CJT", "sdd": False, "idassedic": "1234567A", "death_date": "2024-02-20", "sdd_entrant": False}
    assert [dict(zip(STATE_COLUMNS, p.state, strict=True)) for p in people] == [
        {**foyer_state, **demandeur},
        {**foyer_state, **conjoint},
    ]

"""The flux parser: structure, encodings, gzip, hardening, and the per-record problems it reports."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pytest

from app.flux.reader import REJECT_FOYER, REJECT_PERSON, WARNING, FluxReader, FluxRejected
from app.security.nir import nir_key
from tests.support.fluxbuilder import NIR_A, NIR_B, foyer, person, text_of, write_flux

EXAMPLE = Path(__file__).resolve().parents[1] / "support" / "data" / "example_vrsb0801.xml"


def read_all(path: Path):
    reader = FluxReader(path)
    return reader, list(reader)


def rejected(path: Path) -> FluxRejected:
    with pytest.raises(FluxRejected) as info:
        read_all(path)
    return info.value


def test_the_documented_example_is_read_field_by_field():
    reader, foyers = read_all(EXAMPLE)
    assert reader.header is not None
    assert (reader.header.applieme, reader.header.type_flux, reader.header.dtref) == ("CRI", "I", date(2024, 2, 29))
    assert reader.trailer is not None and reader.trailer.declared_foyers == 1
    (f,) = foyers
    assert (f.fonorg, f.numorg, f.matricule, f.departement) == ("CAF", "551", "0001234", "055")
    assert (f.numdemrsa, f.dtdemrsa, f.etat, f.ddnatdro) == ("55000012345", date(2024, 2, 5), "2", date(2024, 2, 1))
    assert (f.address.numcom, f.address.codepos, f.address.nomcom) == ("55545", "55100", "VERDUN")
    assert f.sitfam == "ISO"
    assert f.events == [(date(2024, 2, 29), "ENTDED")]
    (p,) = f.persons
    assert (p.role, p.nom, p.prenom, p.date_naissance, p.sexe) == ("DEM", "EXEMPLE", "CAMILLE", date(1990, 5, 14), "2")
    assert (p.nir13, p.sdd, p.sdd_entrant) == ("2900555545123", True, True)
    assert f.problems == []


@pytest.mark.parametrize("encoding", ["windows-1252", "UTF-8", "ISO-8859-15", "ISO-8859-1"])
def test_declared_encodings(tmp_path, encoding):
    path = write_flux(tmp_path, [foyer(person(nom="LÉGER", prenom="FRANÇOISE", sexe="2"))], encoding=encoding)
    _, (f,) = read_all(path)
    assert (f.persons[0].nom, f.persons[0].prenom) == ("LÉGER", "FRANÇOISE")


def test_gzip_is_detected_by_content_not_name(tmp_path):
    path = write_flux(tmp_path, [foyer()], compress=True)
    renamed = path.with_name("flux_without_extension")
    path.rename(renamed)
    reader, foyers = read_all(renamed)
    assert len(foyers) == 1
    plain = write_flux(tmp_path, [foyer()], name="plain.xml")
    plain_reader, _ = read_all(plain)
    assert reader.content_sha256 == plain_reader.content_sha256, "the hash is over the XML, not the wrapper"


def test_vrsd0301_revision_is_a_mapping(tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer(person())]))
    xml = xml.replace(
        "<Prestations><NATPREST>PFA</NATPREST><ROLEPERS>DEM</ROLEPERS><TOPCHAPERS>0</TOPCHAPERS></Prestations>",
        "<FonctionPersonnePFA><ROLEPERS>DEM</ROLEPERS></FonctionPersonnePFA>",
    ).replace(
        "<Prestations><NATPREST>RSA</NATPREST><ROLEPERS>DEM</ROLEPERS><TOPCHAPERS>1</TOPCHAPERS></Prestations>",
        "<FonctionPersonneRSA><ROLEPERS>BEN</ROLEPERS></FonctionPersonneRSA>",
    )
    start = xml.index("<MontantCalculDroitRSAPersonne>")
    end = xml.index("</MontantCalculDroitRSAPersonne>") + len("</MontantCalculDroitRSAPersonne>")
    xml = (
        xml[:start]
        + "<CalculDroitRSAPersonne><DDSOUDRODEV>2024-01-01</DDSOUDRODEV></CalculDroitRSAPersonne>"
        + xml[end:]
    )
    path = tmp_path / "vrsd.xml"
    path.write_text(xml, encoding="windows-1252")
    _, (f,) = read_all(path)
    (p,) = f.persons
    assert (p.role, p.sdd, p.sdd_since, p.nir13) == ("BEN", True, date(2024, 1, 1), NIR_A)


def test_vrsd0301_header_dossier_right_details_absent_dates_and_event_motives_are_mapped(tmp_path):
    """The other VRSD0301 differences (shared/formats/caf-flux.md): the header's VERSIONFLUX, DossierCafMsa,
    LISPRENOMS, PAYSNAI, the trailer's NBCARATRANSM,
    DetailCalculDroitRSA split into RSASocle / RSAActivite whose absent dates are written ABS, and the
    event's cause in Evenement/ListeMotifsEvenement/MOTITRANSFLUX. Read without a warning."""
    import re

    xml = text_of(write_flux(tmp_path, [foyer(person(), events=["MODIFADR"])]))
    xml = xml.replace("</IdentificationFlux>", "<VERSIONFLUX>V3.1</VERSIONFLUX></IdentificationFlux>")
    xml = xml.replace("<DossierCAF>", "<DossierCafMsa>").replace("</DossierCAF>", "</DossierCafMsa>")
    xml = xml.replace("<SEXE>1</SEXE>", "<SEXE>1</SEXE><LISPRENOMS>JEAN PAUL</LISPRENOMS><PAYSNAI>FRA</PAYSNAI>")
    xml = xml.replace("</TransmissionFlux>", "<NBCARATRANSM>000012345</NBCARATRANSM></TransmissionFlux>")
    xml, n = re.subn(
        r"<DetailCalculDroitRSA>.*?</DetailCalculDroitRSA>",
        "<RSASocle><DDNATDRO>2024-02-01</DDNATDRO><DFNATDRO>ABS</DFNATDRO></RSASocle>"
        "<RSAActivite><DDNATDRO>ABS</DDNATDRO><DFNATDRO>ABS</DFNATDRO></RSAActivite>",
        xml,
    )
    assert n == 1
    xml, n = re.subn(
        r"<FG>(\w+)</FG>", r"<ListeMotifsEvenement><MOTITRANSFLUX>\1</MOTITRANSFLUX></ListeMotifsEvenement>", xml
    )
    assert n == 1
    path = tmp_path / "vrsd-more.xml"
    path.write_text(xml, encoding="windows-1252")
    _, (f,) = read_all(path)
    assert f.problems == [], f.problems
    assert f.ddnatdro == date(2024, 2, 1)
    assert [fg for _d, fg in f.events] == ["MODIFADR"]
    assert f.persons[0].nom == "DUPONT"


def test_unknown_elements_are_skipped(tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer()]))
    xml = xml.replace(
        "<DonneesAdministratives>",
        "<Ressources><NATRESS>X</NATRESS><NOM>NOT A NAME</NOM></Ressources><Controle/><DonneesAdministratives>",
        1,
    )
    xml = xml.replace("</IdentificationFlux>", "</IdentificationFlux><!-- a comment --><?pi x?>")
    path = tmp_path / "extra.xml"
    path.write_text(xml, encoding="windows-1252")
    _, (f,) = read_all(path)
    assert f.persons[0].nom == "DUPONT"
    assert f.problems == []


# -- whole-file rejections -------------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "bad.xml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_xxe_is_refused(tmp_path):
    path = _write(
        tmp_path,
        '<?xml version="1.0"?><!DOCTYPE Racine [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        "<Racine><IdentificationFlux><APPLIEME>&xxe;</APPLIEME></IdentificationFlux></Racine>",
    )
    err = rejected(path)
    assert err.code == "forbidden_dtd"


def test_billion_laughs_is_refused(tmp_path):
    lol = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{"&lol" + (str(i - 1) if i > 1 else "") + ";" * 1}' * 10 + '">' for i in range(1, 10)
    )
    path = _write(tmp_path, f'<?xml version="1.0"?><!DOCTYPE Racine [{lol}]><Racine>&lol9;</Racine>')
    assert rejected(path).code == "forbidden_dtd"


def test_undeclared_entity_is_malformed(tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer()])).replace("<NOM>DUPONT</NOM>", "<NOM>&foo;</NOM>")
    assert rejected(_write(tmp_path, xml.replace("windows-1252", "UTF-8"))).code == "malformed_xml"


def test_malformed_xml_names_the_line(tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer(), foyer(matricule="0009999")]))
    lines = xml.splitlines()
    lines[3] = lines[3].replace("<NOM>", "<NOM", 1)
    err = rejected(_write(tmp_path, "\n".join(lines).replace("windows-1252", "UTF-8")))
    assert err.code == "malformed_xml"
    assert err.position == "line 4"


def test_wrong_root(tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer()])).replace("<Racine>", "<Autre>").replace("</Racine>", "</Autre>")
    err = rejected(_write(tmp_path, xml.replace("windows-1252", "UTF-8")))
    assert err.code == "wrong_root" and "Autre" in err.reason


def test_root_without_our_elements(tmp_path):
    assert rejected(_write(tmp_path, "<?xml version='1.0'?><html><body/></html>")).code == "wrong_root"


def test_missing_header(tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer()]))
    start, end = xml.index("<IdentificationFlux>"), xml.index("</IdentificationFlux>") + len("</IdentificationFlux>")
    err = rejected(_write(tmp_path, (xml[:start] + xml[end:]).replace("windows-1252", "UTF-8")))
    assert err.code == "missing_header"


def test_invalid_header(tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer()])).replace("<TYPEFLUX>I</TYPEFLUX>", "<TYPEFLUX>X</TYPEFLUX>")
    assert rejected(_write(tmp_path, xml.replace("windows-1252", "UTF-8"))).code == "invalid_header"


def test_missing_trailer_is_truncation(tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer(), foyer(matricule="0002")]))
    start = xml.index("<TransmissionFlux>")
    end = xml.index("</TransmissionFlux>") + len("</TransmissionFlux>")
    err = rejected(_write(tmp_path, (xml[:start] + xml[end:]).replace("windows-1252", "UTF-8")))
    assert err.code == "truncated"
    assert "after foyer 2" in err.reason


def test_file_cut_in_the_middle_of_a_foyer(tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer(), foyer(matricule="0002"), foyer(matricule="0003")]))
    cut = xml.index("<InfosFoyerRSA>", xml.index("<InfosFoyerRSA>") + 10) + 200
    err = rejected(_write(tmp_path, xml[:cut].replace("windows-1252", "UTF-8")))
    assert err.code == "truncated"
    assert "after foyer 1" in err.reason
    assert err.position and err.position.startswith("line")


def test_trailer_count_mismatch(tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer(), foyer(matricule="0002")]))
    xml = xml.replace("<NBTOTDOSRSATRANSM>00000002<", "<NBTOTDOSRSATRANSM>00000003<")
    err = rejected(_write(tmp_path, xml.replace("windows-1252", "UTF-8")))
    assert err.code == "count_mismatch"
    assert "announces 3" in err.reason and "holds 2" in err.reason


def test_truncated_gzip(tmp_path):
    path = write_flux(tmp_path, [foyer() for _ in range(50)], compress=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert rejected(path).code == "truncated"


def test_empty_file(tmp_path):
    assert rejected(_write(tmp_path, "   \n")).code == "empty"
    path = tmp_path / "empty.gz"
    path.write_bytes(gzip.compress(b""))
    assert rejected(path).code == "empty"


def test_binary_garbage(tmp_path):
    path = tmp_path / "garbage.xml"
    path.write_bytes(bytes(range(256)) * 10)
    assert rejected(path).code in ("malformed_xml", "truncated")


# -- problems inside one record --------------------------------------------------------------


def _problems(f):
    return [(sev, code) for sev, code, _ in f.problems]


def test_bad_nir_key_is_dropped_with_a_warning(tmp_path):
    good = person(NIR_A, with_key=True)
    bad = person(NIR_B, role="CJT", prenom="MARIE", sexe="2")
    xml = text_of(write_flux(tmp_path, [foyer(good, bad)]))
    wrong_key = (nir_key(NIR_B) + 1) % 97
    xml = xml.replace(f"<NIR>{NIR_B}</NIR>", f"<NIR>{NIR_B}{wrong_key:02d}</NIR>")
    _, (f,) = read_all(_write(tmp_path, xml.replace("windows-1252", "UTF-8")))
    assert f.persons[0].nir13 == NIR_A, "a 15-character NIR with the right key is kept"
    assert f.persons[1].nir13 is None
    assert _problems(f) == [(WARNING, "invalid_nir")]
    assert NIR_B not in f.problems[0][2], "a report never repeats a NIR"


def test_corsican_nir_key():
    from app.security.nir import normalize_nir

    nir13 = "185072A012345"
    assert normalize_nir(nir13 + f"{nir_key(nir13):02d}").nir13 == nir13
    assert nir_key("1850720012345") != nir_key(nir13)


def test_unknown_code_kept_impossible_date_dropped(tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer()]))
    xml = xml.replace("<ETATDOSRSA>2</ETATDOSRSA>", "<ETATDOSRSA>9</ETATDOSRSA>")
    xml = xml.replace("<DTNAI>1990-01-15</DTNAI>", "<DTNAI>1990-02-30</DTNAI>")
    _, (f,) = read_all(_write(tmp_path, xml.replace("windows-1252", "UTF-8")))
    assert f.etat == "9"
    assert f.persons[0].date_naissance is None
    assert sorted(_problems(f)) == [(WARNING, "invalid_date"), (WARNING, "unknown_code")]
    messages = " ".join(m for _, _, m in f.problems)
    assert "foyer 1" in messages and "person 1" in messages and "DTNAI" in messages
    assert "1990-02-30" not in messages, "a (birth) date is personal data: reports do not repeat it"


def test_person_twice_in_a_foyer(tmp_path):
    _, (f,) = read_all(write_flux(tmp_path, [foyer(person(), person())]))
    assert len(f.persons) == 1
    assert _problems(f) == [(REJECT_PERSON, "duplicate_person")]


def test_foyer_without_matricule(tmp_path):
    xml = text_of(write_flux(tmp_path, [foyer()])).replace("<MATRICULE>0001234</MATRICULE>", "")
    _, (f,) = read_all(_write(tmp_path, xml.replace("windows-1252", "UTF-8")))
    assert (REJECT_FOYER, "missing_field") in _problems(f)


def test_children_identity_is_not_read(tmp_path):
    child = person(None, role="ENF", nom="ENFANT", prenom="PETIT", dtnai=date(2015, 1, 1))
    _, (f,) = read_all(write_flux(tmp_path, [foyer(person(), child)]))
    assert f.persons[1].role == "ENF"
    assert f.persons[1].nom is None, "data minimisation: only BRSA (DEM/CJT) identities are read"

"""Mutations of a valid flux file for hypothesis: truncations, deletions, insertions of fragments that
matter to the parser, flipped bytes, duplicated runs."""

from __future__ import annotations

from hypothesis import strategies as st

FRAGMENTS = [
    b"<",
    b">",
    b"</InfosFoyerRSA>",
    b"<InfosFoyerRSA>",
    b"&",
    b"&amp;",
    b"\x00",
    b"\xff\xfe",
    b"]]>",
    b"<!DOCTYPE x [<!ENTITY e 'x'>]>",
    b"<Personne>",
    b"2024-13-45",
    b"\xe9",
    b"<![CDATA[x]]>",
    b"true",
    b"false",
    b"<FinDroitMoisAnterieur>",
    b"</OrganismeCedant>",
    b"<MATRICULEORGCEDMUT>",
    b"<Refus>",
    b"<MOTIREFURSA>",
    b"</AdresseHorsFrance>",
    b"<PAYS>",
]

mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 400)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(FRAGMENTS)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("duplicate"), st.floats(0, 1), st.integers(1, 600)),
)


def apply(data: bytes, m: tuple) -> bytes:
    pos = int(m[1] * (len(data) - 1))
    if m[0] == "truncate":
        return data[:pos]
    if m[0] == "delete":
        return data[:pos] + data[pos + m[2] :]
    if m[0] == "insert":
        return data[:pos] + m[2] + data[pos:]
    if m[0] == "flip":
        return data[:pos] + bytes([m[2]]) + data[pos + 1 :]
    return data[: pos + m[2]] + data[pos : pos + m[2]] + data[pos + m[2] :]

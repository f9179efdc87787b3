"""The order of dated facts, in one place.

A flux fact is dated by the day the Département received its file. Facts received the same day are
ordered by the file's creation time (DTCREAFLUX + HEUCREAFLUX), then by the kind of file — a full file
(reprise `R`, then monthly `M`) is the picture the daily file (`I`) of the same instant changes — then by
the file's id, then by the record's rank in the file. Only the id depends on the order files arrived in:
it separates two files of the same kind created at the same instant and received the same day, which, for
one département, come from two organismes (CAF and MSA) and speak of different foyers.

In SQL the kind's rank is `type_flux` descending ('R' > 'M' > 'I'); `KIND_RANK` says the same in Python.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

KIND_RANK = {"R": 0, "M": 1, "I": 2}

FileKey = tuple[date, datetime, int, int]  # (received_on, created_at, kind rank, file id)


def file_key(received_on: date, created_at: datetime, type_flux: str | None, file_id: int) -> FileKey:
    return (received_on, created_at, KIND_RANK.get(type_flux or "I", 2), file_id)


def state_order(ps: Any, descending: bool = False) -> tuple[Any, ...]:
    """ORDER BY for person_states rows (`ps`: the table's columns) in the order of dated facts."""
    columns = (ps.received_on, ps.file_created_at, ps.type_flux.desc(), ps.file_id, ps.seq)
    if not descending:
        return columns
    return (ps.received_on.desc(), ps.file_created_at.desc(), ps.type_flux, ps.file_id.desc(), ps.seq.desc())


def states_up_to(ps: Any, key: FileKey, type_flux: str, inclusive: bool = True) -> Any:
    """person_states rows dated up to the file `key` (of kind `type_flux`): that file's own rows included,
    or (`inclusive=False`) only the rows dated before it."""
    r, c, _rank, fid = key
    same_instant = (ps.received_on == r) & (ps.file_created_at == c)
    same_file = ps.file_id <= fid if inclusive else ps.file_id < fid
    return (
        (ps.received_on < r)
        | ((ps.received_on == r) & (ps.file_created_at < c))
        | (same_instant & (ps.type_flux > type_flux))
        | (same_instant & (ps.type_flux == type_flux) & same_file)
    )


def files_after(ft: Any, key: FileKey, type_flux: str) -> Any:
    """flux_files rows dated after the file `key` (of kind `type_flux`)."""
    r, c, _rank, fid = key
    same_instant = (ft.received_on == r) & (ft.created_at_caf == c)
    return (
        (ft.received_on > r)
        | ((ft.received_on == r) & (ft.created_at_caf > c))
        | (same_instant & (ft.type_flux < type_flux))
        | (same_instant & (ft.type_flux == type_flux) & (ft.id > fid))
    )


def file_order(ft: Any) -> tuple[Any, ...]:
    """ORDER BY for flux_files rows in the order of dated facts."""
    return (ft.received_on, ft.created_at_caf, ft.type_flux.desc(), ft.id)

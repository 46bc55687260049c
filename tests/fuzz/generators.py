"""Seeded generators of bad input for every place input enters galpipe.

One module for the fuzz tests (``tests/fuzz/``, which draw seeds with hypothesis) and the bad-input
benchmark (``bench/bad_inputs.py``, which draws them from ``random.Random``). Each generator takes
a ``random.Random`` and returns one case that says what it is (``name``), what it holds and, where
the answer is certain, what galpipe must do with it: the oracles in :mod:`tests.fuzz.oracles`
judge the answer.

The four entry kinds (:data:`ENTRIES`):

- ``catalog``: a catalogue file (CSV, ECSV, FITS, VOTable) with bad rows, hostile names and
  values, missing columns, wrong encodings, garbage, many rows or a very long line;
- ``cutout``: a cutout service answer body: random bytes, truncated FITS, wrong ``BITPIX`` or
  ``NAXIS``, absurd axis lengths, NaN planes, HTML error pages, gzip;
- ``settings``: one ``GALPIPE_*`` variable (enumerated from :class:`galpipe.settings.Settings`)
  with a value of the wrong type, negative, blank or absurd;
- ``http``: raw bytes sent to one of the project's HTTP servers: garbage request lines, huge
  headers, bad methods, bad ``Content-Length``, truncated bodies, invalid JSON, path traversal,
  absurd query values.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import random
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

__all__ = [
    "CONTROL_PIPELINES",
    "ENTRIES",
    "HTTP_TARGETS",
    "CatalogCase",
    "CutoutCase",
    "HttpCase",
    "SettingCase",
    "catalog_case",
    "cutout_case",
    "gzip_bomb",
    "http_case",
    "setting_case",
    "setting_fields",
    "valid_cutout_body",
]

#: The entry kinds, in the order the benchmark reports them.
ENTRIES = ("catalog", "cutout", "settings", "http")

# ------------------------------------------------------------------------------------------------
# Hostile text, shared by every entry kind

_HOSTILE_TEXT = (
    "'; DROP TABLE galaxies; --",
    "Robert'); DELETE FROM tasks WHERE ('1'='1",
    "$$ SELECT pg_sleep(10) $$",
    "\\copy galaxies to '/tmp/x'",
    "naïve café Ωμέγα",
    "銀河 星系 はくちょう座",
    "\u202eevil\u202c right-to-left",
    "emoji \U0001f30c\U0001f52d",
    "tab\tnew\nline\rcarriage",
    "bell\x07escape\x1b[31mred",
    "nul\x00byte",
    '{"json": [1, 2]}',
    "<script>alert(1)</script>",
    "%s %d %(x)s {0} {x}",
    "../../../../etc/passwd",
    "\ufeffbom",
    "\ufffd replacement",
    "",
    " ",
)


def hostile_text(rng: random.Random) -> str:
    """A short hostile string, or a very long one (10 000 to 100 000 characters)."""
    if rng.random() < 0.1:
        return rng.choice("xé銀\x01") * rng.randint(10_000, 100_000)
    return rng.choice(_HOSTILE_TEXT)


# ------------------------------------------------------------------------------------------------
# Catalogues


@dataclass(frozen=True)
class CatalogCase:
    """One catalogue file to ingest.

    Attributes
    ----------
    name
        What the case is (its generator and the problem), for reports.
    filename
        The file's name; its suffix tells galpipe the format.
    content
        The file's bytes.
    accepted_ids
        The ids that must end up stored (as new or already present) when the file is read; None
        where the generator cannot tell (astropy's type guessing decides).
    may_refuse
        Whether refusing the whole file (a ``CatalogError``) is a right answer.
    must_refuse
        Whether only refusing the whole file is a right answer.
    """

    name: str
    filename: str
    content: bytes
    accepted_ids: frozenset[int] | None = None
    may_refuse: bool = True
    must_refuse: bool = False


_BAD_COORDS = ("nan", "inf", "-inf", "1e999", "abc", "NULL", "360", "360.5", "-0.5", "1e308x")
_BAD_DECS = ("nan", "inf", "91", "-90.5", "abc", "1e999", "--", "9e9")
_BAD_IDS = ("-5", "abc", "9223372036854775808", "99999999999999999999999", "1.5", "0x1F", " ")
_EXTRA_NAMES = (
    "mag_g",
    "comment",
    "Robert'); DROP TABLE galaxies;--",
    "naïve",
    "列",
    "a b",
    "x" * 300,
    'quote"name',
    "%(extra)s",
)


def _valid_row(rng: random.Random, sid: int) -> list[str]:
    return [str(sid), repr(rng.uniform(0.0, 359.999)), repr(rng.uniform(-89.9, 89.9))]


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _csv_bad_rows(rng: random.Random) -> CatalogCase:
    """Valid and bad rows mixed (bad coordinates, bad or duplicate ids); the good ones must land."""
    n = rng.randint(1, 40)
    base = rng.randint(1, 2**40)
    rows: list[list[str]] = []
    accepted: set[int] = set()
    for i in range(n):
        sid = base + i
        row = _valid_row(rng, sid)
        kind = rng.choice(("good", "good", "ra", "dec", "dup"))
        if kind == "ra":
            row[1] = rng.choice(_BAD_COORDS)
        elif kind == "dec":
            row[2] = rng.choice(_BAD_DECS)
        elif kind == "dup" and accepted:
            row[0] = str(rng.choice(sorted(accepted)))
        else:
            accepted.add(sid)
        rows.append(row)
    return CatalogCase(
        f"csv rows with bad coordinates and duplicate ids ({n} rows)",
        "bad_rows.csv",
        _csv_bytes(["source_id", "ra", "dec"], rows),
        frozenset(accepted),
        may_refuse=False,
    )


def _csv_bad_ids(rng: random.Random) -> CatalogCase:
    """Ids that are negative, not integers, or beyond int64 (astropy's column type varies)."""
    n = rng.randint(2, 20)
    rows = [_valid_row(rng, rng.randint(1, 2**40)) for _ in range(n)]
    for row in rng.sample(rows, rng.randint(1, n)):
        row[0] = rng.choice(_BAD_IDS)
    return CatalogCase(
        "csv with bad ids", "bad_ids.csv", _csv_bytes(["source_id", "ra", "dec"], rows)
    )


def _csv_hostile_extras(rng: random.Random) -> CatalogCase:
    """Good rows whose extra columns have hostile names and values: every row must land."""
    n = rng.randint(1, 20)
    extras = rng.sample(_EXTRA_NAMES, rng.randint(1, 4))
    base = rng.randint(1, 2**40)
    rows = [_valid_row(rng, base + i) + [hostile_text(rng) for _ in extras] for i in range(n)]
    return CatalogCase(
        "csv with hostile extra column names and values",
        "hostile.csv",
        _csv_bytes(["source_id", "ra", "dec", *extras], rows),
        frozenset(base + i for i in range(n)),
    )


def _csv_hostile_header(rng: random.Random) -> CatalogCase:
    """Duplicate, blank, or hostile column names, the id/ra/dec columns renamed or missing."""
    header = ["source_id", "ra", "dec"]
    choice = rng.randrange(5)
    if choice == 0:
        header.append(rng.choice(("ra", "source_id", "dec")))  # a duplicate name
    elif choice == 1:
        header[rng.randrange(3)] = hostile_text(rng)[:200]
    elif choice == 2:
        header.append("")
    elif choice == 3:
        header = [rng.choice(_EXTRA_NAMES) for _ in range(3)]
    else:
        header = ["RA", "DEC", "SOURCE_ID", "ra"]  # case-folded duplicates
    n = rng.randint(1, 10)
    rows = [_valid_row(rng, rng.randint(1, 2**40)) + ["1"] * (len(header) - 3) for _ in range(n)]
    return CatalogCase("csv with hostile header", "header.csv", _csv_bytes(header, rows))


def _csv_missing_columns(rng: random.Random) -> CatalogCase:
    dropped = rng.choice(("source_id", "ra", "dec"))
    header = [c for c in ("source_id", "ra", "dec", "mag") if c != dropped]
    rows = [[str(rng.randint(1, 99)) for _ in header] for _ in range(rng.randint(1, 10))]
    return CatalogCase(
        f"csv without column {dropped}",
        "missing.csv",
        _csv_bytes(header, rows),
        must_refuse=True,
    )


def _csv_ragged(rng: random.Random) -> CatalogCase:
    """Rows with too many or too few cells, unbalanced quotes."""
    lines = ["source_id,ra,dec"]
    for _ in range(rng.randint(1, 10)):
        cells = [str(rng.randint(1, 10**6)), "10.5", "-3.25"]
        cut = rng.randrange(4)
        if cut == 0:
            cells = cells[: rng.randint(0, 2)]
        elif cut == 1:
            cells += ["extra"] * rng.randint(1, 3)
        elif cut == 2:
            cells[1] = '"10.5'
        lines.append(",".join(cells))
    return CatalogCase("ragged csv", "ragged.csv", "\n".join(lines).encode())


def _encoded(rng: random.Random) -> CatalogCase:
    """Latin-1, UTF-16 (with its BOM) or a UTF-8 BOM: an encoding a user's tool may write."""
    n = rng.randint(1, 10)
    base = rng.randint(1, 2**40)
    rows = [[*_valid_row(rng, base + i), "Café Ωμέγα" if i % 2 else "plain"] for i in range(n)]
    text = _csv_bytes(["source_id", "ra", "dec", "note"], rows).decode()
    encoding = rng.choice(("latin-1", "utf-16", "utf-8-sig", "cp1252", "utf-32"))
    content = text.encode(encoding, errors="replace")
    ids = frozenset(base + i for i in range(n))
    # A UTF-8 BOM is ordinary UTF-8 (Excel writes it): the rows must land.
    if encoding == "utf-8-sig":
        return CatalogCase("csv with a UTF-8 BOM", "bom.csv", content, ids, may_refuse=False)
    return CatalogCase(f"csv in {encoding}", f"{encoding}.csv", content, ids)


def _garbage(rng: random.Random) -> CatalogCase:
    """Random bytes, an HTML page or a NUL-filled file under a catalogue suffix."""
    suffix = rng.choice((".csv", ".ecsv", ".fits", ".vot", ".xml", ".fit", ".dat", ""))
    kind = rng.randrange(4)
    if kind == 0:
        content = rng.randbytes(rng.randint(1, 4096))
    elif kind == 1:
        content = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    elif kind == 2:
        content = b"\x00" * rng.randint(1, 5000)
    else:
        content = b""
    # The CSV reader takes one line of anything as a header: such a file lacks the columns.
    return CatalogCase(
        f"garbage{suffix or ' without suffix'}", f"garbage{suffix}", content, must_refuse=True
    )


def _ecsv(rng: random.Random) -> CatalogCase:
    """ECSV with wrong declared types, a non-angle unit, or a broken YAML header."""
    n = rng.randint(1, 8)
    base = rng.randint(1, 2**40)
    unit = rng.choice(("deg", "rad", "hourangle", "m", "Jy", "furlong", "deg**2"))
    ra_type = rng.choice(("float64", "int64", "string", "bool", "complex128"))
    header = (
        "# %ECSV 1.0\n# ---\n# datatype:\n"
        "# - {name: source_id, datatype: int64}\n"
        f"# - {{name: ra, unit: {unit}, datatype: {ra_type}}}\n"
        "# - {name: dec, unit: deg, datatype: float64}\n"
    )
    if rng.random() < 0.3:
        header = header.replace(
            "datatype:\n",
            rng.choice(("datatype: [\n", "datatype: {{\n", "x: !!python/object:os.system\n")),
        )
    body = "source_id ra dec\n" + "".join(
        f"{base + i} {rng.choice(('1.5', 'nan', 'True', '2+1j', 'abc', '3'))} 10.0\n"
        for i in range(n)
    )
    return CatalogCase(f"ecsv ra {ra_type} [{unit}]", "typed.ecsv", (header + body).encode())


@functools.lru_cache(maxsize=1)
def _fits_table_bytes() -> bytes:
    from astropy.table import Table

    table = Table(
        {
            "source_id": np.arange(1, 6, dtype=np.int64),
            "ra": np.linspace(10, 20, 5),
            "dec": np.linspace(-5, 5, 5),
            "name": np.array(["a", "b", "c", "d", "e"]),
        }
    )
    buf = io.BytesIO()
    table.write(buf, format="fits")
    return buf.getvalue()


def _fits(rng: random.Random) -> CatalogCase:
    """FITS tables with wrong column types or shapes, or a valid one truncated or flipped."""
    from astropy.table import Table

    kind = rng.randrange(3)
    if kind == 0:
        n = rng.randint(1, 6)
        columns: dict[str, object] = {
            "source_id": rng.choice(
                (
                    np.arange(n) + 1,
                    np.ones(n, dtype=bool),
                    np.full(n, 1.5),
                    np.array([str(i) for i in range(n)]),
                    np.arange(n * 2).reshape(n, 2),
                )
            ),
            "ra": rng.choice(
                (
                    np.full(n, 10.0),
                    np.full(n, np.nan),
                    np.array(["x"] * n),
                    np.full((n, 3), 1.0),
                    np.full(n, 1 + 2j),
                )
            ),
            "dec": np.full(n, rng.choice((0.0, 95.0, -np.inf))),
        }
        buf = io.BytesIO()
        Table(columns).write(buf, format="fits")
        return CatalogCase("fits with wrong column types", "types.fits", buf.getvalue())
    content = bytearray(_fits_table_bytes())
    if kind == 1:
        del content[rng.randint(0, len(content) - 1) :]
        return CatalogCase("truncated fits table", "truncated.fits", bytes(content))
    for _ in range(rng.randint(1, 20)):
        content[rng.randrange(len(content))] = rng.randrange(256)
    return CatalogCase("fits table with flipped bytes", "flipped.fits", bytes(content))


@functools.lru_cache(maxsize=1)
def _votable_bytes() -> bytes:
    from astropy.table import Table

    table = Table({"source_id": np.arange(1, 4), "ra": [1.0, 2.0, 3.0], "dec": [0.0, 1.0, 2.0]})
    buf = io.BytesIO()
    table.write(buf, format="votable")
    return buf.getvalue()


def _votable(rng: random.Random) -> CatalogCase:
    """A VOTable truncated, with a hostile value or an entity expansion in it."""
    text = _votable_bytes().decode()
    kind = rng.randrange(3)
    if kind == 0:
        text = text[: rng.randint(0, len(text) - 1)]
    elif kind == 1:
        text = text.replace(
            "<TD>2</TD>",
            "<TD>" + rng.choice(("abc", "1e999", "-1", "&amp;", "<![CDATA[x]]>")) + "</TD>",
            1,
        )
    else:
        text = text.replace(
            "<VOTABLE",
            '<!DOCTYPE v [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n<VOTABLE',
            1,
        ).replace("<TD>1</TD>", "<TD>&b;</TD>", 1)
    return CatalogCase("malformed votable", "bad.vot", text.encode())


def _big(rng: random.Random) -> CatalogCase:
    """Many rows (up to 20 000) or one very long line (up to 2 MB in an extra column)."""
    if rng.random() < 0.5:
        n = rng.randint(5_000, 20_000)
        base = rng.randint(1, 2**40)
        ra = np.random.default_rng(rng.randrange(2**32)).uniform(0, 359, n).tolist()
        lines = ["source_id,ra,dec"] + [f"{base + i},{ra[i]!r},{(i % 170) - 85}" for i in range(n)]
        return CatalogCase(
            f"csv of {n} rows",
            "many.csv",
            "\n".join(lines).encode(),
            frozenset(range(base, base + n)),
            may_refuse=False,
        )
    sid = rng.randint(1, 2**40)
    long_value = "y" * rng.randint(100_000, 2_000_000)
    content = f"source_id,ra,dec,blob\n{sid},10.0,20.0,{long_value}\n".encode()
    return CatalogCase("csv with one very long line", "long.csv", content, frozenset({sid}))


_CATALOG_GENERATORS: tuple[tuple[Callable[[random.Random], CatalogCase], float], ...] = (
    (_csv_bad_rows, 4),
    (_csv_bad_ids, 2),
    (_csv_hostile_extras, 3),
    (_csv_hostile_header, 2),
    (_csv_missing_columns, 1),
    (_csv_ragged, 1),
    (_encoded, 2),
    (_garbage, 2),
    (_ecsv, 2),
    (_fits, 2),
    (_votable, 1),
    (_big, 0.1),
)


def catalog_case(rng: random.Random, *, big: bool = True) -> CatalogCase:
    """One bad catalogue; ``big=False`` leaves out the many-rows and long-line files."""
    generators = [(g, w) for g, w in _CATALOG_GENERATORS if big or g is not _big]
    generator = rng.choices([g for g, _ in generators], [w for _, w in generators])[0]
    return generator(rng)


# ------------------------------------------------------------------------------------------------
# Cutout bodies

#: What the fetch pipeline asks for in the cutout cases (the layout's defaults).
CUTOUT_BANDS = "griz"
CUTOUT_SIZE = 40
CUTOUT_PIXSCALE = 0.262
CUTOUT_CENTER = (150.1, 2.2)


@dataclass(frozen=True)
class CutoutCase:
    """One answer body of the cutout service, with how it is sent.

    Attributes
    ----------
    name
        What the case is, for reports.
    body
        The bytes of the body.
    status
        The HTTP status it comes with.
    usable
        True: the body is a cutout of the requested layout (a Success or NoCoverage is right);
        False: it must not be taken as a cutout; None: either (bytes flipped in the pixels).
    """

    name: str
    body: bytes
    status: int = 200
    usable: bool | None = False


@functools.lru_cache(maxsize=1)
def valid_cutout_body() -> bytes:
    """A cutout of the requested layout, as the service writes it (a smooth blob in each band)."""
    from galpipe.synthetic.fitsfile import cube_fits_bytes

    y, x = np.mgrid[:CUTOUT_SIZE, :CUTOUT_SIZE] - CUTOUT_SIZE / 2
    blob = np.exp(-(x**2 + 2 * y**2) / 30.0).astype(np.float32)
    cube = np.stack([blob * (b + 1) for b in range(len(CUTOUT_BANDS))])
    return cube_fits_bytes(cube, *CUTOUT_CENTER, CUTOUT_PIXSCALE, CUTOUT_BANDS)


def _set_card(body: bytes, key: str, value: str) -> bytes:
    """``body`` with card ``key`` set to the text ``value``: replaced in place, else added before
    ``END`` (the primary header has blank cards to spare)."""
    card = (key.ljust(8) + "= " + value.rjust(20))[:80].ljust(80).encode("ascii", errors="replace")
    header_end = body.find(b"END" + b" " * 77)
    cards = [body[i : i + 80] for i in range(0, header_end, 80)]
    for i, old in enumerate(cards):
        if old.startswith(key.ljust(8).encode() + b"="):
            return body[: i * 80] + card + body[(i + 1) * 80 :]
    if body[header_end + 80 : header_end + 160] != b" " * 80:
        raise ValueError("no room for another card before the end of the header block")
    return body[:header_end] + card + b"END".ljust(80) + body[header_end + 160 :]


def _with_cube(cube: np.ndarray) -> bytes:
    from galpipe.synthetic.fitsfile import cube_fits_bytes

    return cube_fits_bytes(cube, *CUTOUT_CENTER, CUTOUT_PIXSCALE, CUTOUT_BANDS)


def gzip_bomb(inflated_bytes: int) -> bytes:
    """Gzip of zeros inflating to ``inflated_bytes`` (about 1000:1), written 1 MiB a step."""
    buf = io.BytesIO()
    chunk = b"\0" * (1 << 20)
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as stream:
        for _ in range(inflated_bytes // len(chunk)):
            stream.write(chunk)
    return buf.getvalue()


def cutout_case(rng: random.Random) -> CutoutCase:
    """One bad (or, for contrast, good) answer body."""
    good = valid_cutout_body()
    kind = rng.randrange(14)
    if kind == 0:
        return CutoutCase("random bytes", rng.randbytes(rng.randint(0, 40_000)))
    if kind == 1:
        return CutoutCase("truncated fits", good[: rng.randint(0, len(good) - 2881)])
    if kind == 2:
        value = rng.choice(("8", "16", "32", "64", "-16", "0", "'abc'", "T", "1E3", "-32.5", ""))
        return CutoutCase(f"BITPIX = {value}", _set_card(good, "BITPIX", value))
    if kind == 3:
        value = rng.choice(
            ("-1", "0", "2", "4", "1000", "999", "'3'", "3.5", "F", "99999999999999999999")
        )
        return CutoutCase(f"NAXIS = {value}", _set_card(good, "NAXIS", value))
    if kind == 4:
        key = rng.choice(("NAXIS1", "NAXIS2", "NAXIS3"))
        value = rng.choice(("1000000000", "-40", "0", "'40'", "40.0", "2147483648", "9" * 19, "1"))
        return CutoutCase(f"{key} = {value}", _set_card(good, key, value))
    if kind == 5:
        cube = np.zeros((len(CUTOUT_BANDS), CUTOUT_SIZE, CUTOUT_SIZE), np.float32)
        planes = rng.sample(range(len(CUTOUT_BANDS)), rng.randint(1, len(CUTOUT_BANDS)))
        cube[:] = 1.0
        cube[planes] = rng.choice((np.nan, np.inf, -np.inf, 0.0))
        return CutoutCase(f"non-finite or blank planes {planes}", _with_cube(cube), usable=True)
    if kind == 6:
        title = rng.choice(("502 Bad Gateway", "Maintenance", "Error"))
        page = (
            f"<!DOCTYPE html><html><head><title>{title}"
            "</title></head><body>NERSC maintenance</body></html>"
        ).encode()
        return CutoutCase(
            "html error page", page, status=rng.choice((200, 200, 500, 502, 503, 404))
        )
    if kind == 7:
        return CutoutCase("gzip-compressed fits", gzip.compress(good))
    if kind == 8:
        return CutoutCase("gzip bomb as the body", gzip_bomb(rng.choice((1, 4, 16)) << 20))
    if kind == 9:
        key, value = rng.choice(
            (
                ("BSCALE", "0"),
                ("BZERO", "'x'"),
                ("CRVAL2", "95.0"),
                ("CRVAL1", "NAN"),
                ("CTYPE1", "'RA---SIN'"),
                ("CD1_1", "0.0"),
                ("BANDS", "'gr'"),
                ("CRPIX1", "'abc'"),
                ("SIMPLE", "F"),
            )
        )
        return CutoutCase(f"{key} = {value}", _set_card(good, key, value))
    if kind == 10:
        flipped = bytearray(good)
        for _ in range(rng.randint(1, 30)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        return CutoutCase("fits with flipped bytes", bytes(flipped), usable=None)
    if kind == 11:
        cards = bytearray(good[:2880])
        for _ in range(rng.randint(1, 10)):
            cards[rng.randrange(len(cards))] = rng.choice(b"\x00\xff'=/ \x7f")
        return CutoutCase("header with garbled cards", bytes(cards) + good[2880:], usable=None)
    if kind == 12:
        return CutoutCase("no such layer", b"no such layer")
    return CutoutCase("the good cutout", good, usable=True)


# ------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class SettingCase:
    """One ``GALPIPE_*`` variable with one value.

    Attributes
    ----------
    field
        The :class:`~galpipe.settings.Settings` field.
    env
        Its variable, e.g. ``GALPIPE_LEASE_SECONDS``.
    value
        The value given.
    must_refuse
        True where the value cannot be of the field's type (text for a number, a negative
        count …): only a ``SettingsError`` naming the variable is right.
    """

    field: str
    env: str
    value: str
    must_refuse: bool


@functools.lru_cache(maxsize=1)
def setting_fields() -> tuple[tuple[str, str, type], ...]:
    """``(field, env, base type)`` of every setting, from the Settings class itself."""
    from galpipe.settings import Settings

    hints = typing.get_type_hints(Settings)
    out = []
    for f in fields(Settings):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = typing.get_origin(hint) or hint
        if args and base is not tuple:
            base = typing.get_origin(args[0]) or args[0]
        out.append((f.name, f.metadata["env"], base))
    return tuple(out)


_NOT_NUMBERS = (
    "abc",
    "1O",
    "true",
    "null",
    "None",
    "1,5",
    "0x10",
    "1_0_",
    "--1",
    "1e",
    "½",
    "\x00",
    "٣x",
)
_WRONG_NUMBERS = ("-1", "-0.5", "0", "nan", "-nan", "inf", "-inf", "1e999", "-1e999")
_ABSURD = (
    "1e300",
    "9" * 30,
    "9" * 5000,
    "1" + "0" * 400,
    "2147483648",
    "18446744073709551616",
    "1e-320",
)


def setting_case(rng: random.Random) -> SettingCase:
    """A random variable of :class:`~galpipe.settings.Settings` with a bad value for its type."""
    name, env, base = rng.choice(setting_fields())
    kind = rng.randrange(5)
    if kind == 0:
        # Blank, not empty: an empty variable means unset, a blank one is a mistake.
        return SettingCase(name, env, rng.choice((" ", "\t", "\n ")), must_refuse=True)
    if kind == 1 and base in (int, float):
        return SettingCase(name, env, rng.choice(_NOT_NUMBERS), must_refuse=True)
    if kind == 2 and base in (int, float, tuple):
        value = rng.choice(_WRONG_NUMBERS)
        # 0 is right for some (a port of 0 disables the server, 0 retries, a delay of 0 s).
        return SettingCase(name, env, value, must_refuse=value != "0")
    if kind == 3:
        return SettingCase(name, env, rng.choice(_ABSURD), must_refuse=False)
    return SettingCase(name, env, hostile_text(rng), must_refuse=False)


# ------------------------------------------------------------------------------------------------
# HTTP

#: The servers the project opens: the runtime's health and metrics server, the synthetic sky,
#: the control API.
HTTP_TARGETS = ("health", "sky", "control")
#: Pipelines the control API knows.
CONTROL_PIPELINES = ("fetch", "radon")

_PATHS = {
    "health": ("/healthz", "/readyz", "/metrics", "/", "/nope"),
    "sky": (
        "/viewer/fits-cutout?ra=150.1&dec=2.2&layer=ls-dr10&bands=griz&size=40",
        "/admin/log",
        "/admin/outage?seconds=0",
        "/admin/rate?per_second=0",
        "/healthz",
    ),
    "control": (
        "/api/v1/overview",
        "/api/v1/audit?limit=5",
        "/api/v1/pipelines/fetch/pause",
        "/api/v1/pipelines/radon/retry",
        "/api/v1/session",
        "/api/v1/whoami",
        "/static/console.js",
        "/",
    ),
}

# A valid outage (any positive number of seconds, however large) is the sky's injected fault, not
# bad input: only values it must refuse are sent to /admin/outage.
_ABSURD_QUERIES = {
    "health": ("?x=" + "%" * 50, "?" + "a=1&" * 2000),
    "sky": (
        "/viewer/fits-cutout?ra=nan&dec=2",
        "/viewer/fits-cutout?ra=1e999&dec=-1e999",
        "/viewer/fits-cutout?ra=10&dec=2&size=99999999999999999999999",
        "/viewer/fits-cutout?ra=10&dec=2&size=-1",
        "/viewer/fits-cutout?ra=10&dec=2&pixscale=0",
        "/viewer/fits-cutout?ra=10&dec=2&bands=gggg",
        "/viewer/fits-cutout?ra=10&dec=2&bands=%00",
        "/viewer/fits-cutout?ra=10&dec=2&layer=" + "x" * 5000,
        "/viewer/fits-cutout?ra=%ZZ&dec=%",
        "/viewer/fits-cutout?ra=١٢&dec=٣",
        "/admin/outage?seconds=nan",
        "/admin/outage?seconds=inf",
        "/admin/outage?seconds=-5",
        "/admin/outage?seconds=abc",
        "/admin/rate?per_second=-1",
        "/admin/rate?per_second=nan",
        "/admin/rate?per_second=inf",
        "/admin/rate?per_second=1e-320",
        "/admin/rate?per_second=1e308",
    ),
    "control": (
        "/api/v1/audit?limit=0",
        "/api/v1/audit?limit=99999999999999999999999",
        "/api/v1/audit?limit=nan",
        "/api/v1/audit?since=not-a-date",
        "/api/v1/audit?since=99999-12-31T00:00:00",
        "/api/v1/audit?since=0001-01-01T00:00:00%2B14:00",
        "/api/v1/audit?user=%00&action=%ff",
        "/api/v1/audit?pipeline=" + "p" * 10000,
    ),
}

_TRAVERSALS = (
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2f..%2fetc%2fpasswd",
    "/static/%252e%252e/x",
    "/static//etc/passwd",
    "/../../etc/passwd",
    "/api/v1/pipelines/..%2f..%2fetc/pause",
    "/admin/../admin/log",
    "/static/\\..\\..\\windows\\win.ini",
    "/static/%00",
)


@dataclass(frozen=True)
class HttpCase:
    """Raw bytes for one server.

    Attributes
    ----------
    target
        Which server (:data:`HTTP_TARGETS`).
    name
        What the case is, for reports.
    raw
        The bytes sent; the client then half-closes its side.
    complete
        True: the bytes hold at least one whole request line and headers, so the server must
        answer (a status line); False: it may also close without a word (an incomplete request).
    """

    target: str
    name: str
    raw: bytes
    complete: bool = True


_NOT_CRLF = bytes(b for b in range(256) if b not in b"\r\n")


def _request(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    merged = dict(headers or {})
    if body and "Content-Length" not in merged and "Transfer-Encoding" not in merged:
        merged["Content-Length"] = str(len(body))
    head += [f"{k}: {v}" for k, v in merged.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("utf-8", errors="surrogateescape") + body


def _json_bodies(rng: random.Random) -> bytes:
    return rng.choice(
        (
            b"{",
            b'{"reason": ',
            b"[]",
            b"null",
            b'"reason"',
            b'{"reason": null}',
            b'{"reason": "' + b"r" * 5000 + b'"}',
            b'{"reason": "x", "replicas": 1e999}',
            b'{"reason": "x", "replicas": -1}',
            b'{"reason": "x", "source_ids": [99999999999999999999999]}',
            b'{"reason": "x", "source_ids": [-1, 1.5, "a"]}',
            b'{"reason": "x", "algo_version": "v9", "source_ids": [9223372036854775808]}',
            b'{"reason": "x", "algo_version": "v9", "source_ids": [-9223372036854775809]}',
            b'{"reason": "x", "extra": 1}',
            b'{"reason": "\\ud800"}',
            b'{"reason": "\x00"}',
            b'{"token": "' + b"t" * 20000 + b'"}',
            b'{"token": ""}',
            b'{"a":' * 5000 + b"1" + b"}" * 5000,
            b"\xff\xfe\x00{",
            rng.randbytes(rng.randint(1, 300)),
            json.dumps({"reason": hostile_text(rng)[:1000], "dry_run": True}).encode(),
        )
    )


def http_case(rng: random.Random, target: str | None = None) -> HttpCase:
    """Raw bytes of one malformed request to ``target`` (a random server when None)."""
    target = target or rng.choice(HTTP_TARGETS)
    path = rng.choice(_PATHS[target])
    kind = rng.randrange(12)
    if kind == 0:
        line = rng.choice(
            (
                b"GARBAGE\r\n\r\n",
                b"GET\r\n\r\n",
                b"GET / HTTP/9.9\r\n\r\n",
                b"GET / HTTP/1.1 extra\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                b" / HTTP/1.1\r\n\r\n",
                b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET \xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
                bytes(rng.choice(_NOT_CRLF) for _ in range(rng.randint(1, 200))) + b"\r\n\r\n",
            )
        )
        return HttpCase(target, "garbage request line", line)
    if kind == 1:
        return HttpCase(
            target,
            "request line of 100 kB",
            f"GET /{'a' * 100_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        )
    if kind == 2:
        size = rng.choice((20_000, 70_000, 200_000))
        return HttpCase(
            target, f"header of {size} bytes", _request("GET", path, {"X-Big": "h" * size})
        )
    if kind == 3:
        count = rng.choice((150, 1000))
        headers = {f"X-H{i}": "v" for i in range(count)}
        return HttpCase(target, f"{count} headers", _request("GET", path, headers))
    if kind == 4:
        method = rng.choice(
            (
                "PUT",
                "PATCH",
                "TRACE",
                "CONNECT",
                "FOO",
                "get",
                "G\x00T",
                "DELETE",
                "OPTIONS",
                "HEAD",
            )
        )
        return HttpCase(target, f"method {method!r}", _request(method, path))
    if kind == 5:
        length = rng.choice(("-1", "abc", "1e3", "99999999999999999999", " 5", "5, 6", "0x10"))
        # Some of these read as a length longer than the body: the server may wait for the rest.
        return HttpCase(
            target,
            f"Content-Length {length!r}",
            _request("POST", path, {"Content-Length": length}, b"{}"),
            complete=False,
        )
    if kind == 6:
        body = b'{"reason": "truncated'
        return HttpCase(
            target,
            "truncated body",
            _request(
                "POST",
                path,
                {"Content-Length": str(len(body) + 100), "Content-Type": "application/json"},
                body,
            ),
            complete=False,
        )
    if kind == 7:
        ctype = rng.choice(
            (
                "application/json",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/json; charset=utf-16",
                "",
                "\x00",
            )
        )
        post = rng.choice(_PATHS[target])
        return HttpCase(
            target,
            f"bad JSON as {ctype!r}",
            _request(
                "POST",
                post,
                {
                    "Content-Type": ctype,
                    "Authorization": "Bearer fuzz-operator-token",
                    "Origin": "http://127.0.0.1",
                },
                _json_bodies(rng),
            ),
        )
    if kind == 8:
        return HttpCase(
            target, "path traversal", _request(rng.choice(("GET", "POST")), rng.choice(_TRAVERSALS))
        )
    if kind == 9:
        query = rng.choice(_ABSURD_QUERIES[target])
        method = "POST" if "/admin/outage" in query or "/admin/rate" in query else "GET"
        headers = {"Authorization": "Bearer fuzz-operator-token"}
        return HttpCase(target, f"absurd query {query[:60]!r}", _request(method, query, headers))
    if kind == 10:
        encoding = rng.choice(("chunked", "gzip", "chunked, chunked", "identity"))
        body = rng.choice((b"zz\r\n{}\r\n0\r\n\r\n", b"5\r\n{}", b"0\r\n\r\n", b"-1\r\n"))
        return HttpCase(
            target,
            f"Transfer-Encoding {encoding!r}",
            _request("POST", path, {"Transfer-Encoding": encoding}, body),
            complete=False,
        )
    header = rng.choice(
        (
            {"Authorization": "Bearer " + "t" * 9000},
            {"Authorization": "Basic \x00\xff"},
            {"Authorization": "Bearer"},
            {"Cookie": "galpipe_session=" + "c" * 5000},
            {"Cookie": "galpipe_session=%ff%fe; galpipe_session=x"},
            {"Host": ""},
            {"Origin": "null"},
            {"Range": "bytes=99999999999999999999-"},
            {"Accept-Encoding": "gzip;q=nan"},
            {"X-Forwarded-For": "' OR 1=1 --"},
        )
    )
    return HttpCase(
        target,
        f"hostile header {next(iter(header))}",
        _request(rng.choice(("GET", "POST", "DELETE")), path, header),
    )

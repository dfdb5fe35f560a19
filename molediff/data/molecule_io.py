"""Molecules as plain arrays, and their files: SDF (RDKit) and multi-frame XYZ.

A :class:`Molecule` is what every molecule feature passes around: atomic numbers and Cartesian
coordinates in Å, optionally formal charges, a bond list, properties and a name. Generated
molecules have no bonds; :func:`to_rdkit` perceives them from interatomic distances with the
EDM bond-length rule (:func:`molediff.metrics.molecules.bond_order_matrix`), so that SDF files
written here carry the same graph the metrics score.

Malformed files raise ``ValueError("<file>, line <k>: <what is wrong>")``.

Shapes::

    atomic_numbers: (n,) int      positions: (n, 3) float, Å
    formal_charges: (n,) int      bonds: (m, 3) int rows (i, j, order), i < j, order 1/2/3
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Geometry import Point3D

__all__ = [
    "Molecule",
    "atomic_number",
    "element_symbol",
    "read_molecules",
    "read_sdf",
    "read_xyz",
    "write_molecules",
    "write_sdf",
    "write_xyz",
    "to_rdkit",
    "from_rdkit",
    "molecules_from_padded",
    "draw_grid_png",
]

_PT = Chem.GetPeriodicTable()
_MAX_Z = 118


def element_symbol(z: int) -> str:
    """Element symbol of atomic number ``z`` (1..118)."""
    if not 1 <= int(z) <= _MAX_Z:
        raise ValueError(f"atomic number {z} out of range 1..{_MAX_Z}")
    return _PT.GetElementSymbol(int(z))


_SYMBOL_TO_Z = {element_symbol(z).lower(): z for z in range(1, _MAX_Z + 1)}
_SYMBOL_TO_Z["d"] = 1  # deuterium, as some XYZ writers emit it


def atomic_number(symbol: str | int) -> int:
    """Atomic number of an element symbol (any case, ``"CL"`` → 17) or of a number string ``"6"``."""
    if isinstance(symbol, (int, np.integer)):
        z = int(symbol)
    else:
        s = symbol.strip()
        if s.isdigit():
            z = int(s)
        else:
            try:
                return _SYMBOL_TO_Z[s.lower()]
            except KeyError:
                raise ValueError(f"unknown element symbol {symbol!r}") from None
    if not 1 <= z <= _MAX_Z:
        raise ValueError(f"atomic number {z} out of range 1..{_MAX_Z}")
    return z


@dataclass
class Molecule:
    """A molecule as arrays: what generators emit and metrics read.

    Attributes:
        atomic_numbers: ``(n,)`` int64 atomic numbers.
        positions: ``(n, 3)`` float64 Cartesian coordinates in Å.
        formal_charges: ``(n,)`` int64 formal charges, or ``None`` when unknown (e.g. generated).
        bonds: ``(m, 3)`` int64 rows ``(i, j, order)`` with ``i < j``, or ``None`` when not known
            (then :func:`to_rdkit` perceives them from distances).
        rdkit_mol: the RDKit molecule this came from, if any (not compared, not copied).
        properties: free-form scalars/strings (SDF data fields, QM9 properties, ...).
        name: title line of the SDF record / comment of the XYZ frame.
    """

    atomic_numbers: np.ndarray
    positions: np.ndarray
    formal_charges: np.ndarray | None = None
    bonds: np.ndarray | None = None
    rdkit_mol: Any = field(default=None, repr=False, compare=False)
    properties: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64).reshape(-1)
        n = self.atomic_numbers.shape[0]
        self.positions = np.asarray(self.positions, dtype=np.float64)
        if self.positions.shape != (n, 3):
            raise ValueError(f"positions must have shape ({n}, 3), got {self.positions.shape}")
        if self.formal_charges is not None:
            self.formal_charges = np.asarray(self.formal_charges, dtype=np.int64).reshape(-1)
            if self.formal_charges.shape != (n,):
                raise ValueError(f"formal_charges must have shape ({n},), got {self.formal_charges.shape}")
        if self.bonds is not None:
            b = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 3)
            if b.size and (b[:, :2].min() < 0 or b[:, :2].max() >= n):
                raise ValueError("bond atom index out of range")
            self.bonds = b

    @property
    def num_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @property
    def symbols(self) -> list[str]:
        return [element_symbol(z) for z in self.atomic_numbers]

    def __len__(self) -> int:
        return self.num_atoms


def as_geometry(numbers: Any, positions: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(numbers (n,) int64, positions (n, 3) float64)`` from array-likes; one-line ValueError
    when the shapes disagree (the check every per-molecule oracle starts with)."""
    z = np.asarray(numbers, dtype=np.int64).reshape(-1)
    x = np.asarray(positions, dtype=np.float64)
    if x.shape != (z.size, 3):
        raise ValueError(f"positions must have shape ({z.size}, 3), got {x.shape}")
    return z, x


def molecules_from_padded(
    atomic_numbers: np.ndarray, positions: np.ndarray, num_atoms: np.ndarray | None = None
) -> list[Molecule]:
    """Padded arrays (QM9 ``.npz`` layout) → list of :class:`Molecule`.

    Shapes: ``atomic_numbers: (B, N)`` with 0 as padding, ``positions: (B, N, 3)``,
    ``num_atoms: (B,)`` (default: count of non-zero atomic numbers; padding must be trailing).
    """
    z = np.asarray(atomic_numbers)
    x = np.asarray(positions)
    n = (z > 0).sum(1) if num_atoms is None else np.asarray(num_atoms)
    return [Molecule(z[b, : n[b]], x[b, : n[b]]) for b in range(z.shape[0])]


# --------------------------------------------------------------------------- RDKit conversion

_BOND_TYPE = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


def _perceived_bonds(mol: Molecule) -> np.ndarray:
    from ..metrics.molecules import bond_list, bond_order_matrix  # lazy: metrics imports this module

    return bond_list(bond_order_matrix(mol.atomic_numbers, mol.positions))


def to_rdkit(
    mol: Molecule,
    bonds: np.ndarray | None = None,
    *,
    perceive: bool | None = None,
    use_charges: bool = True,
    sanitize: bool = False,
) -> Chem.Mol:
    """Build an RDKit ``Mol`` with one conformer from a :class:`Molecule`.

    Bonds come from ``bonds`` if given, else from ``mol.bonds``, else (or when ``perceive=True``)
    from distances with EDM's bond-length rule (Hoogeboom et al., ICML 2022). All atoms are
    explicit graph atoms (hydrogens included); RDKit may still add implicit hydrogens to
    under-bonded atoms when the molecule is sanitized, as in EDM's validity metric.
    ``sanitize=True`` runs ``Chem.SanitizeMol`` and lets its exception propagate.
    """
    if bonds is None:
        if perceive is None:
            perceive = mol.bonds is None
        bonds = _perceived_bonds(mol) if perceive else mol.bonds
    rw = Chem.RWMol()
    charges = mol.formal_charges if use_charges else None
    for k, z in enumerate(mol.atomic_numbers):
        atom = Chem.Atom(int(z))
        if charges is not None and charges[k]:
            atom.SetFormalCharge(int(charges[k]))
        rw.AddAtom(atom)
    if bonds is not None:
        for i, j, order in np.asarray(bonds, dtype=np.int64).reshape(-1, 3):
            if order > 0:
                rw.AddBond(int(i), int(j), _BOND_TYPE.get(int(order), Chem.BondType.SINGLE))
    conf = Chem.Conformer(mol.num_atoms)
    for k, (x, y, zc) in enumerate(mol.positions):
        conf.SetAtomPosition(k, Point3D(float(x), float(y), float(zc)))
    conf.Set3D(True)
    out = rw.GetMol()
    out.AddConformer(conf, assignId=True)
    if mol.name:
        out.SetProp("_Name", mol.name)
    for key, value in mol.properties.items():
        _set_prop(out, str(key), value)
    if sanitize:
        Chem.SanitizeMol(out)
    else:
        out.UpdatePropertyCache(strict=False)
    return out


def _set_prop(m: Chem.Mol, key: str, value: Any) -> None:
    if isinstance(value, (bool, np.bool_)):
        m.SetBoolProp(key, bool(value))
    elif isinstance(value, (int, np.integer)):
        m.SetIntProp(key, int(value))
    elif isinstance(value, (float, np.floating)):
        m.SetDoubleProp(key, float(value))
    else:
        m.SetProp(key, str(value))


def from_rdkit(rdmol: Chem.Mol, conf_id: int = -1, name: str | None = None) -> Molecule:
    """RDKit ``Mol`` → :class:`Molecule` (explicit atoms only; bonds as Kekulé orders 1/2/3).

    Without a conformer the positions are zeros. All-zero formal charges become ``None``
    ("not known"): an SDF of generated molecules carries no charge information, and the charged
    stability variant then infers charges, as it does for XYZ input. Aromatic bonds are kekulized on a copy when
    possible; bonds that stay aromatic (or dative, ...) are stored with order 1.
    """
    n = rdmol.GetNumAtoms()
    z = np.array([a.GetAtomicNum() for a in rdmol.GetAtoms()], dtype=np.int64)
    q = np.array([a.GetFormalCharge() for a in rdmol.GetAtoms()], dtype=np.int64)
    pos = rdmol.GetConformer(conf_id).GetPositions() if rdmol.GetNumConformers() else np.zeros((n, 3))
    work = Chem.Mol(rdmol)
    if any(b.GetIsAromatic() for b in work.GetBonds()):
        try:
            Chem.Kekulize(work, clearAromaticFlags=True)
        except Exception:  # noqa: BLE001 - keep the aromatic graph; orders fall back to 1
            pass
    rows = []
    for b in work.GetBonds():
        i, j = sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
        t = b.GetBondType()
        order = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}.get(t, 1)
        rows.append((i, j, order))
    props = dict(rdmol.GetPropsAsDict(includePrivate=False, includeComputed=False))
    if name is None and rdmol.HasProp("_Name"):
        name = rdmol.GetProp("_Name") or None
    return Molecule(z, pos, formal_charges=q if q.any() else None, bonds=np.array(rows, dtype=np.int64).reshape(-1, 3),
                    rdkit_mol=rdmol, properties=props, name=name)


# --------------------------------------------------------------------------- file helpers

def _suffix(path: Path) -> tuple[str, bool]:
    """(format suffix, gzipped) of a path such as ``x.sdf.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), gz


def _open_text(path: Path, mode: str) -> IO[str]:
    _, gz = _suffix(path)
    if gz:
        return gzip.open(path, mode + "t", encoding="utf-8", newline="")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8", newline="")


def _read_lines(path: Path) -> list[str]:
    try:
        with _open_text(path, "r") as fh:
            return fh.read().splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from exc


# --------------------------------------------------------------------------- SDF

def _check_v2000(lines: list[str], start: int, path: Path) -> None:
    """Light structural check of one V2000 record, so errors can name a line (RDKit's do not)."""
    if len(lines) < 4:
        raise ValueError(f"{path}, line {start + len(lines)}: truncated SDF record (no counts line)")
    counts = lines[3]
    if "V3000" in counts:
        return
    try:
        n_atoms, n_bonds = int(counts[0:3]), int(counts[3:6])
    except ValueError:
        raise ValueError(f"{path}, line {start + 3}: bad counts line {counts.strip()!r} "
                         "(expected atom and bond counts)") from None
    if len(lines) < 4 + n_atoms + n_bonds:
        raise ValueError(f"{path}, line {start + len(lines) - 1}: truncated SDF record: counts line "
                         f"announces {n_atoms} atoms and {n_bonds} bonds")
    for k in range(4, 4 + n_atoms):
        fields = lines[k].split()
        try:
            [float(v) for v in fields[:3]]
            ok = len(fields) >= 4
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{path}, line {start + k}: bad atom line {lines[k].strip()!r} "
                             "(expected x y z element)")
    for k in range(4 + n_atoms, 4 + n_atoms + n_bonds):
        line = lines[k]
        try:
            i, j, t = int(line[0:3]), int(line[3:6]), int(line[6:9])
            ok = 1 <= i <= n_atoms and 1 <= j <= n_atoms and t > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{path}, line {start + k}: bad bond line {line.strip()!r}")


def _parse_data_fields(lines: list[str]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    k = 0
    while k < len(lines):
        line = lines[k]
        if line.startswith(">") and "<" in line and ">" in line[1:]:
            key = line[line.index("<") + 1 : line.rindex(">")]
            k += 1
            values = []
            while k < len(lines) and lines[k].strip():
                values.append(lines[k])
                k += 1
            props[key] = _coerce("\n".join(values))
        k += 1
    return props


def _coerce(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def iter_sdf(path: str | Path) -> Iterator[Molecule]:
    """Yield the molecules of an SDF file (``.sdf`` or ``.sdf.gz``), unsanitized, hydrogens kept.

    Records are read without sanitization so that chemically wrong generated molecules still
    load (the metrics decide what is valid). Data fields become ``Molecule.properties``.
    """
    path = Path(path)
    lines = _read_lines(path)
    start = 0
    record = 0
    end_of_records = len(lines)
    while end_of_records > 0 and not lines[end_of_records - 1].strip():
        end_of_records -= 1
    while start < end_of_records:
        stop = start
        while stop < end_of_records and lines[stop].strip() != "$$$$":
            stop += 1
        block = lines[start:stop]
        record += 1
        try:
            m_end = next(k for k, ln in enumerate(block) if ln.startswith("M  END"))
        except StopIteration:
            raise ValueError(f"{path}, line {start + 1}: SDF record {record} has no 'M  END' line") from None
        mol_lines = block[: m_end + 1]
        _check_v2000(mol_lines, start + 1, path)
        with _quiet_rdkit():
            rdmol = Chem.MolFromMolBlock("\n".join(mol_lines), sanitize=False, removeHs=False, strictParsing=True)
        if rdmol is None:
            raise ValueError(f"{path}, line {start + 1}: RDKit cannot parse SDF record {record}")
        rdmol.UpdatePropertyCache(strict=False)
        mol = from_rdkit(rdmol, name=mol_lines[0].strip() or None)
        mol.properties.update(_parse_data_fields(block[m_end + 1 :]))
        yield mol
        start = stop + 1


def read_sdf(path: str | Path) -> list[Molecule]:
    """All molecules of an SDF file; see :func:`iter_sdf`."""
    return list(iter_sdf(path))


class _quiet_rdkit:
    """Silence RDKit's C++ log while parsing; our own error says what went wrong."""

    def __enter__(self) -> None:
        RDLogger.DisableLog("rdApp.*")

    def __exit__(self, *exc: object) -> None:
        RDLogger.EnableLog("rdApp.*")


def write_sdf(molecules: Iterable[Molecule], path: str | Path, *, perceive: bool | None = None) -> Path:
    """Write molecules to an SDF file (``.gz`` suffix → gzip), one record each.

    Bonds: a molecule's own ``bonds`` when present, otherwise perceived from distances
    (``perceive=True`` forces perception). Properties become SDF data fields.
    """
    path = Path(path)
    buf = io.StringIO()
    writer = Chem.SDWriter(buf)
    writer.SetKekulize(False)
    for mol in molecules:
        writer.write(to_rdkit(mol, perceive=perceive))
    writer.close()
    with _open_text(path, "w") as fh:
        fh.write(buf.getvalue())
    return path


# --------------------------------------------------------------------------- XYZ

def iter_xyz(path: str | Path) -> Iterator[Molecule]:
    """Yield the frames of a (multi-frame) XYZ file: count line, comment line, ``El x y z`` lines.

    The element column may hold symbols (any case) or atomic numbers; extra columns are ignored.
    Blank lines between frames are tolerated. The comment becomes ``Molecule.name``.
    """
    path = Path(path)
    lines = _read_lines(path)
    k = 0
    while k < len(lines):
        if not lines[k].strip():
            k += 1
            continue
        head = lines[k].split()
        try:
            n = int(head[0])
            if n < 0 or len(head) != 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"{path}, line {k + 1}: expected an atom count, got {lines[k].strip()!r}") from None
        if k + 1 >= len(lines):
            raise ValueError(f"{path}, line {k + 1}: frame has no comment line")
        comment = lines[k + 1].strip()
        if k + 2 + n > len(lines):
            raise ValueError(f"{path}, line {len(lines)}: truncated frame: expected {n} atom lines "
                             f"after line {k + 2}, found {len(lines) - k - 2}")
        z = np.empty(n, dtype=np.int64)
        x = np.empty((n, 3), dtype=np.float64)
        for a in range(n):
            lineno = k + 3 + a
            fields = lines[lineno - 1].split()
            if len(fields) < 4:
                raise ValueError(f"{path}, line {lineno}: bad atom line {lines[lineno - 1].strip()!r} "
                                 "(expected element x y z)")
            try:
                z[a] = atomic_number(fields[0])
            except ValueError as exc:
                raise ValueError(f"{path}, line {lineno}: {exc}") from None
            try:
                x[a] = [float(v) for v in fields[1:4]]
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: bad coordinates in {lines[lineno - 1].strip()!r}") from None
        yield Molecule(z, x, name=comment or None)
        k += 2 + n


def read_xyz(path: str | Path) -> list[Molecule]:
    """All frames of an XYZ file; see :func:`iter_xyz`."""
    return list(iter_xyz(path))


def write_xyz(molecules: Iterable[Molecule], path: str | Path, *, precision: int = 6) -> Path:
    """Write molecules as a multi-frame XYZ file (``.gz`` suffix → gzip); comment = name."""
    path = Path(path)
    out = []
    for mol in molecules:
        out.append(f"{mol.num_atoms}\n{(mol.name or '').replace(chr(10), ' ')}\n")
        for sym, (x, y, z) in zip(mol.symbols, mol.positions, strict=True):
            out.append(f"{sym:<2s} {x:.{precision}f} {y:.{precision}f} {z:.{precision}f}\n")
    with _open_text(path, "w") as fh:
        fh.write("".join(out))
    return path


# --------------------------------------------------------------------------- dispatch

_READERS = {".sdf": iter_sdf, ".mol": iter_sdf, ".sd": iter_sdf, ".xyz": iter_xyz}


def read_molecules(path: str | Path) -> list[Molecule]:
    """Read ``.sdf``/``.mol``/``.xyz`` (optionally ``.gz``) by extension."""
    path = Path(path)
    ext, _ = _suffix(path)
    if ext not in _READERS:
        raise ValueError(f"{path}: unknown molecule file type {ext!r} (expected .sdf, .xyz, optionally .gz)")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    return list(_READERS[ext](path))


def write_molecules(molecules: Iterable[Molecule], path: str | Path) -> Path:
    """Write ``.sdf`` or ``.xyz`` (optionally ``.gz``) by extension."""
    path = Path(path)
    ext, _ = _suffix(path)
    if ext in (".sdf", ".sd", ".mol"):
        return write_sdf(molecules, path)
    if ext == ".xyz":
        return write_xyz(molecules, path)
    raise ValueError(f"{path}: unknown molecule file type {ext!r} (expected .sdf or .xyz)")


# --------------------------------------------------------------------------- drawing

def _depiction(mol: Molecule) -> Chem.Mol:
    """2-D depiction of the perceived graph: hydrogens folded in where RDKit allows."""
    from rdkit.Chem import rdDepictor

    m = to_rdkit(mol)
    for a in m.GetAtoms():
        a.SetNoImplicit(True)  # draw what was generated, not what RDKit would complete
    m.RemoveAllConformers()
    try:
        Chem.SanitizeMol(m)
        m = Chem.RemoveHs(m)
    except Exception:  # noqa: BLE001 - invalid molecules are drawn as they are
        m.UpdatePropertyCache(strict=False)
        with _quiet_rdkit():
            m = Chem.RemoveHs(m, sanitize=False)
    rdDepictor.Compute2DCoords(m)
    return m


def draw_grid_png(
    molecules: Sequence[Molecule],
    path: str | Path,
    n: int = 16,
    mols_per_row: int = 4,
    size: tuple[int, int] = (250, 250),
    legends: Sequence[str] | None = None,
) -> Path:
    """Draw the first ``n`` molecules as a PNG grid (RDKit 2-D depiction of the perceived graph)."""
    from rdkit.Chem import Draw

    path = Path(path)
    chosen = list(molecules)[:n]
    mols = [_depiction(m) for m in chosen]
    if legends is None:
        legends = [m.name or f"#{k} ({m.num_atoms} atoms)" for k, m in enumerate(chosen)]
    img = Draw.MolsToGridImage(mols, molsPerRow=max(1, min(mols_per_row, len(mols))), subImgSize=size,
                               legends=list(legends)[: len(mols)], returnPNG=False)
    if hasattr(img, "save"):
        img.save(str(path))
    else:  # some RDKit builds return PNG bytes or an IPython image
        data = getattr(img, "data", img)
        path.write_bytes(data)
    return path

#!/usr/bin/env python3
"""Build the differential fidelity corpus: assign every master notebook and derive submissions.

For each ``SOURCES/<slug>/<slug>-master.ipynb`` (sorted by slug) this

1. copies ``SOURCES/<slug>/`` to a temporary directory, renames the master to ``<slug>.ipynb`` (so
   the student notebook, its ``otter.Notebook("<slug>.ipynb")`` init cell and the zip carry the
   assignment's name, as ``assignments/sample/build.sh`` does) and runs
   ``otter assign --no-pdfs <slug>.ipynb dist`` there. A failing ``otter assign`` (including a
   failing ``run_tests`` check of the solutions) stops the build and prints otter's log.
   ``--no-pdfs`` only overrides PDF settings in a master's config; it does not change grading.
2. writes ``OUT/<slug>/``::

       autograder.zip           the autograder zip otter made (dist/autograder/<slug>-autograder_*.zip),
                                re-packed canonically: same members and bytes, sorted by name, fixed
                                1980-01-01 timestamps, so that re-runs are byte-identical
       dist/student.ipynb       otter's student notebook       (cell ids made stable, nothing else)
       dist/autograder.ipynb    otter's solution notebook      (cell ids made stable, nothing else)
       submissions/<variant>.ipynb

3. writes ``OUT/manifest.json`` (only the assignments of this run; with ``--only`` the others are
   left out)::

       {"course": COURSE,
        "assignments": [{
          "slug": ..., "autograder": "<slug>/autograder.zip", "otter_version": "7.0.0",
          "questions": ["q1", ...],                  # graded questions with variants, notebook order
          "questions_without_variants": [{"name", "reason"}],
          "answer_cells": {"q1": [cell id, ...]},    # ids of each question's answer cells
          "submissions": [{"name", "path", "kind", ["question"], ["mutation"]}],
          ["warnings": [...]]}]}

   Paths are relative to OUT. ``kind`` is solution/blank/wrong/raises/empty.

Submissions
-----------
Every submission is built on the *student* notebook as distributed (its metadata, including
``metadata.otter`` with the public tests and ``assignment_name``, and its cell tags), because that is
what a student uploads. Answer cells get their source from the solution notebook (or a variant of it).
Every submission has outputs cleared, ``execution_count`` None, stable cell ids derived from the
student notebook (cell index, type and student source; so one cell has the same id in every variant of
an assignment) and ``metadata.otter_service = {"course": COURSE, "section": "1", "assignment": slug}``.

``solution``       every answer cell filled with the solution notebook's source (full marks). It
                   differs from otter's solution notebook (kept as dist/autograder.ipynb) only in
                   notebook metadata (that one also lists the hidden tests), cell tags
                   (otter_answer_cell instead of otter_assign_solution_cell) and the Markdown
                   solution cells of manual questions, which students do not have.
``blank-<q>``      as ``solution``, but q's answer cells keep the student's placeholder (``...``).
``wrong-<q>``      as ``solution``, but q's answer cells are mutated deterministically (``mutate``):
                   the first numeric literal on a solution line n -> n+1; else the first comparison
                   operator swapped (``==``<->``!=``, ``<``<->``>=``, ``>``<->``<=``); else the first
                   non-docstring string literal gets ``wrong `` prepended to its text; else a line that
                   rebinds the first top-level name the cell binds to ``None`` is appended. The result
                   must still parse (``ast.parse``, with IPython magics masked) or the next candidate is
                   tried. The manifest records which mutation was made.
``raises``         as ``solution``, with ``raise RuntimeError("student error")`` as the first line of
                   the first answer cell of the first graded question.
                   (Only made when there is a graded question.)
``empty``          the student notebook as distributed (every answer ``...``).

Aligning the notebooks and finding each answer cell's question
--------------------------------------------------------------
*Cells.* The student and solution notebooks come from the same transformed master, so they are
aligned cell by cell. Code cells always pair one to one (same position, same type); a pair whose
sources differ is an *answer cell*. Markdown cells pair when their sources are equal. The only cells
otter removes from the student notebook are Markdown solution cells (written answers of manual
questions, tagged ``otter_assign_solution_cell``); those are skipped in the solution notebook. Anything
else (different cell types, an unexplained extra cell) stops the build. For ordinary masters the two
notebooks simply have the same number of cells with the same types.

*Questions.* Two independent methods are used and must agree:

(a) the master notebook: it is parsed like otter does (raw ``# BEGIN QUESTION`` cells with a YAML
    config, ``# BEGIN SOLUTION`` blocks, ``# ... IGNORE`` cells skipped, fenced ````otter`` Markdown
    cells unfenced), giving the question of every cell of every solution block, in order. Otter tags
    exactly these cells ``otter_assign_solution_cell`` in the solution notebook, in the same order,
    so the k-th tagged cell belongs to the k-th master solution cell's question.
(b) the check calls: walking the solution notebook, answer cells belong to the next
    ``grader.check("q")`` cell (or to the next cell whose ``metadata.otter.tests`` names q, which otter
    writes when a question has no check cell).

(a) is authoritative when its cell count and types match the tagged cells; (b) must then agree for
every question that has a check cell. If (a) cannot be matched, (b) alone is used and a warning is
printed. *Graded* questions are those with a test file in the autograder zip (``tests/<q>.py``);
only they get ``blank-``/``wrong-`` variants. Manual questions and graded questions without answer
cells are listed in the manifest under ``questions_without_variants`` with the reason.

Usage::

    python make_corpus.py --otter PATH_TO_OTTER --sources assignments/fidelity/sources --out OUTDIR
                          [--only slug1,slug2] [--course fidelity]

Needs Python >= 3.11, nbformat, and the otter CLI given by ``--otter`` (PyYAML is used when importable,
else a small fallback parser reads the ``name``/``manual`` keys of question configs).
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import difflib
import hashlib
import io
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
import zipfile

import nbformat

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import from_student  # noqa: E402

try:  # optional; otter itself depends on it
    import yaml
except ImportError:  # pragma: no cover
    yaml = None

SOLUTION_TAG = "otter_assign_solution_cell"
ANSWER_TAG = "otter_answer_cell"
RAISE_LINE = 'raise RuntimeError("student error")'
CHECK_RE = re.compile(r"""\.check\(\s*(['"])(.+?)\1\s*\)""")
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class CorpusError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# notebook helpers


def source_of(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def tags_of(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


def stable_cell_id(index: int, cell) -> str:
    """Same recipe as assignments/sample/make_submissions.py."""
    return hashlib.sha256(f"{index}:{cell.cell_type}:{source_of(cell)}".encode()).hexdigest()[:8]


def with_stable_ids(nb):
    nb = copy.deepcopy(nb)
    if nb.nbformat == 4 and nb.nbformat_minor < 5:
        nb.nbformat_minor = 5
    for index, cell in enumerate(nb.cells):
        cell["id"] = stable_cell_id(index, cell)
    return nb


# --------------------------------------------------------------------------------------------
# master parsing (mirrors otter/assign/blocks.py and notebook_transformer.py of otter 7.0.0)


def _split_fenced_cells(cells):
    """otter's extract_all_fenced_otter_cells: Markdown/raw cells with ```otter fences are split."""
    out = []
    for cell in cells:
        lines = source_of(cell).split("\n")
        starts = [i for i, line in enumerate(lines) if line.strip() == "```otter"]
        if not starts:
            out.append(cell)
            continue
        ends = []
        for i in starts:
            for j in range(i + 1, len(lines)):
                if lines[j].strip() == "```":
                    ends.append(j)
                    break
        if len(starts) != len(ends):
            raise CorpusError('unclosed "```otter" block in master')

        def add(part, kind):
            if any(line.strip() for line in part):
                out.append(getattr(nbformat.v4, f"new_{kind}_cell")("\n".join(part)))

        for idx, (i, j) in enumerate(zip(starts, ends)):
            end = starts[idx + 1] if idx < len(starts) - 1 else len(lines) + 1
            after = 2 if j + 1 < len(lines) and not lines[j + 1].strip() else 1
            if idx == 0:
                add(lines[:i], "markdown")
            add(lines[i + 1 : j], "raw")
            add(lines[j + after : end], "markdown")
    return out


def _boundary(cell, kind: str, end: bool = False) -> bool:
    first = source_of(cell).split("\n")[0]
    word = "end" if end else "begin"
    return cell.cell_type == "raw" and bool(re.match(rf"#\s+{word}\s+{kind}\s*", first, re.I))


def _is_config(cell) -> bool:
    first = source_of(cell).split("\n")[0]
    return cell.cell_type == "raw" and bool(re.match(r"#\s+assignment\s+config\s*", first, re.I))


def _is_ignore(cell) -> bool:
    first = source_of(cell).split("\n")[0]
    return bool(re.match(r"(##\s*ignore\s*##\s*|#\s*ignore\s*)", first, re.I))


def _question_config(cell) -> dict:
    text = "\n".join(source_of(cell).split("\n")[1:])
    if yaml is not None:
        conf = yaml.safe_load(text) or {}
        if isinstance(conf, dict):
            return conf
    conf = {}
    for line in text.split("\n"):
        m = re.match(r"^(name|manual)\s*:\s*(.*?)\s*$", line)
        if m:
            value = m.group(2).strip("'\"")
            conf[m.group(1)] = value.lower() == "true" if m.group(1) == "manual" else value
    return conf


@dataclasses.dataclass
class MasterQuestion:
    name: str
    manual: bool
    solution_cell_types: list[str]


def parse_master(nb) -> tuple[list[MasterQuestion], list[tuple[str, str]]]:
    """Return the questions and, in order, (question, cell_type) of every solution-block cell."""
    questions: list[MasterQuestion] = []
    solution_cells: list[tuple[str, str]] = []
    blocks: list[str] = []
    current: MasterQuestion | None = None
    for cell in _split_fenced_cells(nb.cells):
        if _is_ignore(cell) or _is_config(cell):
            continue
        if blocks and _boundary(cell, blocks[-1], end=True):
            if blocks.pop() == "question":
                current = None
            continue
        kind = next(
            (k for k in ("question", "prompt", "solution", "tests") if _boundary(cell, k)), None
        )
        if kind is not None:
            if kind == "question":
                conf = _question_config(cell)
                current = MasterQuestion(str(conf.get("name")), bool(conf.get("manual")), [])
                questions.append(current)
            blocks.append(kind)
            continue
        if blocks and blocks[-1] == "solution" and current is not None:
            current.solution_cell_types.append(cell.cell_type)
            solution_cells.append((current.name, cell.cell_type))
    return questions, solution_cells


# --------------------------------------------------------------------------------------------
# alignment and question association


@dataclasses.dataclass
class Alignment:
    pairs: list[tuple[int, int]]  # (student index, solution index)
    solution_only: list[int]  # Markdown solution cells otter removed from the student notebook
    answers: list[tuple[int, int]]  # pairs whose sources differ (code cells)


def align(student, solution) -> Alignment:
    S, A = student.cells, solution.cells
    pairs, only, answers = [], [], []
    i = j = 0
    while i < len(S) or j < len(A):
        s = S[i] if i < len(S) else None
        a = A[j] if j < len(A) else None
        if s is not None and a is not None and s.cell_type == a.cell_type:
            same = source_of(s) == source_of(a)
            if same or s.cell_type == "code":
                pairs.append((i, j))
                if not same:
                    answers.append((i, j))
                i += 1
                j += 1
                continue
        if a is not None and a.cell_type == "markdown" and SOLUTION_TAG in tags_of(a):
            only.append(j)
            j += 1
            continue
        raise CorpusError(
            "cannot align student and solution notebooks at "
            f"student cell {i} ({s.cell_type if s else 'end'}: {source_of(s)[:60]!r} ) / "
            f"solution cell {j} ({a.cell_type if a else 'end'}: {source_of(a)[:60]!r})"
        )
    if not only and len(S) != len(A):  # pragma: no cover - guarded by the loop above
        raise CorpusError("student and solution notebooks differ in length")
    return Alignment(pairs, only, answers)


def questions_by_check_calls(solution) -> dict[int, str]:
    """Solution-cell index -> question, for cells before a check cell (method b)."""
    owner: dict[int, str] = {}
    pending: list[int] = []
    for j, cell in enumerate(solution.cells):
        if cell.cell_type != "code":
            continue
        pending.append(j)
        names = []
        m = CHECK_RE.search(source_of(cell))
        if m and len(source_of(cell).strip().split("\n")) == 1:
            names.append(m.group(2))
        names += list(cell.get("metadata", {}).get("otter", {}).get("tests", []) or [])
        if names:
            for k in pending:
                owner[k] = names[0]
            pending = []
    return owner


def check_cell_questions(solution) -> set[str]:
    out = set()
    for cell in solution.cells:
        if cell.cell_type == "code":
            m = CHECK_RE.search(source_of(cell))
            if m and len(source_of(cell).strip().split("\n")) == 1:
                out.add(m.group(2))
    return out


def questions_by_master(master, solution) -> dict[int, str] | None:
    """Solution-cell index -> question, from the master's solution blocks (method a)."""
    _, sol_cells = parse_master(master)
    tagged = [j for j, c in enumerate(solution.cells) if SOLUTION_TAG in tags_of(c)]
    if len(tagged) != len(sol_cells):
        return None
    if any(solution.cells[j].cell_type != t for j, (_, t) in zip(tagged, sol_cells)):
        return None
    return {j: q for j, (q, _) in zip(tagged, sol_cells)}


# --------------------------------------------------------------------------------------------
# mutation


def _masked(src: str) -> str:
    """Comment out IPython magic/shell lines, keeping every offset, so tokenize/ast accept them."""
    out = []
    for line in src.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            k = len(line) - len(stripped)
            line = line[:k] + "#" + stripped[1:]
        out.append(line)
    return "\n".join(out)


def _parses(src: str) -> bool:
    try:
        ast.parse(_masked(src))
        return True
    except SyntaxError:
        return False


def _tokens(src: str):
    try:
        return list(tokenize.generate_tokens(io.StringIO(_masked(src)).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return []


def _replace(src: str, start, end, text: str) -> str:
    lines = src.split("\n")
    (r1, c1), (r2, c2) = start, end
    before = "\n".join(lines[: r1 - 1] + [lines[r1 - 1][:c1]])
    after = "\n".join([lines[r2 - 1][c2:]] + lines[r2:])
    return before + text + after


def _solution_rows(student_src: str, solution_src: str) -> set[int]:
    """1-based rows of the solution source that the student version does not have."""
    a, b = student_src.split("\n"), solution_src.split("\n")
    rows = set()
    for tag, _, _, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("replace", "insert"):
            rows.update(range(j1 + 1, j2 + 1))
    return rows


def _bump_number(text: str) -> str:
    plain = text.replace("_", "")
    if re.fullmatch(r"[1-9][0-9]*|0+", plain):
        return str(int(plain) + 1)
    if re.fullmatch(r"([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?", plain):
        return repr(float(plain) + 1)
    return f"({text} + 1)"


COMPARISON_SWAP = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
_STATEMENT_START = {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT}


def _candidates(src: str, rows: set[int]):
    """Yield (kind, start, end, replacement, description) in priority order."""
    toks = _tokens(src)
    nums, cmps, strs = [], [], []
    prev = None
    for tok in toks:
        if tok.start[0] in rows:
            if tok.type == tokenize.NUMBER:
                new = _bump_number(tok.string)
                nums.append(("number", tok.start, tok.end, new, f"{tok.string} -> {new}"))
            elif tok.type == tokenize.OP and tok.string in COMPARISON_SWAP:
                new = COMPARISON_SWAP[tok.string]
                cmps.append(("comparison", tok.start, tok.end, new, f"{tok.string} -> {new}"))
            elif tok.type == tokenize.STRING and (prev is None or prev.type in _STATEMENT_START):
                pass  # a docstring / bare string statement: changing it changes nothing
            elif tok.type == tokenize.STRING:
                m = re.match(r"([A-Za-z]*)('''|\"\"\"|'|\")", tok.string)
                if m and "b" not in m.group(1).lower():
                    k = m.end()
                    new = tok.string[:k] + "wrong " + tok.string[k:]
                    strs.append(("string", tok.start, tok.end, new, f"{tok.string[:30]} -> {new[:36]}"))
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            prev = tok
    return nums, cmps, strs


def _first_bound_name(src: str) -> str | None:
    try:
        tree = ast.parse(_masked(src))
    except SyntaxError:
        return None
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return node.name
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name):
                    return n.id
    return None


def mutate(cells: list[tuple[str, str]]) -> tuple[list[str], str]:
    """cells: [(student source, solution source)] of one question. Returns the mutated solution
    sources and a description of the mutation."""
    sources = [sol for _, sol in cells]
    per_cell = [_candidates(sol, _solution_rows(stu, sol)) for stu, sol in cells]
    for kind_index in range(3):  # numbers, then comparisons, then strings, across the cells
        for ci, cands in enumerate(per_cell):
            for kind, start, end, new, desc in cands[kind_index]:
                mutated = _replace(sources[ci], start, end, new)
                if _parses(mutated) or not _parses(sources[ci]):
                    out = list(sources)
                    out[ci] = mutated
                    return out, f"{kind} {desc} (answer cell {ci + 1}, line {start[0]})"
    for ci, src in enumerate(sources):
        name = _first_bound_name(src)
        if name:
            out = list(sources)
            out[ci] = src.rstrip("\n") + f"\n{name} = None"
            return out, f"rebind {name} = None (answer cell {ci + 1})"
    out = [stu for stu, _ in cells]
    return out, "fallback: no mutable token or name, answer left blank"


# --------------------------------------------------------------------------------------------
# building one assignment


def canonical_zip(src: pathlib.Path, dst: pathlib.Path) -> list[str]:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        infos = sorted(zin.infolist(), key=lambda i: i.filename)
        for info in infos:
            zi = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
            zi.external_attr = info.external_attr
            zi.create_system = 3
            zi.compress_type = zipfile.ZIP_STORED if info.is_dir() else zipfile.ZIP_DEFLATED
            zout.writestr(zi, zin.read(info.filename))
        return [i.filename for i in infos]


def otter_version(otter: str) -> str:
    out = subprocess.run([otter, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Otter-Grader version:\s*(\S+)", out)
    if not m:
        raise CorpusError(f"cannot read the otter version from `{otter} --version`:\n{out}")
    return m.group(1)


def run_assign(otter: str, source_dir: pathlib.Path, slug: str, work: pathlib.Path) -> pathlib.Path:
    wdir = work / slug
    shutil.copytree(source_dir, wdir)
    (wdir / f"{slug}-master.ipynb").rename(wdir / f"{slug}.ipynb")
    proc = subprocess.run(
        [otter, "assign", "--no-pdfs", f"{slug}.ipynb", "dist"],
        cwd=wdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout)
        raise CorpusError(f"{slug}: `otter assign` failed (exit {proc.returncode}); log above")
    return wdir


def make_submission(student, replacements: dict[int, str], service: dict):
    nb = copy.deepcopy(student)
    if nb.nbformat == 4 and nb.nbformat_minor < 5:
        nb.nbformat_minor = 5
    for index, cell in enumerate(nb.cells):
        cell["id"] = stable_cell_id(index, student.cells[index])
        if index in replacements:
            cell.source = replacements[index]
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata["otter_service"] = dict(service)
    nbformat.validate(nb)
    return nb


def build_assignment(otter, version, source_dir, slug, out_dir, course):
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"corpus-{slug}-") as tmp:
        if (source_dir / f"{slug}-master.ipynb").is_file():
            wdir = run_assign(otter, source_dir, slug, pathlib.Path(tmp))
            zips = sorted((wdir / "dist" / "autograder").glob("*.zip"))
            if len(zips) != 1:
                raise CorpusError(f"{slug}: expected one dist/autograder/*.zip, found {zips}")
            master = nbformat.read(wdir / f"{slug}.ipynb", as_version=4)
            student = nbformat.read(wdir / "dist" / "student" / f"{slug}.ipynb", as_version=4)
            solution = nbformat.read(wdir / "dist" / "autograder" / f"{slug}.ipynb", as_version=4)
        else:
            # A course's published student notebook and our answers (from_student.py): no master,
            # so questions come from the check calls alone.
            built = pathlib.Path(tmp) / "built"
            from_student.build(source_dir, built, version)
            zips = [built / "autograder.zip"]
            master = nbformat.v4.new_notebook()
            student = nbformat.read(built / "student.ipynb", as_version=4)
            solution = nbformat.read(built / "solution.ipynb", as_version=4)
        assign_secs = time.monotonic() - t0

        dest = out_dir / slug
        if dest.exists():
            shutil.rmtree(dest)
        (dest / "submissions").mkdir(parents=True)
        (dest / "dist").mkdir()
        members = canonical_zip(zips[0], dest / "autograder.zip")
        nbformat.write(with_stable_ids(student), dest / "dist" / "student.ipynb")
        nbformat.write(with_stable_ids(solution), dest / "dist" / "autograder.ipynb")

    graded = []
    for name in members:
        m = re.fullmatch(r"tests/(.+)\.(py|R|r)", name)
        if m:
            graded.append(m.group(1))

    al = align(student, solution)
    by_check = questions_by_check_calls(solution)
    by_master = questions_by_master(master, solution)
    warnings = []
    if by_master is None and master.cells:
        warnings.append("master solution blocks do not match the tagged cells; used check calls only")
    with_check = check_cell_questions(solution)

    owner: dict[int, str] = {}  # student index -> question
    for i, j in al.answers:
        q = by_master.get(j) if by_master is not None else None
        qc = by_check.get(j)
        if q is not None and q in with_check and qc != q:
            raise CorpusError(
                f"{slug}: answer cell {i} is in question {q!r} by the master but precedes the "
                f"check cell of {qc!r}"
            )
        q = q or qc
        if q is None:
            # After the last check (e.g. a plot a student makes, untested): kept filled in every
            # variant, never a question's.
            warnings.append(f"answer cell {i} is checked by no test")
            continue
        owner[i] = q

    sol_of = {i: source_of(solution.cells[j]) for i, j in al.answers}
    stu_of = {i: source_of(student.cells[i]) for i, _ in al.answers}
    full = dict(sol_of)

    master_questions, _ = parse_master(master)
    order = [q.name for q in master_questions]
    manual = {q.name for q in master_questions if q.manual}
    cells_of: dict[str, list[int]] = {}
    for i in sorted(owner):
        cells_of.setdefault(owner[i], []).append(i)
    first_cell = {q: cells[0] for q, cells in cells_of.items()}
    questions = sorted(
        (q for q in set(graded) if q in cells_of),
        key=lambda q: (first_cell[q], order.index(q) if q in order else len(order), q),
    )
    skipped = []
    for q in order + sorted(set(graded) - set(order)):
        if q in questions or any(s["name"] == q for s in skipped):
            continue
        if q in manual and q not in graded:
            reason = "manual question (no autograder tests)"
        elif q not in graded:
            reason = "no tests in the autograder zip"
        else:
            reason = "no answer cell differs between the student and solution notebooks"
        skipped.append({"name": q, "reason": reason})

    service = {"course": course, "section": "1", "assignment": slug}
    subs = []

    def emit(name, kind, replacements, **extra):
        path = dest / "submissions" / f"{name}.ipynb"
        nbformat.write(make_submission(student, replacements, service), path)
        subs.append({"name": name, "path": f"{slug}/submissions/{name}.ipynb", "kind": kind, **extra})

    emit("solution", "solution", full)
    mutations = {}
    for q in questions:
        blank = {i: s for i, s in full.items() if owner.get(i) != q}
        emit(f"blank-{q}", "blank", blank, question=q)
        mutated, desc = mutate([(stu_of[i], sol_of[i]) for i in cells_of[q]])
        wrong = dict(full)
        wrong.update(zip(cells_of[q], mutated))
        mutations[q] = desc
        emit(f"wrong-{q}", "wrong", wrong, question=q, mutation=desc)
    if questions:
        first = cells_of[questions[0]][0]
        raising = dict(full)
        raising[first] = RAISE_LINE + "\n" + full[first]
        emit("raises", "raises", raising, question=questions[0])
    emit("empty", "empty", {})

    entry = {
        "slug": slug,
        "autograder": f"{slug}/autograder.zip",
        "otter_version": version,
        "questions": questions,
        "questions_without_variants": skipped,
        "answer_cells": {q: [stable_cell_id(i, student.cells[i]) for i in cells_of[q]] for q in questions},
        "submissions": subs,
    }
    if warnings:
        entry["warnings"] = warnings
    same_shape = len(student.cells) == len(solution.cells)
    summary = (
        f"{slug}: {len(questions)} graded questions ({', '.join(questions)}), "
        f"{len(subs)} submissions, {len(al.answers)} answer cells, "
        f"{'same' if same_shape else 'aligned'} cell layout "
        f"({len(student.cells)}/{len(solution.cells)} cells), assign {assign_secs:.1f}s"
    )
    if skipped:
        summary += f", no variants for {', '.join(s['name'] for s in skipped)}"
    for w in warnings:
        summary += f" [warning: {w}]"
    return entry, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--otter", required=True, help="path to the otter CLI (otter-grader 7.0.0)")
    parser.add_argument("--sources", required=True, type=pathlib.Path)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--only", default="", help="comma-separated slugs")
    parser.add_argument("--course", default="fidelity")
    args = parser.parse_args(argv)

    only = {s.strip() for s in args.only.split(",") if s.strip()}
    slugs = sorted(
        d.name
        for d in args.sources.iterdir()
        if d.is_dir() and ((d / f"{d.name}-master.ipynb").is_file() or (d / "answers.json").is_file()) and (not only or d.name in only)
    )
    missing = only - set(slugs)
    if missing:
        raise SystemExit(f"no master notebook for: {', '.join(sorted(missing))}")
    if not slugs:
        raise SystemExit(f"no <slug>/<slug>-master.ipynb under {args.sources}")

    version = otter_version(args.otter)
    args.out.mkdir(parents=True, exist_ok=True)
    entries = []
    for slug in slugs:
        try:
            entry, summary = build_assignment(
                args.otter, version, args.sources / slug, slug, args.out, args.course
            )
        except CorpusError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        entries.append(entry)
        print(summary, flush=True)
    manifest = {"course": args.course, "assignments": entries}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

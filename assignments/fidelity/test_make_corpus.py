"""Tests for make_corpus.py on the self-written `protocols` assignment.

Run from the repository root:

    OTTER=/path/to/venv/bin/otter python -m pytest assignments/fidelity/test_make_corpus.py

OTTER must be the otter-grader 7.0.0 CLI (from a venv built from grading-image/requirements.txt,
with a `python3` Jupyter kernel). The tests are skipped when OTTER is not set. Each build runs
`otter assign` (with run_tests, about 10 s); the module builds twice.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

nbformat = pytest.importorskip("nbformat")

HERE = pathlib.Path(__file__).resolve().parent
SOURCES = HERE / "sources"
SLUG = "protocols"
OTTER = os.environ.get("OTTER")

pytestmark = pytest.mark.skipif(not OTTER, reason="set OTTER to the otter-grader 7.0.0 CLI")


def build(out: pathlib.Path) -> pathlib.Path:
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "make_corpus.py"),
            "--otter", OTTER,
            "--sources", str(SOURCES),
            "--out", str(out),
            "--only", SLUG,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    return build(tmp_path_factory.mktemp("a")), build(tmp_path_factory.mktemp("b"))


@pytest.fixture(scope="module")
def out(builds):
    return builds[0]


@pytest.fixture(scope="module")
def entry(out):
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["course"] == "fidelity"
    [entry] = manifest["assignments"]
    assert entry["slug"] == SLUG
    return entry


def files(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_manifest_lists_every_variant(out, entry):
    questions = entry["questions"]
    assert questions == [f"q{i}" for i in range(1, 17)]
    assert entry["otter_version"] == "7.0.0"
    assert (out / entry["autograder"]).is_file()
    names = [s["name"] for s in entry["submissions"]]
    expected = {"solution", "raises", "empty"}
    expected |= {f"blank-{q}" for q in questions} | {f"wrong-{q}" for q in questions}
    assert set(names) == expected and len(names) == len(expected)
    for s in entry["submissions"]:
        assert (out / s["path"]).is_file(), s
        assert s["kind"] == s["name"].split("-")[0]
        if s["kind"] in ("blank", "wrong"):
            assert s["name"] == f"{s['kind']}-{s['question']}"


def test_two_runs_are_byte_identical(builds):
    a, b = (files(root) for root in builds)
    assert sorted(a) == sorted(b)
    different = [name for name in a if a[name] != b[name]]
    assert not different


def read(out, entry, name):
    sub = next(s for s in entry["submissions"] if s["name"] == name)
    return nbformat.read(out / sub["path"], as_version=4)


def test_submission_shape(out, entry):
    for sub in entry["submissions"]:
        nb = nbformat.read(out / sub["path"], as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["otter_service"] == {"course": "fidelity", "section": "1", "assignment": SLUG}
        assert nb.metadata["otter"]["assignment_name"] == SLUG
        for cell in nb.cells:
            assert len(cell.id) == 8
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None


def test_variants_differ_only_in_their_question(out, entry):
    solution = read(out, entry, "solution")
    empty = read(out, entry, "empty")
    answer_ids = entry["answer_cells"]
    all_answers = {cid for ids in answer_ids.values() for cid in ids}
    # the ids are shared by every variant; the empty notebook differs exactly in the answer cells
    assert [c.id for c in empty.cells] == [c.id for c in solution.cells]
    assert {c.id for c, e in zip(solution.cells, empty.cells) if c.source != e.source} == all_answers
    placeholder = {c.id: c.source for c in empty.cells}

    for q in entry["questions"]:
        for kind in ("blank", "wrong"):
            nb = read(out, entry, f"{kind}-{q}")
            assert [c.id for c in nb.cells] == [c.id for c in solution.cells]
            assert nb.metadata == solution.metadata
            changed = {c.id for c, s in zip(nb.cells, solution.cells) if c.source != s.source}
            assert changed, f"{kind}-{q} equals the solution"
            assert changed <= set(answer_ids[q]), f"{kind}-{q} changed cells outside {q}"
            for c in nb.cells:
                if kind == "blank" and c.id in answer_ids[q]:
                    assert c.source == placeholder[c.id]
            if kind == "wrong":
                for c in nb.cells:
                    if c.id in changed:
                        compile(c.source, f"{kind}-{q}", "exec")  # still valid Python

    raises = read(out, entry, "raises")
    changed = [(c, s) for c, s in zip(raises.cells, solution.cells) if c.source != s.source]
    assert len(changed) == 1
    cell, sol = changed[0]
    assert cell.id == answer_ids[entry["questions"][0]][0]
    assert cell.source == 'raise RuntimeError("student error")\n' + sol.source

#!/usr/bin/env python3
"""Make the sample assignment's test submissions from its student notebook.

Reads dist/student.ipynb (run ./build.sh first) and writes, under submissions/:

  full.ipynb     every answer right                                   -> score 5/5 = 1.0
  partial.ipynb  q1 right; q2 and q3 pass their public test but fail
                 their hidden one                                     -> score 3/5 = 0.6
  zero.ipynb     a typo in the first import raises ModuleNotFoundError,
                 no answer filled in: every test fails                -> score 0/5 = 0.0

Each keeps the metadata otter produced (kernelspec, otter tests, assignment_name) and adds
metadata.otter_service = {course, section, assignment}, which the gateway routes on. The
notebooks carry no outputs (otter run re-executes them anyway) and stable cell ids, so
regenerating them from an unchanged master gives identical files. Needs only nbformat.

Usage: python3 make_submissions.py [--student dist/student.ipynb] [--out submissions]
"""

import argparse
import copy
import hashlib
import pathlib

import nbformat

HERE = pathlib.Path(__file__).resolve().parent
OTTER_SERVICE = {"course": "demo101", "section": "1", "assignment": "sample"}

# (placeholder in the student notebook, replacement) per answer cell
IMPORTS = "import numpy as np\nimport pandas as pd"
Q1 = "seconds_per_week = ...\nseconds_per_week"
Q2 = "mean_temp_f = ...\nmean_temp_f"
Q3 = "def is_palindrome(text):\n    ..."

FULL = {
    Q1: "seconds_per_week = 7 * 24 * 60 * 60\nseconds_per_week",
    Q2: 'mean_temp_f = float(temps["temp_c"].mean() * 9 / 5 + 32)\nmean_temp_f',
    Q3: (
        "def is_palindrome(text):\n"
        "    letters = [ch.lower() for ch in text if ch.isalnum()]\n"
        "    return letters == letters[::-1]"
    ),
}

PARTIAL = {
    Q1: "seconds_per_week = 60 * 60 * 24 * 7\nseconds_per_week",
    # wrong constant (+30): in the public test's range, fails the hidden exact value
    Q2: 'mean_temp_f = float(temps["temp_c"].mean() * 9 / 5 + 30)\nmean_temp_f',
    # ignores case and punctuation handling: passes the simple public words only
    Q3: "def is_palindrome(text):\n    return text == text[::-1]",
}

ZERO = {
    # ModuleNotFoundError in the first cell; answers left as the placeholders
    IMPORTS: "import nump as np\nimport pandas as pd",
}


def stable_cell_id(index: int, cell: nbformat.NotebookNode) -> str:
    """otter assign gives the cells it adds random ids; ids derived from the notebook instead make
    regenerating a submission change nothing."""
    return hashlib.sha256(f"{index}:{cell.cell_type}:{cell.source}".encode()).hexdigest()[:8]


def fill(student: nbformat.NotebookNode, answers: dict[str, str]) -> nbformat.NotebookNode:
    nb = copy.deepcopy(student)
    left = dict(answers)
    for index, cell in enumerate(nb.cells):
        cell.id = stable_cell_id(index, cell)
        if cell.cell_type == "code":
            src = cell.source.strip()
            if src in left:
                cell.source = left.pop(src)
            cell.outputs = []
            cell.execution_count = None
    if left:
        raise SystemExit(f"student notebook has no cell {next(iter(left))!r}")
    nb.metadata["otter_service"] = dict(OTTER_SERVICE)
    nbformat.validate(nb)
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", type=pathlib.Path, default=HERE / "dist" / "student.ipynb")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "submissions")
    args = parser.parse_args()

    student = nbformat.read(args.student, as_version=4)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, answers in (("full", FULL), ("partial", PARTIAL), ("zero", ZERO)):
        path = args.out / f"{name}.ipynb"
        nbformat.write(fill(student, answers), path)
        print(f"wrote {path.relative_to(HERE) if path.is_relative_to(HERE) else path}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Builds an assignment of the fidelity corpus from a course's published student notebook.

Some courses publish the notebooks otter made for their students, not the master: the questions
with `...` placeholders and the public tests in the notebook's metadata (`metadata.otter.tests`,
OK format). This turns one such source into what `otter assign` would have made:

  OUT/autograder.zip   otter_config.json, requirements.txt pinning otter-grader, tests/<q>.py (the
                       notebook's own tests, unchanged) and files/ (the data files beside it)
  OUT/student.ipynb    the student notebook as published (byte for byte)
  OUT/solution.ipynb   the same notebook with answers.json applied: {cell id: the answer cell's
                       source}, written by the otter-edge team (the course's solutions are not public)

SOURCE holds exactly one .ipynb, its answers.json and the data files the notebook reads (at the
relative paths it reads them from). Needs only nbformat.

Usage: python3 from_student.py SOURCE OUT --otter-version 7.0.0
"""

import argparse
import io
import json
import pathlib
import zipfile

import nbformat

NOT_DATA = {"answers.json", "README.md"}


def build(source: pathlib.Path, out: pathlib.Path, otter_version: str) -> None:
    [notebook_path] = sorted(source.glob("*.ipynb"))
    raw = notebook_path.read_bytes()
    nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    tests = nb.metadata.get("otter", {}).get("tests")
    if not tests:
        raise SystemExit(f"{notebook_path}: no metadata.otter.tests: not an otter student notebook")
    answers = json.loads((source / "answers.json").read_text(encoding="utf-8"))
    by_id = {cell.get("id"): cell for cell in nb.cells}
    unknown = sorted(set(answers) - set(by_id))
    if unknown:
        raise SystemExit(f"{source / 'answers.json'}: no cell with id {', '.join(unknown)}")

    out.mkdir(parents=True, exist_ok=True)
    (out / "student.ipynb").write_bytes(raw)
    solution = nbformat.reads(raw.decode("utf-8"), as_version=4)
    for cell in solution.cells:
        if cell.get("id") in answers:
            if cell.cell_type != "code":
                raise SystemExit(f"answers.json: cell {cell.id} is not a code cell")
            cell.source = answers[cell.id]
    nbformat.write(solution, out / "solution.ipynb")

    buffer = io.BytesIO()
    # Fixed timestamps: the same sources give the same zip, byte for byte.
    def add(z, name, data):
        info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        z.writestr(info, data)

    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        add(z, "otter_config.json", json.dumps({"lang": "python"}))
        add(z, "requirements.txt", f"otter-grader=={otter_version}\n")
        for name in sorted(tests):
            add(z, f"tests/{name}.py", f"OK_FORMAT = True\n\ntest = {tests[name]!r}\n")
        for path in sorted(p for p in source.rglob("*") if p.is_file() and p.name not in NOT_DATA and p != notebook_path):
            add(z, f"files/{path.relative_to(source).as_posix()}", path.read_bytes())
    (out / "autograder.zip").write_bytes(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("source", type=pathlib.Path)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--otter-version", required=True)
    args = parser.parse_args()
    build(args.source, args.out, args.otter_version)


if __name__ == "__main__":
    main()

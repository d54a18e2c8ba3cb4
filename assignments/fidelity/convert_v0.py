#!/usr/bin/env python3
"""Convert an otter-assign "v0" (jAssign-style) master notebook to the v1 format that
otter-grader 7.0.0 reads.

Only the otter markup changes. Question prompts, solution code (including its in-code
``# SOLUTION`` / ``# BEGIN SOLUTION`` / ``# END SOLUTION`` markers, which v1 reads the same way),
test code, and the stored outputs of test cells (the expected outputs) are left as they are.

v0 markup that is understood:

* Assignment config: a raw (or Markdown) cell whose first non-blank line is ``BEGIN ASSIGNMENT``
  followed by YAML, optionally wrapped in a ``` fence. Only ``files``, ``init_cell`` and
  ``check_all_cell`` are carried over; everything else (pdf, export, generate, requirements, ...)
  is dropped and reported.
* Question: a Markdown cell holding a ``` fenced block whose first line is ``BEGIN QUESTION``
  followed by YAML (``name``, ``points``, ``manual``, ...), or a raw cell starting with
  ``BEGIN QUESTION``. The fenced block is removed from the Markdown prompt.
* Response (solution) cells: the code cell directly after the question cell (or, for a manual
  question, a Markdown cell starting with ``**SOLUTION**``), plus the code cells after it up to
  the tests. Any other Markdown response cell (e.g. "*Type your answer here*") stays inside the
  question but outside the solution block, so it reaches students unchanged, as in v0. If no
  tests follow, only further code cells that carry solution markers join the response.
* Tests: code cells directly after the response whose first non-blank line is a comment
  ``# TEST`` (public) or ``# HIDDEN TEST`` (hidden).
* ``<!-- BEGIN QUESTION -->`` / ``<!-- END QUESTION -->`` comment lines (PDF-filtering markup that
  otter writes into its own output) are removed; otter v1 writes its own.

v1 markup that is written (see otter/assign/blocks.py and tests_manager.py in otter 7.0.0):

* first cell: raw ``# ASSIGNMENT CONFIG`` with ``run_tests: true`` and ``files: [...]``;
* raw ``# BEGIN QUESTION`` + YAML config, ... raw ``# END QUESTION``;
* raw ``# BEGIN SOLUTION`` / ``# END SOLUTION`` around the response cells;
* raw ``# BEGIN TESTS`` / ``# END TESTS`` around the test cells; a hidden test has ``# HIDDEN``
  as its first line, a public test has its ``# TEST`` line removed.

Usage:
    python convert_v0.py IN.ipynb OUT.ipynb [--files a.csv b.txt ...]

Needs only nbformat (and PyYAML, which nbformat does not need but otter does; it is used here
only if installed, to validate the YAML blocks).
"""

from __future__ import annotations

import argparse
import re
import sys

import nbformat

try:  # optional: only used to validate/normalise YAML
    import yaml
except ImportError:  # pragma: no cover
    yaml = None

QUESTION_KEYS = {"name", "points", "manual", "check_cell", "export", "all_or_nothing"}
ASSIGNMENT_KEYS_KEPT = {"files", "init_cell", "check_all_cell"}

FENCE_RE = re.compile(r"^\s*```")
TEST_RE = re.compile(r"^\s*#\s*(HIDDEN\s+)?TEST\s*$")
SOLUTION_MARKER_RE = re.compile(
    r"#\s*(BEGIN SOLUTION|END SOLUTION|SOLUTION)(\s+NO PROMPT)?\s*$", re.MULTILINE
)
EXPORT_COMMENT_RE = re.compile(r"^\s*<!--\s*(BEGIN|END)\s+QUESTION\s*-->\s*$")


def lines_of(cell) -> list[str]:
    return cell.source.split("\n")


def first_nonblank(lines: list[str]) -> tuple[int, str]:
    for i, line in enumerate(lines):
        if line.strip():
            return i, line
    return -1, ""


def raw(text: str):
    return nbformat.v4.new_raw_cell(text)


def parse_yaml(text: str, what: str) -> dict:
    if yaml is None:
        # minimal "key: value" parser, sufficient for v0 question headers
        out = {}
        for line in text.splitlines():
            if ":" in line and not line.lstrip().startswith("#"):
                k, v = line.split(":", 1)
                out[k.strip()] = v.strip()
        return out
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{what}: YAML is not a mapping: {text!r}")
    return data


def find_fenced_block(lines: list[str], header: str):
    """Return (start, end, yaml_text) of a ``` block whose first inner line is ``header``."""
    i = 0
    while i < len(lines):
        if FENCE_RE.match(lines[i]):
            j = i + 1
            while j < len(lines) and not FENCE_RE.match(lines[j]):
                j += 1
            inner = lines[i + 1 : j]
            k, first = first_nonblank(inner)
            if k >= 0 and first.strip() == header:
                return i, min(j, len(lines) - 1), "\n".join(inner[k + 1 :])
            i = j + 1
        else:
            i += 1
    return None


def raw_header_block(cell, header: str):
    """For a raw cell (or an all-fenced cell) starting with ``header``, return its YAML text."""
    lines = [l for l in lines_of(cell) if not FENCE_RE.match(l)]
    k, first = first_nonblank(lines)
    if k >= 0 and first.strip() == header:
        return "\n".join(lines[k + 1 :])
    return None


def question_config(cell):
    """Return (yaml_text, prompt_cell_or_None) if ``cell`` is a v0 question cell."""
    if cell.cell_type == "raw":
        text = raw_header_block(cell, "BEGIN QUESTION")
        return (text, None) if text is not None else None
    if cell.cell_type == "markdown":
        lines = lines_of(cell)
        found = find_fenced_block(lines, "BEGIN QUESTION")
        if found is None:
            return None
        start, end, text = found
        rest = lines[:start] + lines[end + 1 :]
        while rest and not rest[-1].strip():
            rest.pop()
        while rest and not rest[0].strip():
            rest.pop(0)
        prompt = None
        if rest:
            prompt = nbformat.from_dict(dict(cell))
            prompt.source = "\n".join(rest)
        return text, prompt
    return None


def assignment_config(cell):
    if cell.cell_type not in ("raw", "markdown"):
        return None
    text = raw_header_block(cell, "BEGIN ASSIGNMENT")
    if text is None and cell.cell_type == "markdown":
        found = find_fenced_block(lines_of(cell), "BEGIN ASSIGNMENT")
        if found is not None:
            text = found[2]
    return text


def test_kind(cell):
    """'public', 'hidden' or None."""
    if cell.cell_type != "code":
        return None
    _, first = first_nonblank(lines_of(cell))
    m = TEST_RE.match(first)
    if not m:
        return None
    return "hidden" if m.group(1) else "public"


def convert_test(cell, kind):
    cell = nbformat.from_dict(dict(cell))
    lines = lines_of(cell)
    k, _ = first_nonblank(lines)
    body = lines[k + 1 :]
    if kind == "hidden":
        body = ["# HIDDEN"] + body
    cell.source = "\n".join(body)
    return cell


def has_solution_markers(cell) -> bool:
    return cell.cell_type == "code" and bool(SOLUTION_MARKER_RE.search(cell.source))


def strip_export_comments(cell):
    if cell.cell_type != "markdown":
        return cell
    lines = lines_of(cell)
    kept = [l for l in lines if not EXPORT_COMMENT_RE.match(l)]
    if kept == lines:
        return cell
    cell = nbformat.from_dict(dict(cell))
    cell.source = "\n".join(kept).strip("\n")
    return cell


def yaml_dump(data: dict) -> str:
    if yaml is not None:
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False,
                              allow_unicode=True).rstrip("\n")
    return "\n".join(f"{k}: {v}" for k, v in data.items())


def convert(nb, extra_files=None, log=print):
    cells = list(nb.cells)
    out = []
    files: list[str] = []
    assign_extra: dict = {}
    names_seen: dict[str, int] = {}
    n_questions = n_tests = n_hidden = 0

    i = 0
    while i < len(cells):
        cell = cells[i]

        a_text = assignment_config(cell)
        if a_text is not None:
            cfg = parse_yaml(a_text, "BEGIN ASSIGNMENT")
            for k, v in cfg.items():
                if k == "files":
                    files.extend(v or [])
                elif k in ASSIGNMENT_KEYS_KEPT:
                    assign_extra[k] = v
                else:
                    log(f"note: dropped assignment config key {k!r}")
            i += 1
            continue

        q = question_config(cell)
        if q is None:
            if cell.cell_type == "markdown" and "BEGIN QUESTION" in cell.source and not EXPORT_COMMENT_RE.search(cell.source):
                log(f"warning: cell {i} mentions BEGIN QUESTION but was not parsed as a question")
            if test_kind(cell):
                log(f"warning: test cell {i} outside any question; left unchanged")
            out.append(strip_export_comments(cell))
            i += 1
            continue

        q_text, prompt = q
        qcfg = parse_yaml(q_text, f"question at cell {i}")
        for k in list(qcfg):
            if k not in QUESTION_KEYS:
                log(f"note: question {qcfg.get('name')!r}: dropped unknown key {k!r}")
                del qcfg[k]
        name = str(qcfg.get("name"))
        names_seen[name] = names_seen.get(name, 0) + 1
        if names_seen[name] > 1:
            log(f"warning: duplicate question name {name!r} (cell {i})")
        manual = bool(qcfg.get("manual", False))

        out.append(raw("# BEGIN QUESTION\n" + yaml_dump(qcfg)))
        if prompt is not None:
            out.append(strip_export_comments(prompt))
        i += 1

        # response cells
        j = i
        while j < len(cells) and cells[j].cell_type == "code" and not test_kind(cells[j]):
            j += 1
        has_tests = j < len(cells) and test_kind(cells[j]) is not None
        solution = []
        if has_tests or j == i:
            solution = cells[i:j]
        else:
            solution = [cells[i]]
            for c in cells[i + 1 : j]:
                if not has_solution_markers(c):
                    break
                solution.append(c)
        if not solution and manual and i < len(cells) and cells[i].cell_type == "markdown" \
                and first_nonblank(lines_of(cells[i]))[1].lstrip().startswith("**SOLUTION"):
            # jAssign/v0: a Markdown response starting with **SOLUTION** is replaced by a
            # "type your answer here" cell; v1 does the same for a Markdown solution cell.
            solution = [cells[i]]
        if not solution and manual and i < len(cells) and cells[i].cell_type == "markdown" \
                and question_config(cells[i]) is None and assignment_config(cells[i]) is None:
            # a plain Markdown response cell: keep it inside the question, unchanged
            out.append(strip_export_comments(cells[i]))
            i += 1
        if solution:
            out.append(raw("# BEGIN SOLUTION"))
            out.extend(strip_export_comments(c) for c in solution)
            out.append(raw("# END SOLUTION"))
            i += len(solution)

        # tests
        tests = []
        while i < len(cells) and test_kind(cells[i]):
            kind = test_kind(cells[i])
            tests.append(convert_test(cells[i], kind))
            n_hidden += kind == "hidden"
            i += 1
        if tests:
            out.append(raw("# BEGIN TESTS"))
            out.extend(tests)
            out.append(raw("# END TESTS"))
        elif not manual:
            log(f"warning: autograded question {name!r} has no tests")
        n_tests += len(tests)
        n_questions += 1
        out.append(raw("# END QUESTION"))

    for f in extra_files or []:
        if f not in files:
            files.append(f)
    acfg: dict = {"run_tests": True}
    if files:
        acfg["files"] = files
    acfg.update(assign_extra)
    out.insert(0, raw("# ASSIGNMENT CONFIG\n" + yaml_dump(acfg)))

    new = nbformat.from_dict(dict(nb))
    new.cells = out
    log(f"converted: {n_questions} questions, {n_tests} test cells ({n_hidden} hidden)")
    return new


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--files", nargs="*", default=[], help="data files for ASSIGNMENT CONFIG files:")
    args = p.parse_args(argv)
    nb = nbformat.read(args.input, as_version=4)
    new = convert(nb, args.files, log=lambda m: print(m, file=sys.stderr))
    nbformat.write(new, args.output)


if __name__ == "__main__":
    main()

"""grade.py's "kernel" isolation (the default) with a real Jupyter kernel and otter-grader 7.0.0
(host venv, one uid: the uid split is covered by test/hostile.test.ts). The tests run in the
kernel as `otter run` runs them; the results leave the kernel as JSON, and the grader rebuilds the
test files from its own copies."""

import json
import pathlib
import sys
import textwrap

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "grading-image" / "otter-edge"))
import grade  # noqa: E402
from test_grader_side_checks import HOSTILE, SAMPLE, run, sample_tests, score, write_tests  # noqa: E402,F401


def run_in_kernel(nb, test_paths, **options):
    return run(nb, test_paths, grade.make_grade_notebook_in_kernel, **options)


def notebook(*cells):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells])


@pytest.mark.parametrize("name, expected", [("full", 1.0), ("partial", 0.6), ("zero", 0.0)])
def test_sample_scores_match_otter(sample_tests, name, expected):
    nb = nbformat.read(SAMPLE / "submissions" / f"{name}.ipynb", as_version=4)
    assert score(run_in_kernel(nb, sample_tests)) == pytest.approx(expected)


def test_generators_closures_and_student_objects_grade_as_in_otter(tmp_path):
    # The protocols the grader-side bridge lacked (next() on a generator, isinstance with the
    # student's class, comparing student objects): in the kernel they are plain Python.
    tests = write_tests(tmp_path, {"q1": [("""
        >>> g = naturals()
        >>> next(g), next(g), next(g)
        (0, 1, 2)
        >>> import itertools
        >>> list(itertools.islice(naturals(), 3))
        [0, 1, 2]
        """, False)], "q2": [("""
        >>> isinstance(Point(1, 2), Point), type(Point(1, 2)).__name__
        (True, 'Point')
        >>> Point(1, 2) == Point(1, 2), Point(1, 2) + Point(2, 3) == Point(3, 5)
        (True, True)
        """, False)], "q3": [(">>> c = counter(); c(), c()\n(1, 2)\n", False)]})
    nb = notebook("""
        import otter
        grader = otter.Notebook()
        def naturals():
            n = 0
            while True:
                yield n
                n += 1
        """, """
        class Point:
            def __init__(self, x, y): self.x, self.y = x, y
            def __eq__(self, o): return (self.x, self.y) == (o.x, o.y)
            def __add__(self, o): return Point(self.x + o.x, self.y + o.y)
        def counter():
            n = 0
            def bump():
                nonlocal n
                n += 1
                return n
            return bump
        """, 'grader.check("q1")')
    results = run_in_kernel(nb, tests)
    assert results.total == 3, [r.message for tf in results.results.values() for r in tf.test_case_results]


def test_tamper_checker_scores_as_under_plain_otter(sample_tests):
    # The trade-off of "kernel": a notebook that rewrites otter's checker in its own kernel is graded
    # by that checker, exactly as plain `otter run` grades it (5/5). "grader" isolation scores it 0.
    nb = nbformat.read(HOSTILE / "tamper-checker.ipynb", as_version=4)
    assert score(run_in_kernel(nb, sample_tests)) == 1


def test_points_and_hidden_flags_come_from_the_graders_copy(tmp_path):
    tests = write_tests(tmp_path, {"q1": [(">>> x\n1\n", False), (">>> x + 1\n2\n", True)]})
    results = run_in_kernel(notebook("x = 1"), tests)
    tf = results.results["q1"]
    assert [tcr.test_case.hidden for tcr in tf.test_case_results] == [False, True]
    assert results.total == 2 and results.possible == 2


def test_results_for_a_file_outside_the_tests_are_refused(tmp_path):
    tests = write_tests(tmp_path, {"q1": [(">>> 1\n1\n", False)]})
    outside = tmp_path / "elsewhere.py"
    outside.write_text(pathlib.Path(tests[0]).read_text())
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps([{"path": str(outside), "cases": [{"passed": True, "message": None}]}]))
    with pytest.raises(ValueError, match="outside the tests"):
        grade.results_from_kernel(str(forged), str(tmp_path / "tests"))


def test_a_case_the_kernel_did_not_report_fails(tmp_path):
    tests = write_tests(tmp_path, {"q1": [(">>> 1\n1\n", False), (">>> 2\n2\n", False)]})
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps([{"path": tests[0], "cases": [{"passed": True, "message": None}]}]))
    [tf] = grade.results_from_kernel(str(partial), str(tmp_path / "tests"))
    assert [tcr.passed for tcr in tf.test_case_results] == [True, False]


def test_an_export_that_failed_is_otters_catastrophic_failure(tmp_path):
    # The notebook breaks what the export cell needs: no results file, a score of 0 with otter's
    # error entry (otter: the pickle it cannot load).
    tests = write_tests(tmp_path, {"q1": [(">>> 1\n1\n", False)]})
    results = run_in_kernel(notebook("import builtins\nbuiltins.open = None"), tests)
    assert results._catastrophic_error is not None
    assert results.total == 0

"""grade.py's grader-side checks with a real Jupyter kernel and otter-grader 7.0.0 (host venv, no
container: the uid split is covered by test/hostile.test.ts). The notebook runs in the kernel, the
tests run in this process through the bridge (bridge_grader here, bridge_kernel in the kernel)."""

import json
import os
import pathlib
import sys
import tempfile
import textwrap
import zipfile

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "grading-image" / "otter-edge"))
import grade  # noqa: E402
from otter.test_files import GradingResults  # noqa: E402

SAMPLE = ROOT / "assignments" / "sample"
HOSTILE = ROOT / "assignments" / "hostile"


def score(results: GradingResults) -> float:
    return results.total / results.possible


def write_tests(tmp_path, tests):
    """OK-format test files {name: [(code, hidden)]} in tmp_path/tests; their paths, sorted."""
    test_dir = tmp_path / "tests"
    test_dir.mkdir()
    for name, cases in tests.items():
        spec = {"name": name, "points": len(cases), "suites": [{"type": "doctest", "cases": [
            {"code": textwrap.dedent(code), "hidden": hidden} for code, hidden in cases]}]}
        (test_dir / f"{name}.py").write_text(f"OK_FORMAT = True\ntest = {spec!r}\n")
    return sorted(str(p) for p in test_dir.glob("*.py"))


def grade_cells(tmp_path, cells, tests, make=None, **options):
    """Runs a notebook of `cells` (code strings) against OK-format `tests` {name: [(code, hidden)]}."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells])
    return run(nb, write_tests(tmp_path, tests), make, **options)


def run(nb, test_paths, make=None, **options):
    """grade.py's grade_notebook (`make`: grader isolation by default) as otter's PythonRunner calls
    it (one uid here: nothing to kill)."""
    work = pathlib.Path(tempfile.mkdtemp())
    path = work / "submission.ipynb"
    nbformat.write(nb, path)
    grade.kill_student_processes = lambda: None
    # otter's runner works in the submission's directory, and the kernel starts there (otter's
    # Notebook leaves its .OTTER_LOG in it).
    here = os.getcwd()
    os.chdir(work)
    try:
        return (make or grade.make_grade_notebook)()(str(path), tests_glob=test_paths, test_dir=str(pathlib.Path(test_paths[0]).parent),
                                                     cwd=str(work), ignore_errors=True, **options)
    finally:
        os.chdir(here)


@pytest.fixture(scope="module")
def sample_tests(tmp_path_factory):
    out = tmp_path_factory.mktemp("autograder")
    with zipfile.ZipFile(SAMPLE / "dist" / "autograder.zip") as z:
        z.extractall(out)
    return sorted(str(p) for p in (out / "tests").glob("*.py"))


@pytest.mark.parametrize("name, expected", [("full", 1.0), ("partial", 0.6), ("zero", 0.0)])
def test_sample_scores_match_otter(sample_tests, name, expected):
    nb = nbformat.read(SAMPLE / "submissions" / f"{name}.ipynb", as_version=4)
    assert score(run(nb, sample_tests)) == pytest.approx(expected)


def test_rewriting_the_checker_in_the_kernel_changes_nothing(sample_tests):
    # tamper-checker patches otter's doctest runner in its kernel (5/5 under plain otter): its answers
    # are plain values, the tests run here, nothing falls back to the kernel.
    grade.kernel_fallbacks.clear()
    nb = nbformat.read(HOSTILE / "tamper-checker.ipynb", as_version=4)
    assert score(run(nb, sample_tests)) == 0
    assert grade.kernel_fallbacks == {}


def test_objects_that_equal_anything_reopen_what_plain_otter_gives_them(sample_tests):
    # tamper-values answers with objects that equal anything and patches numpy in its kernel. Comparing
    # the student's objects is what the bridge refuses, so those tests run in the kernel, as plain
    # otter runs them, and score what plain otter gives (3/5): the trade-off of "no wrong grade from
    # the bridge", recorded for staff.
    grade.kernel_fallbacks.clear()
    nb = nbformat.read(HOSTILE / "tamper-values.ipynb", as_version=4)
    assert score(run(nb, sample_tests)) == pytest.approx(0.6)
    assert grade.kernel_fallbacks and all("compares" in why for why in grade.kernel_fallbacks.values())


def test_objects_that_claim_anything_are_judged_in_the_kernel_as_otter_would(tmp_path):
    grade.kernel_fallbacks.clear()
    results = grade_cells(tmp_path, [
        """
        import numpy as np
        class Anything:
            def __eq__(self, other): return True
            def __bool__(self): return True
            def __repr__(self): return "True"
            def __float__(self): return 3.0
        answer = Anything()
        np.isclose = lambda *a, **k: True   # the kernel's numpy, not the grader's
        """,
        'grader.check("q1")',
    ], {"q1": [("""
        >>> answer == 3
        True
        """, False), ("""
        >>> bool(np.isclose(answer, 3))
        True
        """, True), ("""
        >>> answer
        3
        """, True)]})
    # In the kernel, as under plain otter: the object equals 3, the kernel's isclose says yes, its
    # repr is not 3. The bridge refused the comparison, so the test ran there, and says so.
    assert [r.passed for r in results.results["q1"].test_case_results] == [True, True, False]
    assert "compares or tests the truth of a Anything" in grade.kernel_fallbacks["q1"]


def test_checks_run_where_the_notebook_checks_and_the_rest_at_the_end(tmp_path):
    results = grade_cells(tmp_path, [
        "unanswered = ...",  # otter assign's placeholder is a value like any other
        "x = 1",
        'grader.check("q1")',   # x == 1 here
        "x = 2",                 # later cells reuse the name, as notebooks do
        "y = x * 10",            # q2 is never checked in the notebook: run at the end
    ], {"q1": [(">>> x\n1\n", False)], "q2": [(">>> y\n20\n", False)], "q3": [(">>> unanswered == 5, unanswered\n(False, Ellipsis)\n", False)]})
    assert results.total == 3


def test_student_functions_run_in_the_kernel_with_plain_values_both_ways(tmp_path):
    results = grade_cells(tmp_path, [
        """
        import numpy as np
        import pandas as pd
        from datascience import Table, make_array
        def double(v):
            if isinstance(v, str):
                raise ValueError("numbers only")
            return v * 2
        class Counter:
            def __init__(self, start): self.n = start
            def bump(self): self.n += 1; return self.n
        arr = np.arange(4)
        df = pd.DataFrame({"city": ["a", "b"], "t": [1.5, 2.5]})
        t = Table().with_columns("k", make_array(1, 2, 3))
        scalar = np.float64(2.5)
        """,
    ], {"q1": [("""
        >>> double(21)
        42
        >>> double(arr).tolist()
        [0, 2, 4, 6]
        >>> double("x")
        Traceback (most recent call last):
        ...
        ValueError: numbers only
        >>> c = Counter(5)
        >>> c.bump(), c.n
        (6, 6)
        >>> type(df).__name__, df.shape, float(df["t"].sum()), list(df["city"])
        ('DataFrame', (2, 2), 4.0, ['a', 'b'])
        >>> t.num_rows, float(np.mean(t.column("k"))), type(scalar).__name__
        (3, 2.0, 'float64')
        """, False)]})
    assert results.results["q1"].test_case_results[0].passed, results.results["q1"].test_case_results[0].message


def test_the_kernel_cannot_read_the_tests_directory_in_grading_mode(tmp_path):
    # grade_notebook makes otter's copy of the tests 0700 for the grader uid; here (one uid) check
    # only that an in-kernel grader.check is a no-op rather than a test run.
    results = grade_cells(tmp_path, [
        "import otter\ngrader = otter.Notebook()\nx = 0",
        "ran = grader.check('q1'); x = 1",   # not a check cell: the check is a no-op, the rest runs
    ], {"q1": [(">>> x, ran\n(1, None)\n", False)]})
    assert results.total == 1


def test_read_tests_probe_answers_when_it_can_read_the_tests(sample_tests):
    # Here (one uid, tests extracted under /tmp) the probe finds them and answers right: proof that
    # its score of 0 in the real sandbox (test/hostile.test.ts) means it found nothing.
    nb = nbformat.read(HOSTILE / "read-tests.ipynb", as_version=4)
    assert score(run(nb, sample_tests)) == 1


def test_seeding_in_a_test_reaches_the_students_function(tmp_path):
    results = grade_cells(tmp_path, [
        """
        import numpy as np
        import random
        def draw():
            return int(np.random.randint(0, 1_000_000)), random.randint(0, 1_000_000)
        """,
    ], {"q1": [("""
        >>> np.random.seed(7); random.seed(7)
        >>> first = draw()
        >>> np.random.seed(7); random.seed(7)
        >>> draw() == first
        True
        >>> np.random.seed(7); random.seed(7)
        >>> first == (int(np.random.randint(0, 1_000_000)), random.randint(0, 1_000_000))
        True
        """, False)]})
    assert results.total == 1, results.results["q1"].test_case_results[0].message


def test_standard_library_values_cross_as_themselves(tmp_path):
    results = grade_cells(tmp_path, [
        """
        import collections, datetime, decimal, fractions
        counts = collections.Counter("banana")
        groups = collections.defaultdict(list, {"a": [1]})
        window = collections.deque([1, 2, 3], maxlen=3)
        when = datetime.datetime(2026, 11, 26, 7, 0, tzinfo=datetime.timezone.utc)
        span = datetime.timedelta(days=1, seconds=5)
        price = decimal.Decimal("1.10")
        third = fractions.Fraction(1, 3)
        """,
    ], {"q1": [("""
        >>> counts == collections.Counter({"a": 3, "n": 2, "b": 1}), type(counts).__name__
        (True, 'Counter')
        >>> groups["b"], type(groups).__name__
        ([], 'defaultdict')
        >>> window.maxlen, list(window)
        (3, [1, 2, 3])
        >>> when.isoformat(), span.total_seconds()
        ('2026-11-26T07:00:00+00:00', 86405.0)
        >>> price + decimal.Decimal("0.01"), third * 3
        (Decimal('1.11'), Fraction(1, 1))
        """, False)]})
    assert results.total == 1, results.results["q1"].test_case_results[0].message


def test_otters_seed_setting_seeds_the_kernel_and_the_grader_at_each_check():
    import numpy as np
    np.random.seed(42)
    first = int(np.random.randint(0, 1_000_000))
    results = grade_cells(pathlib.Path(tempfile.mkdtemp()), [
        """
        import numpy as np
        def draw():
            return int(np.random.randint(0, 1_000_000))
        burn = [np.random.randint(0, 9) for _ in range(5)]   # moves the kernel's RNG along
        """,
        'grader.check("q1")',
        'grader.check("q2")',
    ], {"q1": [(f">>> draw()\n{first}\n", False)], "q2": [(f">>> int(np.random.randint(0, 1_000_000))\n{first}\n", False)]}, seed=42)
    assert results.total == 2, [r.message for tf in results.results.values() for r in tf.test_case_results]


def test_generators_iterate_lazily_and_next_works(tmp_path):
    results = grade_cells(tmp_path, [
        """
        def naturals():
            n = 0
            while True:
                yield n
                n += 1
        class Countdown:
            def __init__(self, n): self.n = n
            def __iter__(self): return self
            def __next__(self):
                if self.n == 0:
                    raise StopIteration
                self.n -= 1
                return self.n + 1
        """,
    ], {"q1": [("""
        >>> g = naturals()
        >>> next(g), next(g), next(g)
        (0, 1, 2)
        >>> import itertools
        >>> list(itertools.islice(naturals(), 4))
        [0, 1, 2, 3]
        >>> list(Countdown(3)), sum(Countdown(4))
        ([3, 2, 1], 10)
        """, False)]})
    assert results.total == 1, results.results["q1"].test_case_results[0].message
    assert grade.kernel_fallbacks == {}


def test_isinstance_arithmetic_and_context_managers_with_student_classes(tmp_path):
    results = grade_cells(tmp_path, [
        """
        class Money:
            def __init__(self, cents): self.cents = cents
            def __add__(self, other): return Money(self.cents + (other.cents if isinstance(other, Money) else other))
            def __radd__(self, other): return self + other
            def __float__(self): return self.cents / 100
        class Opened:
            def __enter__(self): return "opened"
            def __exit__(self, *exc): return False
        class Sub(Money):
            pass
        """,
    ], {"q1": [("""
        >>> isinstance(Money(1), Money), isinstance(Sub(1), Money), isinstance(3, Money), issubclass(Sub, Money)
        (True, True, False, True)
        >>> (Money(150) + Money(25)).cents, (5 + Money(1)).cents, float(Money(250))
        (175, 6, 2.5)
        >>> with Opened() as state:
        ...     print(state)
        opened
        """, False)]})
    assert results.total == 1, results.results["q1"].test_case_results[0].message
    assert grade.kernel_fallbacks == {}


def test_a_test_the_bridge_cannot_carry_runs_in_the_kernel_and_is_recorded(tmp_path):
    # Comparing two of the student's objects, and their type's name: refused or answered differently
    # by the bridge, so the test runs in the kernel (plain otter's answer) and says why.
    grade.kernel_fallbacks.clear()
    results = grade_cells(tmp_path, [
        """
        class Point:
            def __init__(self, x, y): self.x, self.y = x, y
            def __eq__(self, o): return (self.x, self.y) == (o.x, o.y)
        calls = []
        def origin():
            calls.append(1)
            return Point(0, 0)
        """,
    ], {"q1": [(">>> origin() == Point(0, 0)\nTrue\n", False)], "q2": [(">>> type(origin()).__name__\n'Point'\n", False)],
        "q3": [(">>> origin().x\n0\n", False)]})
    assert results.total == 3, [r.message for tf in results.results.values() for r in tf.test_case_results]
    assert set(grade.kernel_fallbacks) == {"q1", "q2"}
    assert "compares" in grade.kernel_fallbacks["q1"]
    assert "protocol" in grade.kernel_fallbacks["q2"] and "Remote_" not in grade.kernel_fallbacks["q2"]


def test_printing_in_place_changes_identity_and_builtin_types_as_in_the_kernel(tmp_path):
    results = grade_cells(tmp_path, [
        """
        def receipt(prices):
            for item, price in prices.items():
                print(f"{item}: {price:.2f}")
        def sort_in_place(values):
            values.sort()
            return len(values)
        def fill(d):
            d["filled"] = True
        class Countup:
            def __init__(self, n): self.n = n
            def __iter__(self): return self
            def __next__(self):
                self.n += 1
                return self.n
        def evens():
            n = 0
            while True:
                yield n
                n += 2
        """,
    ], {"q1": [("""
        >>> receipt({"tea": 2.5})
        tea: 2.50
        >>> data = [3, 1, 2]
        >>> sort_in_place(data), data
        (3, [1, 2, 3])
        >>> d = {}
        >>> fill(d); d
        {'filled': True}
        >>> c = Countup(1)
        >>> iter(c) is c, next(c), next(c)
        (True, 2, 3)
        >>> import types, collections.abc
        >>> g = evens()
        >>> isinstance(g, types.GeneratorType), isinstance(g, collections.abc.Iterator)
        (True, True)
        """, False)]})
    assert results.total == 1, results.results["q1"].test_case_results[0].message
    assert grade.kernel_fallbacks == {}

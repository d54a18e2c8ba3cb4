#!/usr/bin/env python3
"""Regenerate sources/protocols/protocols-master.ipynb (the self-written `protocols` assignment).

The questions, solutions and tests are defined below. The script writes the otter-assign v1 master,
executes it once in the `python3` Jupyter kernel to record the output of every test cell (otter
assign reads a test cell's stored output as the doctest's expected output), keeps only those outputs,
and checks that each is plain text or stdout on one line (IPython wraps long reprs over several lines,
doctest does not, so a long expected value would not match under otter). The output is deterministic.

Run with the Python of a venv built from grading-image/requirements.txt (it needs nbformat, nbclient,
ipykernel and the packages the notebook imports):

    python build_protocols_master.py [OUT.ipynb]
"""
import pathlib
import sys
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_raw_cell
from nbclient import NotebookClient

OUT = sys.argv[1] if len(sys.argv) > 1 else str(
    pathlib.Path(__file__).resolve().parent / "sources" / "protocols" / "protocols-master.ipynb"
)

CONFIG = """# ASSIGNMENT CONFIG
name: protocols
init_cell: true
check_all_cell: false
export_cell: false
run_tests: true
tests:
  files: false
  ok_format: true"""

INTRO = """# otter-edge fidelity: Python protocols

Fifteen short questions. Each test reaches the student's code through a different Python protocol
(generators, iterators, dunder methods, closures, context managers, in-place mutation, printing,
exceptions, random seeds, NumPy, pandas, `datascience` Tables, matplotlib figures, dicts/sets,
recursion). Replace every `...` and run the check cell below each question."""

SETUP = """import contextlib
import io
import itertools
import types

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from datascience import Table, are, make_array"""

Q = []  # (name, points, prompt, [solution cells], [(hidden, test code)], [cells after])

Q.append(("q1", 3, """**Question 1 (generators).** Write a generator function `countdown(n)` that yields
`n, n-1, ..., 1` (nothing when `n <= 0`), and a generator function `evens()` that yields
`0, 2, 4, ...` forever.""",
["""def countdown(n):
    # BEGIN SOLUTION
    while n > 0:
        yield n
        n -= 1
    # END SOLUTION


def evens():
    # BEGIN SOLUTION
    k = 0
    while True:
        yield k
        k += 2
    # END SOLUTION"""],
[(False, "next(countdown(3))"),
 (False, "list(itertools.islice(countdown(4), 10)), list(itertools.islice(countdown(0), 10))"),
 (True, """gen = evens()
(isinstance(gen, types.GeneratorType), list(itertools.islice(gen, 5)), next(gen))""")]))

Q.append(("q2", 2, """**Question 2 (iterator protocol).** Complete the class `Countup` so that `Countup(limit)` is an
*iterator* over `0, 1, ..., limit`: `__iter__` returns the object itself and `__next__` returns the
next number or raises `StopIteration`.""",
['''class Countup:
    def __init__(self, limit):
        self.limit = limit
        self.current = 0 # SOLUTION

    def __iter__(self):
        return self # SOLUTION

    def __next__(self):
        # BEGIN SOLUTION
        if self.current > self.limit:
            raise StopIteration
        value = self.current
        self.current += 1
        return value
        # END SOLUTION'''],
[(False, "list(itertools.islice(Countup(3), 10))"),
 (False, """it = iter(Countup(1))
[next(it), next(it), next(it, 'done')]"""),
 (True, """c = Countup(10)
(iter(c) is c, sum(itertools.islice(c, 100)), list(itertools.islice(c, 5)))""")]))

Q.append(("q3", 3, """**Question 3 (a container class).** Complete `Playlist`: `Playlist(name)` has attributes `name`
and `songs` (a list, initially empty); `add(song)` appends a song and returns nothing; `len()`,
`in` and indexing (`p[0]`, `p[-1]`, slices) work on the songs.""",
['''class Playlist:
    def __init__(self, name):
        self.name = name
        self.songs = [] # SOLUTION

    def add(self, song):
        self.songs.append(song) # SOLUTION

    def __len__(self):
        return len(self.songs) # SOLUTION

    def __contains__(self, song):
        return song in self.songs # SOLUTION

    def __getitem__(self, index):
        return self.songs[index] # SOLUTION'''],
[(False, """p = Playlist('road trip')
p.add('Hey Jude')
p.add('Africa')
(isinstance(p, Playlist), type(p).__name__, p.name, len(p))"""),
 (False, """p = Playlist('mix')
p.add('Africa')
p.add('Hey Jude')
('Africa' in p, 'Yesterday' in p, p[0], p[-1])"""),
 (True, """p = Playlist('abc')
for s in ['a', 'b', 'c']:
    p.add(s)
(p[1:], list(itertools.islice(iter(p), 5)), p.songs)""")]))

Q.append(("q4", 2, """**Question 4 (ordering).** `Runner(name, seconds)` records a race time. Complete `__eq__` and
`__lt__` so that runners compare by `(seconds, name)`: equal when both are equal, and ordered by
time, then name (so `sorted`, `min` and `>` work).""",
['''class Runner:
    def __init__(self, name, seconds):
        self.name = name
        self.seconds = seconds

    def __repr__(self):
        return f"Runner({self.name!r}, {self.seconds})"

    def __eq__(self, other):
        return (self.seconds, self.name) == (other.seconds, other.name) # SOLUTION

    def __lt__(self, other):
        return (self.seconds, self.name) < (other.seconds, other.name) # SOLUTION'''],
[(False, "Runner('ann', 61) == Runner('ann', 61), Runner('ann', 61) == Runner('bo', 61)"),
 (False, "[r.name for r in sorted([Runner('cy', 70), Runner('bo', 61), Runner('ann', 61)])]"),
 (True, "min([Runner('x', 5), Runner('y', 3)]).name, Runner('a', 1) < Runner('a', 2), Runner('b', 1) > Runner('a', 1)")]))

Q.append(("q5", 3, """**Question 5 (a numeric class).** Complete `Vector`: `+` adds two vectors, `*` multiplies by a
number on either side (`v * 3`, `3 * v`), `==` is true only for another `Vector` with the same
coordinates, and `abs(v)` is its length.""",
['''class Vector:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __repr__(self):
        return f"Vector({self.x}, {self.y})"

    def __add__(self, other):
        return Vector(self.x + other.x, self.y + other.y) # SOLUTION

    def __mul__(self, k):
        return Vector(self.x * k, self.y * k) # SOLUTION

    __rmul__ = __mul__

    def __eq__(self, other):
        return isinstance(other, Vector) and (self.x, self.y) == (other.x, other.y) # SOLUTION

    def __abs__(self):
        return (self.x ** 2 + self.y ** 2) ** 0.5 # SOLUTION'''],
[(False, "Vector(1, 2) + Vector(3, 4) == Vector(4, 6)"),
 (False, "Vector(1, 2) * 3, 2 * Vector(1, -1)"),
 (True, "bool(np.isclose(abs(Vector(3, 4)), 5.0)), Vector(1, 2) == (1, 2), sum([Vector(1, 1), Vector(2, 2)], Vector(0, 0))")]))

Q.append(("q6", 2, """**Question 6 (closures).** `make_counter(start=0)` returns a function that, each time it is
called, adds one to its own count (starting from `start`) and returns it. `make_multiplier(k)`
returns a function that multiplies its argument by `k`.""",
['''def make_counter(start=0):
    # BEGIN SOLUTION
    count = start

    def counter():
        nonlocal count
        count += 1
        return count

    return counter
    # END SOLUTION


def make_multiplier(k):
    # BEGIN SOLUTION
    def multiply(x):
        return x * k

    return multiply
    # END SOLUTION'''],
[(False, """c = make_counter()
[c(), c(), c()]"""),
 (False, "make_multiplier(3)(5), callable(make_multiplier(2))"),
 (True, """a, b = make_counter(10), make_counter()
_ = a()
_ = a()
(a(), b(), b())""")]))

Q.append(("q7", 2, """**Question 7 (context managers).** Complete the class `Tally`: entering a `with` block sets
`open` to `True` and gives the `Tally` itself; leaving it sets `open` to `False` and *suppresses*
a `ValueError` raised inside the block (other exceptions propagate). Then write
`temporary_setting(settings, key, value)` with `contextlib.contextmanager`: inside the block
`settings[key]` is `value`; afterwards the old value is back.""",
['''class Tally:
    def __init__(self):
        self.items = []
        self.open = False

    def add(self, item):
        self.items.append(item)

    def __enter__(self):
        # BEGIN SOLUTION
        self.open = True
        return self
        # END SOLUTION

    def __exit__(self, exc_type, exc, tb):
        # BEGIN SOLUTION
        self.open = False
        return exc_type is not None and issubclass(exc_type, ValueError)
        # END SOLUTION


@contextlib.contextmanager
def temporary_setting(settings, key, value):
    # BEGIN SOLUTION
    old = settings[key]
    settings[key] = value
    try:
        yield settings
    finally:
        settings[key] = old
    # END SOLUTION'''],
[(False, """with Tally() as t:
    t.add('a')
    t.add('b')
    was_open = t.open
(was_open, t.open, t.items)"""),
 (False, """with Tally() as t:
    t.add(1)
    raise ValueError('suppressed by Tally')
t.items"""),
 (True, """settings = {'mode': 'fast'}
with temporary_setting(settings, 'mode', 'slow') as s:
    inside = (s['mode'], s is settings)
(inside, settings)""")]))

Q.append(("q8", 2, """**Question 8 (in-place mutation).** `sort_scores(scores)` sorts the list it is given *in place*,
highest first, and returns `None`. `add_bonus(scores, bonus)` adds `bonus` to every element of the
list it is given, in place. `append_twice(lst, item)` appends `item` to `lst` twice.""",
['''def sort_scores(scores):
    scores.sort(reverse=True) # SOLUTION


def add_bonus(scores, bonus):
    # BEGIN SOLUTION
    for i in range(len(scores)):
        scores[i] += bonus
    # END SOLUTION


def append_twice(lst, item):
    # BEGIN SOLUTION
    lst.append(item)
    lst.append(item)
    # END SOLUTION'''],
[(False, """data = [70, 95, 82]
result = sort_scores(data)
(data, result)"""),
 (False, """data = [1, 2]
alias = data
add_bonus(data, 5)
(alias, alias is data)"""),
 (True, """log = []
for v in 'xy':
    append_twice(log, v)
log""")]))

Q.append(("q9", 2, """**Question 9 (printing).** `print_receipt(items)` takes a dict of item name to price and
*prints* one line `name: price` per item (price with two decimals, in the dict's order), then a line
`total: T`. It returns `None`.""",
['''def print_receipt(items):
    # BEGIN SOLUTION
    total = 0
    for name, price in items.items():
        print(f"{name}: {price:.2f}")
        total += price
    print(f"total: {total:.2f}")
    # END SOLUTION'''],
[(False, "print_receipt({'tea': 2.5, 'cake': 3})"),
 (False, """buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    result = print_receipt({'pen': 1})
(buf.getvalue().splitlines(), result)"""),
 (True, "print_receipt({})")]))

Q.append(("q10", 2, """**Question 10 (exceptions).** `parse_age(text)` returns the whole number written in `text`
(surrounding spaces allowed). It raises `ValueError` if `text` is not a number, and
`ValueError("age cannot be negative")` if the number is negative.""",
['''def parse_age(text):
    # BEGIN SOLUTION
    value = int(text)
    if value < 0:
        raise ValueError("age cannot be negative")
    return value
    # END SOLUTION'''],
[(False, "[parse_age('42'), parse_age(' 7 '), parse_age('0')]"),
 (False, """try:
    _ = parse_age('-3')
    outcome = 'no error'
except ValueError as e:
    outcome = ('ValueError', 'negative' in str(e))
outcome"""),
 (True, """try:
    _ = parse_age('abc')
except ValueError:
    ok = True
else:
    ok = False
ok""")]))

Q.append(("q11", 3, """**Question 11 (random numbers and NumPy).** `roll_dice(n)` returns a NumPy array of `n` rolls of
a fair die, drawn with `np.random.randint(1, 7, size=n)` (use exactly this call so that a seed
gives known rolls). `proportion_sixes(rolls)` returns the fraction of the rolls that are 6.""",
['''def roll_dice(n):
    return np.random.randint(1, 7, size=n) # SOLUTION


def proportion_sixes(rolls):
    return np.count_nonzero(rolls == 6) / len(rolls) # SOLUTION'''],
[(False, """np.random.seed(42)
rolls = roll_dice(10)
(type(rolls).__name__, rolls.tolist())"""),
 (False, "bool(np.isclose(proportion_sixes(np.array([6, 1, 6, 2])), 0.5))"),
 (True, """np.random.seed(0)
p = proportion_sixes(roll_dice(60000))
(bool(np.isclose(p, 1 / 6, atol=0.01)), round(float(p), 4))""")]))

Q.append(("q12", 3, """The DataFrame `weather` below holds daily temperatures.

**Question 12 (pandas).** `city_summary(df)` returns a DataFrame indexed by city (sorted), with
columns `mean_temp` (mean of `temp`) and `days` (number of rows). `hot_days(df, threshold)` returns
the Series of the `temp` values greater than `threshold`, keeping the original index.""",
['''def city_summary(df):
    # BEGIN SOLUTION
    return df.groupby("city").agg(mean_temp=("temp", "mean"), days=("temp", "size"))
    # END SOLUTION


def hot_days(df, threshold):
    return df.loc[df["temp"] > threshold, "temp"] # SOLUTION'''],
[(False, """s = city_summary(weather)
(isinstance(s, pd.DataFrame), list(s.columns), s.index.tolist(), s['days'].tolist())"""),
 (False, "city_summary(weather)['mean_temp'].to_dict()"),
 (True, """h = hot_days(weather, 20)
(isinstance(h, pd.Series), h.equals(pd.Series([22.0, 24.5], index=[1, 4], name='temp')))""")],
 ))

Q.append(("q13", 2, """**Question 13 (a `datascience` Table).** `make_fruit_table()` returns a `Table` with columns
`fruit` (`"apple"`, `"kiwi"`, `"fig"`) and `count` (`3`, `7`, `2`), in that order.
`popular(tbl, at_least)` returns the rows of `tbl` whose `count` is at least `at_least`.""",
['''def make_fruit_table():
    # BEGIN SOLUTION
    return Table().with_columns(
        "fruit", make_array("apple", "kiwi", "fig"),
        "count", make_array(3, 7, 2),
    )
    # END SOLUTION


def popular(tbl, at_least):
    return tbl.where("count", are.above_or_equal_to(at_least)) # SOLUTION'''],
[(False, """t = make_fruit_table()
(type(t).__name__, t.num_rows, list(t.labels))"""),
 (False, """t = make_fruit_table()
(t.column('fruit').tolist(), t.column('count').tolist())"""),
 (True, "popular(make_fruit_table(), 3).column('fruit').tolist(), popular(make_fruit_table(), 8).num_rows")]))

Q.append(("q14", 2, """**Question 14 (a matplotlib figure).** `plot_temps(days, highs, lows)` draws two lines on one
Axes, `highs` (label `"high"`) then `lows` (label `"low"`), against `days`, titles the Axes
`"Daily temperatures"`, and returns `(fig, ax)`.""",
['''def plot_temps(days, highs, lows):
    # BEGIN SOLUTION
    fig, ax = plt.subplots()
    ax.plot(days, highs, label="high")
    ax.plot(days, lows, label="low")
    ax.set_title("Daily temperatures")
    ax.legend()
    return fig, ax
    # END SOLUTION'''],
[(False, """fig, ax = plot_temps([1, 2, 3], [20, 22, 21], [10, 12, 11])
result = (len(fig.axes), len(ax.lines), ax.get_title())
plt.close(fig)
result"""),
 (True, """fig, ax = plot_temps([1, 2, 3], [20, 22, 21], [10, 12, 11])
result = [(line.get_label(), [float(v) for v in line.get_ydata()]) for line in ax.lines]
plt.close(fig)
result""")]))

Q.append(("q15", 3, """**Question 15 (dicts, sets and recursion).** `letter_counts(word)` returns a dict of letter to
count; `shared_letters(a, b)` returns the set of letters in both words. `total_leaves(tree)` sums
a tree written as nested lists (a tree is a number or a list of trees) *recursively*.""",
['''def letter_counts(word):
    # BEGIN SOLUTION
    counts = {}
    for ch in word:
        counts[ch] = counts.get(ch, 0) + 1
    return counts
    # END SOLUTION


def shared_letters(a, b):
    return set(a) & set(b) # SOLUTION


def total_leaves(tree):
    # BEGIN SOLUTION
    if not isinstance(tree, list):
        return tree
    return sum(total_leaves(t) for t in tree)
    # END SOLUTION'''],
[(False, "letter_counts('banana') == {'a': 3, 'b': 1, 'n': 2}, shared_letters('otter', 'grader') == {'e', 'r'}"),
 (False, "total_leaves([1, [2, [3, 4]], 5]), total_leaves(7), total_leaves([])"),
 (True, "type(shared_letters('ab', 'bc')).__name__, total_leaves([[[[[1]]]]] * 3), sorted(letter_counts('otter').items())")]))

Q.append(("q16", 2, """**Question 16 (NumPy numbers).** `total_rainfall(days)` returns the sum of the NumPy array `days`
with `np.sum` (a NumPy number, not a Python one); `wettest(days)` returns the position of its
largest value with `np.argmax`. The tests compare NumPy numbers, and doctest compares what they
print: `True` under the print options `datascience` sets, `np.True_` without them.""",
['''def total_rainfall(days):
    return np.sum(days) # SOLUTION


def wettest(days):
    return np.argmax(days) # SOLUTION'''],
[(False, "total_rainfall(np.array([1.5, 2.5, 6.0])) == 10"),
 (False, "0 <= wettest(np.array([3, 9, 1])) <= 2"),
 (True, "wettest(np.array([3, 9, 1])) == 1, total_rainfall(np.array([2, 3])) > 4")]))

WEATHER = """weather = pd.DataFrame({
    "city": ["Cork", "Bergen", "Cork", "Bergen", "Aberdeen"],
    "temp": [18.0, 22.0, 15.0, 11.5, 24.5],
})
weather"""

cells = [new_raw_cell(CONFIG), new_markdown_cell(INTRO), new_code_cell(SETUP)]
test_cells = []
for name, points, prompt, sols, tests in Q:
    md_pre, _, md_q = prompt.rpartition("\n\n**") if prompt.startswith("The DataFrame") else ("", "", prompt)
    if md_pre:
        cells.append(new_markdown_cell(md_pre))
        cells.append(new_code_cell(WEATHER))
        md_q = "**" + md_q
    cells.append(new_raw_cell(f"# BEGIN QUESTION\nname: {name}\npoints: {points}"))
    cells.append(new_markdown_cell(md_q))
    cells.append(new_raw_cell("# BEGIN SOLUTION"))
    cells += [new_code_cell(s) for s in sols]
    cells.append(new_raw_cell("# END SOLUTION"))
    cells.append(new_raw_cell("# BEGIN TESTS"))
    for hidden, code in tests:
        c = new_code_cell(("# HIDDEN\n" if hidden else "") + code)
        test_cells.append(c)
        cells.append(c)
    cells.append(new_raw_cell("# END TESTS"))
    cells.append(new_raw_cell("# END QUESTION"))
cells.append(new_markdown_cell("You are done. Save the notebook and submit it."))

nb = new_notebook(cells=cells)
nb.metadata = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python", "version": "3.11"},
}
for i, c in enumerate(nb.cells):
    c["id"] = f"cell-{i:03d}"

NotebookClient(nb, timeout=120, kernel_name="python3").execute()
test_ids = {c["id"] for c in test_cells}
for c in nb.cells:
    if c.cell_type != "code":
        continue
    c.execution_count = None
    c.metadata.pop("execution", None)  # nbclient's timestamps
    if c["id"] not in test_ids:
        c.outputs = []
    else:
        for o in c.outputs:
            if "execution_count" in o:
                o["execution_count"] = None
            assert o["output_type"] in ("execute_result", "stream"), (c.source, o)
            if o["output_type"] == "stream":
                assert o["name"] == "stdout", (c.source, o)
            else:
                assert set(o["data"]) == {"text/plain"}, (c.source, o)
nb.metadata.pop("widgets", None)
nbformat.validate(nb)
nbformat.write(nb, OUT)
for c in test_cells:
    out = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in c.outputs)
    print(f"{c.source.splitlines()[-1][:70]!r:75} -> {out!r}")
    assert "\n" not in out.rstrip("\n") or c.source.startswith(("print_receipt", "# HIDDEN\nprint_receipt")), c.source

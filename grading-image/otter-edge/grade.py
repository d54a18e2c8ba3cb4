"""otter-edge's grading driver: `otter run` for one notebook, with the student kept apart.

Started by ./grade as the grader uid (10001) holding CAP_SETUID/CAP_SETGID/CAP_SETPCAP. Usage:
    grade.py -a AUTOGRADER_ZIP -o OUTDIR SUBMISSION_IPYNB
and it writes OUTDIR/results.json like `otter run --no-logo` (otter-grader 7.0.0, whose
internals this file names: check them when the pinned version changes).

How `otter run` 7.0.0 grades, and what this changes:
  * otter.run.main extracts the autograder into a mkdtemp directory, copies the tests into the
    submission directory (runner.prepare_files) and calls otter.execute.grade_notebook, which
    adds an init cell and an export cell to the notebook and executes it with nbconvert in ONE
    kernel: the student's cells and then the tests (otter.execute.Checker, otter.test_files)
    run in the student's own process.
  * That kernel runs as the student uid 10002 here (kernelspec ./jupyter/kernels/python3 ->
    ./student-kernel). Everything of the grader (tests, autograder source, results, /job/out,
    this process's home) is owned by 10001 and not writable by 10002; the kernel's working
    directory (otter's submission directory) is world-writable and sticky, so the notebook can
    write its own files there but cannot replace or remove the grader's.
  * otter's export cell pickles its results into a temp file that the grader then
    pickle.load()s, and otter's execution log server (otter.execute.logging) pickle.loads
    whatever any local process sends to it: both are code execution in the grader for anyone
    who can write that file or connect to localhost. Here neither exists: the export cell is
    dropped, the log server is not started, and nothing the kernel produced is ever unpickled.
  * Where the tests run is the assignment's choice (job.json beside the autograder, written by the
    runner; see ISOLATIONS). "kernel" (the default) is otter's own grade_notebook, run as the
    student's uid, with the tests in the kernel exactly as `otter run` does, so the grade is
    otter's; only the log server and the pickle are gone (the results leave the kernel as JSON).
    The notebook can rewrite the checker it is graded by, as it can under otter.
  * "grader": the tests do not run in the kernel (where the notebook could rewrite the checker,
    doctest or numpy before they run): this process executes the notebook cell by cell, and at each
    cell that is only `grader.check("q")` (otter checks there too), and at the end for every
    test not checked yet, runs otter's own test files itself, against a namespace whose names
    are read from the kernel through the bridge (bridge_grader here, bridge_kernel in the kernel,
    bridge_codec for both): plain values as data, modules and library functions from this
    process's own imports, the student's functions and objects as handles whose calls are answered
    by the kernel. In-kernel checks are no-ops, and otter's copy of the tests in the kernel's
    directory is made unreadable to the student (hidden tests included). The test files, their
    cases and their points are the grader's own.
  * Before results.json is written, every process of the student uid is killed.

Warm start (--wait-for MARKER): the runner may start the container before it has a job, so that
the container start, Python start and the imports below are paid while no student is waiting.
The process checks the sandbox, imports otter, nbconvert and jupyter_client, and then waits (no
student code, no job files yet) until MARKER appears: the runner copies the job's files into
/job with MARKER as the last entry of the same archive, so when it exists the files before it
are complete. Then it grades exactly that one job, as without --wait-for, and exits: a container
never sees a second job. If no job comes within --wait-max-seconds it exits EX_NO_JOB (the
runner retires idle containers long before that; this bounds one left by a runner that died).

What the bridge cannot tell apart: a value the kernel reports is the student's claim about their
own notebook, as an answer typed into a cell would be. A test that hands an expected value to the
student's own code (e.g. calls a function the notebook defined with the right answer as an
argument) lets that code see it; tests that compare in the test itself do not.
"""

import argparse
import ast
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # python -I leaves the script's directory off sys.path; it is root's, read-only

from bridge_grader import Bridge, StudentNamespace, safe_import  # noqa: E402
# The uid split and the checks that refuse to grade without it (exit EX_SANDBOX = 70).
from sandbox_checks import GRADER_HOME, STUDENT_UID, check_sandbox, fail_sandbox  # noqa: E402

KERNELS = "/opt/otter-edge/jupyter"
# How long the grader waits at a time for the kernel's answer before it checks the kernel is alive.
ASK_POLL_SECONDS = 1.0
# Exit code for "waited for a job that never came" (--wait-for): never a grade. The runner treats
# it as an infrastructure failure should it ever see it for a job.
EX_NO_JOB = 71
# How often a waiting container looks for its job's marker: a stat() on /job, ~0 CPU, and at most
# this much delay between the hand-over and the start of grading.
WAIT_POLL_SECONDS = 0.005

# otter's init cell (otter.execute.preprocessor.INIT_CELL_SOURCE has the same placeholders), without
# otter's log client: grading mode as in otter, in-kernel checks turned into no-ops (the grader runs
# the tests, see run_notebook), and the bridge that answers the grader's questions installed
# (bridge_kernel: it imports bridge_codec only, never bridge_grader).
INIT_CELL_BRIDGE = """\
from otter import Notebook as {notebook_name}
{notebook_name}.init_grading_mode("{test_dir}")
{notebook_name}.check = lambda self, question, global_env=None: None
import sys as _otter_edge_sys
_otter_edge_sys.path.append(%r)
import bridge_kernel as _otter_edge_bridge
_otter_edge_bridge.install(get_ipython())
del _otter_edge_sys, _otter_edge_bridge
""" % HERE

# A cell that is nothing but `grader.check("q1")` (what otter assign writes after each question):
# otter checks that question at this point of the notebook, and so does the grader.
CHECK_LINE = re.compile(r"""^\s*[A-Za-z_][A-Za-z_0-9]*\.check\(\s*(?P<q>['"])(?P<name>[A-Za-z0-9_.\- ]+)(?P=q)\s*\)\s*;?\s*$""")

# Where the tests run, per assignment (the runner writes it to /job/job.json, see job_settings):
#   "kernel"  exactly as `otter run`: the tests run in the student's kernel, so the grade is otter's
#             (the notebook could rewrite the checker it is graded by, as under otter itself);
#   "grader"  the tests run in this process through bridge_grader (tamper-resistant; a test the
#             bridge cannot carry falls back to the kernel, see run_notebook).
ISOLATIONS = ("kernel", "grader")
DEFAULT_ISOLATION = "kernel"

# Kernel isolation: otter's own init cell without its log client (the log server is not started:
# it unpickles what any local process sends it), and otter's own export cell, except that the
# results leave the kernel as JSON data (pass/fail and message per test case) instead of a pickle
# the grader would load. The grader rebuilds the test files from its own copy (results_from_kernel).
INIT_CELL_KERNEL = """\
from otter import Notebook as {notebook_name}
{notebook_name}.init_grading_mode("{test_dir}")
"""
EXPORT_CELL_KERNEL = """\
from otter.execute import Checker
for {tests_loop_var} in {tests_glob_json}:
    Checker.check_if_not_already_checked({tests_loop_var})

from otter.test_files import GradingResults
results = GradingResults(Checker.get_results())

import json
with open("{results_path}", "x", encoding="utf-8") as f:
    json.dump([{{"path": tf.path, "cases": [{{"passed": bool(r.passed), "message": r.message}}
                                          for r in tf.test_case_results]}}
               for tf in Checker.get_results()], f)
"""
# The kernel's results file is read only up to this size (otter's messages carry doctest output).
MAX_KERNEL_RESULTS_BYTES = 64 * 1024 * 1024


def grader_environment():
    """The grader's Jupyter/IPython/matplotlib state in its private home, not in the shared /tmp."""
    env = {
        "HOME": GRADER_HOME,
        "IPYTHONDIR": f"{GRADER_HOME}/.ipython",
        "MPLCONFIGDIR": f"{GRADER_HOME}/.config/matplotlib",
        "JUPYTER_RUNTIME_DIR": f"{GRADER_HOME}/.jupyter/runtime",
        "JUPYTER_CONFIG_DIR": f"{GRADER_HOME}/.jupyter/config",
        "JUPYTER_DATA_DIR": f"{GRADER_HOME}/.jupyter/data",
        "XDG_CACHE_HOME": f"{GRADER_HOME}/.cache",
        "XDG_CONFIG_HOME": f"{GRADER_HOME}/.config",
        "XDG_DATA_HOME": f"{GRADER_HOME}/.local/share",
        "XDG_RUNTIME_DIR": f"{GRADER_HOME}/.run",
        # The student kernelspec shadows the image's own "python3" (the one plain `otter run` uses).
        "JUPYTER_PATH": KERNELS,
    }
    os.environ.update(env)


def signal_as_student(target, signum):
    """Send a signal to `target` (a kill(2) pid: -pgid for a process group, -1 for every process of
    the student) from the student uid itself: the grader holds no CAP_KILL, so it may not signal the
    student's processes (nor they the grader's). kill(-1) spares the caller."""
    name = signal.Signals(signum).name.removeprefix("SIG")
    subprocess.run(
        ["/usr/bin/setpriv", f"--reuid={STUDENT_UID}", f"--regid={STUDENT_UID}", "--clear-groups",
         "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--",
         "/bin/sh", "-c", 'kill -s "$1" -- "$2" 2>/dev/null', "signal-as-student", name, str(target)],
        check=False, stdin=subprocess.DEVNULL,  # no such process: nothing left to signal
    )


def kill_student_processes():
    """SIGKILL every process of the student uid: kernel, daemons, forks."""
    signal_as_student(-1, signal.SIGKILL)


def patch_kernel_provisioner():
    """jupyter_client interrupts, terminates and kills the kernel with os.killpg/os.kill, which the
    grader may not do to another uid (EPERM). It signals the kernel's process group as the student."""
    from jupyter_client.provisioning.local_provisioner import LocalProvisioner

    async def send_signal(self, signum):
        if self.process:
            signal_as_student(-self.pgid if self.pgid else self.process.pid, signum)

    LocalProvisioner.send_signal = send_signal


def code_lines(source):
    """A cell's lines that are code: not blank, not comments."""
    return [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def check_cells(nb):
    """{id(cell): [question, ...]} for the cells that are only checks. Decided by the grader from the
    cells' source before anything runs (never from metadata the notebook could carry); cells that
    otter's GradingPreprocessor would add for `tests` in a cell's otter metadata are added here,
    already marked, so that it adds none."""
    import nbformat

    from otter.utils import NOTEBOOK_METADATA_KEY

    checks, cells = {}, []
    for cell in nb.cells:
        cells.append(cell)
        if cell.cell_type != "code":
            continue
        lines = code_lines(cell.source)
        matches = [CHECK_LINE.match(line) for line in lines]
        if lines and all(matches):
            checks[id(cell)] = [m.group("name") for m in matches]
        config = cell.get("metadata", {}).get(NOTEBOOK_METADATA_KEY, {})
        if isinstance(config, dict) and config.get("tests"):
            questions = [str(t) for t in config.pop("tests")]
            added = nbformat.v4.new_code_cell("# otter-edge: checks " + ", ".join(questions))
            checks[id(added)] = questions
            cells.append(added)
    nb.cells = cells
    return checks


def make_ask(km):
    """`ask(request_json) -> answer_json`: one question to the kernel's bridge, as a Jupyter user
    expression on a client of its own (nbclient's client keeps executing cells). The answer is the
    repr of a str, read back with ast.literal_eval: data, never code."""
    from jupyter_client import BlockingKernelClient
    from jupyter_core.utils import run_sync

    client = BlockingKernelClient()
    client.load_connection_info(km.get_connection_info())
    client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
    is_alive = run_sync(km.is_alive)

    def ask(request_json):
        from nbclient.exceptions import DeadKernelError

        msg_id = client.execute("", silent=True, store_history=False,
                                user_expressions={"a": f"__otter_edge__.handle({request_json!r})"})
        while True:
            try:
                reply = client.get_shell_msg(timeout=ASK_POLL_SECONDS)
            except queue.Empty:
                if not is_alive():
                    raise DeadKernelError("Kernel died while the grader was checking the notebook") from None
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                break
        answer = reply.get("content", {}).get("user_expressions", {}).get("a", {})
        if answer.get("status") != "ok":
            return json.dumps({"error": {"type": str(answer.get("ename", "Error")), "message": str(answer.get("evalue", ""))}})
        text = answer.get("data", {}).get("text/plain")
        try:
            value = ast.literal_eval(text) if isinstance(text, str) else None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        return value if isinstance(value, str) else None

    return ask, client


def failed_to_run(path, error):
    """A test file whose checks could not run at all (e.g. it raised outside its cases): every case fails."""
    from otter.nbmeta_config import NBMetadataConfig
    from otter.test_files import TestCaseResult, create_test_file

    tf = create_test_file(path, NBMetadataConfig())
    message = f"❌ Test could not run: {type(error).__name__}: {error}"[:4000]
    tf.test_case_results = [TestCaseResult(test_case=tc, message=message, passed=False) for tc in tf.test_cases]
    return tf


@contextlib.contextmanager
def mirrored_seeds(bridge):
    """A test that seeds numpy's or Python's RNG (`np.random.seed(42)`) before calling the student's
    function expects that seed where the function runs: the kernel. Inside this context the
    grader's own seed functions also seed the kernel's; it yields the originals, to seed only here."""
    import random

    import numpy.random

    originals = {}
    for module, name in ((numpy.random, "numpy.random"), (random, "random")):
        original = originals[module] = module.seed

        def seed(*args, _original=original, _name=name):
            _original(*args)
            bridge.ask("seed", module=_name, args=[bridge.codec.encode(a) for a in args])

        module.seed = seed
    try:
        yield list(originals.values())
    finally:
        for module, original in originals.items():
            module.seed = original


def mirror_numpy_printing(bridge):
    """Formats numpy values in the grader as the kernel would at this point: a doctest compares
    printed output, and `0 <= p <= 1` prints `True` under the legacy options datascience sets in
    the kernel, `np.True_` without them."""
    import numpy

    from bridge_codec import NUMPY_PRINT_OPTIONS

    options = bridge.ask("numpy_printoptions")
    if type(options) is dict:
        numpy.set_printoptions(**{k: v for k, v in options.items() if k in NUMPY_PRINT_OPTIONS})


# Tests of the current grading that ran in the kernel because the bridge could not carry them:
# {test name: why}. Written into results.json (see main) for staff.
kernel_fallbacks = {}


def run_notebook(nb, test_paths, checks, ignore_errors, seed=None):
    """Executes the notebook in the student's kernel, cell by cell, and runs the tests in THIS
    process (otter runs them in the kernel): at each check cell, the question's tests against the
    notebook's globals at that point, as otter does; afterwards, each test not checked yet. The
    tests read the notebook through bridge_grader, so nothing the notebook does to its own
    interpreter (patching otter, doctest, numpy, ...) reaches the checker. Returns the executed
    notebook and otter TestFiles."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError
    from otter.nbmeta_config import NBMetadataConfig
    from otter.test_files import create_test_file

    # Most tests name numpy (`np.isclose(...)`): the grader imports its own copy while the kernel
    # starts and runs the notebook, instead of at the first check.
    numpy_import = threading.Thread(target=safe_import, args=("numpy",), daemon=True)
    numpy_import.start()
    by_question = {os.path.splitext(os.path.basename(p))[0]: p for p in test_paths}
    results = {}  # path -> TestFile; a question checked twice: the last check counts, as in otter

    client = NotebookClient(nb, kernel_name="python3", allow_errors=ignore_errors, timeout=None)
    client.reset_execution_trackers()
    with client.setup_kernel(), contextlib.ExitStack() as at_exit:
        ask, ask_client = make_ask(client.km)
        at_exit.callback(ask_client.stop_channels)
        bridge = Bridge(ask)
        seed_here = None

        def check(path, at_end):
            nonlocal seed_here
            if seed_here is None:  # at the first check: numpy's import overlapped the notebook's run
                numpy_import.join()
                seed_here = at_exit.enter_context(mirrored_seeds(bridge))
            bridge.forget()
            mirror_numpy_printing(bridge)
            if seed is not None:
                # otter's `seed` setting seeds every cell, check cells included, so a test's own random
                # draws start from the seed: the grader's RNGs too (the kernel's: the check cell's prefix).
                for original in seed_here:
                    original(seed)
            tf = create_test_file(path, NBMetadataConfig())
            error = None
            try:
                tf.run(StudentNamespace(bridge))
            except DeadKernelError:
                raise
            except Exception as e:  # noqa: BLE001
                error = e
            failing = [f"{type(error).__name__}: {error}"] if error else [r.message for r in tf.test_case_results if not r.passed]
            why = bridge.carried(failing) if failing else None
            if why:
                # The bridge could not carry this test as otter would run it: it runs in the kernel,
                # as plain otter runs it (the notebook's globals as they are now), and is recorded.
                if seed is not None:  # otter's `seed` setting: the check starts from the seed in the kernel too
                    for module in ("numpy.random", "random"):
                        bridge.ask("seed", module=module, args=[seed])
                with open(path, encoding="utf-8") as f:
                    source = f.read()
                cases = bridge.ask("run_test", name=os.path.splitext(os.path.basename(path))[0], source=source)
                tf = apply_kernel_cases(create_test_file(path, NBMetadataConfig()), cases if type(cases) is list else [])
                kernel_fallbacks[tf.name] = why
            elif error is not None:
                if not at_end:
                    return  # as a check otter could not run: tried again at the end
                tf = failed_to_run(path, error)
            results[path] = tf

        for index, cell in enumerate(nb.cells):
            questions = checks.get(id(cell))
            if questions is None:
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
                continue
            # A check cell held only checks and comments; what otter's preprocessor added to it
            # (the `seed` setting's seeding) still runs in the kernel, as it would under otter.
            added = "\n".join(line for line in code_lines(cell.source) if not CHECK_LINE.match(line))
            if added:
                client.execute_cell(nbformat.v4.new_code_cell(added), index, execution_count=client.code_cells_executed + 1)
            for question in questions:
                if question in by_question:
                    check(by_question[question], at_end=False)
        for path in test_paths:
            if path not in results:
                check(path, at_end=True)
    return nb, [results[p] for p in test_paths if p in results]


def job_settings(autograder_path):
    """The job's settings the runner wrote beside the autograder (job.json, the grader's alone):
    {"isolation": "kernel" | "grader"}. Missing (an older runner): otter's own behaviour."""
    path = os.path.join(os.path.dirname(os.path.abspath(autograder_path)), "job.json")
    try:
        with open(path, encoding="utf-8") as f:
            settings = json.load(f)
    except FileNotFoundError:
        settings = {}
    isolation = settings.get("isolation", DEFAULT_ISOLATION)
    if isolation not in ISOLATIONS:
        fail_sandbox(f"unknown isolation {isolation!r} in {path}")
    return {"isolation": isolation}


def apply_kernel_cases(tf, cases):
    """Sets `tf`'s case results from what the kernel reported for them, in order: pass/fail and the
    message are the kernel's; the cases (points, hidden) are the grader's own. A case the kernel did
    not report (or reported malformed) fails."""
    from otter.test_files import TestCaseResult

    results = []
    for i, tc in enumerate(tf.test_cases):
        case = cases[i] if i < len(cases) else None
        if type(case) is not dict or type(case.get("passed")) is not bool or not (case.get("message") is None or type(case["message"]) is str):
            results.append(TestCaseResult(test_case=tc, message="❌ Test case did not report a result", passed=False))
        else:
            results.append(TestCaseResult(test_case=tc, message=case["message"], passed=case["passed"]))
    tf.test_case_results = results
    return tf


def results_from_kernel(results_path, test_dir):
    """otter's TestFiles from the kernel's JSON export: the test files (cases, points, hidden) are
    the grader's own copies, read from the grader-owned test directory; only each case's pass/fail
    and message come from the kernel, as they do under otter. Raises on anything malformed, which
    the caller reports as otter reports an export that failed."""
    from otter.nbmeta_config import NBMetadataConfig
    from otter.test_files import create_test_file

    fd = os.open(results_path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_KERNEL_RESULTS_BYTES + 1)
    if len(raw) > MAX_KERNEL_RESULTS_BYTES:
        raise ValueError("the notebook's test results are larger than allowed")
    entries = json.loads(raw.decode("utf-8"))
    if type(entries) is not list:
        raise ValueError("the notebook's test results are not a list")
    tests_root = os.path.realpath(test_dir)
    test_files = []
    for entry in entries:
        if type(entry) is not dict or type(entry.get("path")) is not str or type(entry.get("cases")) is not list:
            raise ValueError("malformed test result from the notebook")
        real = os.path.realpath(entry["path"])
        if os.path.dirname(real) != tests_root or not os.path.isfile(real):
            raise ValueError(f"test result for a file outside the tests: {entry['path'][:200]!r}")
        test_files.append(apply_kernel_cases(create_test_file(entry["path"], NBMetadataConfig()), entry["cases"]))
    return test_files


def read_submission(submission_path, script, plugin_collection):
    """The submission as otter.execute.grade_notebook reads it: a notebook, or a script as one
    cell, after the plugins' before_execution."""
    import nbformat

    from otter.utils import NBFORMAT_VERSION

    if script:
        with open(submission_path) as f:
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f.read())])
    else:
        nb = nbformat.read(submission_path, as_version=NBFORMAT_VERSION)
    if plugin_collection is not None:
        nb = plugin_collection.before_execution(nb)
    return nb


def make_grade_notebook_in_kernel():
    """A replacement for otter.execute.grade_notebook that is otter's own, run as the student's uid:
    same preprocessing, same execution (nbconvert's ExecutePreprocessor), the tests in the kernel;
    only the log server and the pickle are gone (see INIT_CELL_KERNEL, EXPORT_CELL_KERNEL)."""
    import secrets

    from nbconvert.preprocessors import ExecutePreprocessor
    from traitlets.config import Config

    import otter.execute.preprocessor as otter_preprocessor
    from otter.execute.preprocessor import GradingPreprocessor
    from otter.test_files import GradingResults

    otter_preprocessor.INIT_CELL_SOURCE = INIT_CELL_KERNEL
    otter_preprocessor.EXPORT_CELL_SOURCE = EXPORT_CELL_KERNEL

    def grade_notebook(submission_path, *, tests_glob=None, ignore_errors=True, script=False, cwd=None,
                       test_dir=None, seed=None, seed_variable=None, log=None, variables=None,
                       plugin_collection=None, force_python3_kernel=True):
        nb = read_submission(submission_path, script, plugin_collection)
        # Created by the kernel (the export cell opens it with "x"), in the kernel's own directory:
        # the grader reads it as data and never writes there.
        results_path = os.path.join(os.path.abspath(cwd or "."), f".otter-edge-results-{secrets.token_hex(16)}.json")

        c = Config()
        c.GradingPreprocessor.cwd = cwd
        c.GradingPreprocessor.test_dir = test_dir
        c.GradingPreprocessor.tests_glob = tests_glob or []
        c.GradingPreprocessor.results_path = results_path
        c.GradingPreprocessor.seed = seed
        c.GradingPreprocessor.seed_variable = seed_variable
        c.GradingPreprocessor.otter_log = log
        c.GradingPreprocessor.variables = variables
        c.GradingPreprocessor.force_python3_kernel = True
        c.ExecutePreprocessor.allow_errors = ignore_errors
        gp = GradingPreprocessor(config=c)
        ep = ExecutePreprocessor(config=c)
        try:
            nb, _ = gp.preprocess(nb)
            executed_nb, _ = ep.preprocess(nb)
        finally:
            gp.cleanup()
            kill_student_processes()

        try:
            results = GradingResults(results_from_kernel(results_path, test_dir or "./tests"))
        except Exception as e:  # noqa: BLE001  (otter: an export that failed is a catastrophic error)
            results = GradingResults.without_results(e)
        results.notebook = executed_nb
        if plugin_collection is not None:
            plugin_collection.run("after_grading", results)
        return results

    return grade_notebook


def make_grade_notebook():
    """A replacement for otter.execute.grade_notebook (same arguments, as PythonRunner.run passes
    them): the notebook runs in the student's kernel, the tests and the scoring in the grader."""
    from traitlets.config import Config

    import otter.execute.preprocessor as otter_preprocessor
    from otter.execute.preprocessor import GradingPreprocessor
    from otter.test_files import GradingResults

    otter_preprocessor.INIT_CELL_SOURCE = INIT_CELL_BRIDGE

    def grade_notebook(submission_path, *, tests_glob=None, ignore_errors=True, script=False, cwd=None,
                       test_dir=None, seed=None, seed_variable=None, log=None, variables=None,
                       plugin_collection=None, force_python3_kernel=True):
        kernel_fallbacks.clear()
        # Absolute paths: the tests are read by this process whatever the kernel's directory.
        test_paths = [os.path.abspath(p) for p in (tests_glob or [])]
        if test_dir:
            # otter copied the tests (hidden ones too) into the kernel's directory; only the grader reads them now.
            os.chmod(test_dir, 0o700)
        nb = read_submission(submission_path, script, plugin_collection)
        checks = check_cells(nb)

        c = Config()
        c.GradingPreprocessor.cwd = cwd
        c.GradingPreprocessor.test_dir = os.path.abspath(test_dir) if test_dir else test_dir
        c.GradingPreprocessor.tests_glob = test_paths
        c.GradingPreprocessor.results_path = os.devnull  # otter's export cell is dropped below
        c.GradingPreprocessor.seed = seed
        c.GradingPreprocessor.seed_variable = seed_variable
        c.GradingPreprocessor.otter_log = log
        c.GradingPreprocessor.variables = variables
        c.GradingPreprocessor.force_python3_kernel = True
        gp = GradingPreprocessor(config=c)
        try:
            nb, _ = gp.preprocess(nb)
            nb.cells.pop()  # otter's export cell: it would run the tests in the kernel and pickle them
            executed_nb, test_files = run_notebook(nb, test_paths, checks, ignore_errors, None if seed_variable else seed)
        finally:
            gp.cleanup()
            kill_student_processes()

        results = GradingResults(test_files)
        results.notebook = executed_nb
        if plugin_collection is not None:
            plugin_collection.run("after_grading", results)
        return results

    return grade_notebook


def wait_for_job(marker, max_seconds):
    """Blocks until the runner has handed over a job (MARKER exists), or exits EX_NO_JOB."""
    import time

    deadline = time.monotonic() + max_seconds
    while not os.path.exists(marker):
        if time.monotonic() > deadline:
            print(f"otter-edge grade: no job within {max_seconds:.0f} s", file=sys.stderr)
            sys.exit(EX_NO_JOB)
        time.sleep(WAIT_POLL_SECONDS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-a", "--autograder", required=True)
    parser.add_argument("-o", "--output-dir", required=True)
    parser.add_argument("--wait-for", metavar="MARKER",
                        help="warm start: import everything, then wait until MARKER exists before grading")
    parser.add_argument("--wait-max-seconds", type=float, default=3600.0)
    parser.add_argument("submission")
    args = parser.parse_args()
    # Notebooks only. otter also grades zips, and PythonRunner.run then dill-loads a .OTTER_LOG found
    # in the submission (otter.check.logs.Log.from_file), in the grader, before anything else: code
    # execution from a student's file. A notebook alone cannot put one there in time.
    if os.path.splitext(args.submission)[1] != ".ipynb":
        parser.error("the submission must be a .ipynb notebook")

    check_sandbox()
    grader_environment()
    os.umask(0o022)  # everything the grader writes is readable, never writable, by the student

    def load_grader():
        from otter.run.run_autograder import main as run_autograder_main
        import otter.run.run_autograder.runners.python_runner as python_runner

        patch_kernel_provisioner()
        return run_autograder_main, python_runner

    if not args.wait_for:
        run_autograder_main, python_runner = load_grader()
    else:
        try:
            run_autograder_main, python_runner = load_grader()
            # What grading imports later anyway, loaded now while nobody waits (make_grade_notebook's
            # and the export/scoring path's modules).
            import nbformat  # noqa: F401
            import nbconvert.preprocessors  # noqa: F401
            import otter.execute.preprocessor  # noqa: F401
            import otter.test_files  # noqa: F401
            import otter.nbmeta_config  # noqa: F401
            import traitlets.config  # noqa: F401
            import nbclient  # noqa: F401
            import jupyter_client  # noqa: F401
            # What the tests usually read (the grader's own copies, see bridge_grader): paid here
            # while nobody waits (datascience, with matplotlib, is ~0.8 s at a Table's first decode).
            for module in ("numpy", "pandas", "datascience"):
                safe_import(module)
            wait_for_job(args.wait_for, args.wait_max_seconds)
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, SystemExit) and e.code == EX_NO_JOB:
                raise
            # Whatever goes wrong before the job is here is not the student's: never an exit code
            # the runner could take for a grading failure.
            print(f"otter-edge grade: failed while waiting for the job: {e!r}", file=sys.stderr)
            sys.exit(EX_NO_JOB)

    # otter.run.main's layout (Gradescope's /autograder), with owners and modes that keep the
    # student out: only the submission directory (the kernel's cwd) is writable by the student.
    # Not removed at the end: it is on the container's tmpfs, which goes with the container.
    work_dir = tempfile.mkdtemp(prefix="otter-edge-", dir="/tmp")
    os.chmod(work_dir, 0o711)
    ag_dir = os.path.join(work_dir, "autograder")
    os.mkdir(ag_dir, 0o711)
    for sub, mode in (("source", 0o700), ("results", 0o700), ("submission", 0o1777)):
        os.mkdir(os.path.join(ag_dir, sub))
        os.chmod(os.path.join(ag_dir, sub), mode)
    with open(os.path.join(ag_dir, "submission_metadata.json"), "w") as f:
        json.dump({}, f)
    with zipfile.ZipFile(args.autograder) as z:
        z.extractall(os.path.join(ag_dir, "source"))
    shutil.copy(args.submission, os.path.join(ag_dir, "submission"))

    isolation = job_settings(args.autograder)["isolation"]
    python_runner.grade_notebook = make_grade_notebook() if isolation == "grader" else make_grade_notebook_in_kernel()
    run_autograder_main(ag_dir, logo=False, debug=False, otter_run=True)

    kill_student_processes()  # nothing of the student's outlives grading
    with open(os.path.join(ag_dir, "results", "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    # What otter-edge adds for staff (the runner reads it; Gradescope's format allows other keys):
    # where the tests ran, and which ran in the kernel because the bridge could not carry them.
    results["otter_edge"] = {
        "isolation": isolation,
        "kernel_tests": [{"name": name, "reason": why} for name, why in kernel_fallbacks.items()],
    }
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()

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
    who can write that file or connect to localhost. Here the export cell writes JSON instead,
    the log server is not started, and nothing the kernel produced is ever unpickled.
  * The kernel's JSON only says which test cases passed (and their messages). Test files,
    their cases and their points come from the grader's own copy of the autograder's tests, so
    a kernel can neither invent tests nor change what they are worth.
  * Before results.json is written, every process of the student uid is killed.

Warm start (--wait-for MARKER): the runner may start the container before it has a job, so that
the container start, Python start and the imports below are paid while no student is waiting.
The process checks the sandbox, imports otter, nbconvert and jupyter_client, and then waits (no
student code, no job files yet) until MARKER appears: the runner copies the job's files into
/job with MARKER as the last entry of the same archive, so when it exists the files before it
are complete. Then it grades exactly that one job, as without --wait-for, and exits: a container
never sees a second job. If no job comes within --wait-max-seconds it exits EX_NO_JOB (the
runner retires idle containers long before that; this bounds one left by a runner that died).

What this cannot stop: the tests run inside the student's process (that is otter's design), so
a notebook that patches otter's checker in its own kernel can still claim that every case
passed. See test/hostile.test.ts (tamper-checker).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile

GRADER_UID = 10001
STUDENT_UID = 10002
# CAP_SETGID = 6, CAP_SETUID = 7: what starting the kernel as the student needs; CAP_SETPCAP = 8
# empties the student's bounding set.
SWITCH_CAPS = (1 << 6) | (1 << 7) | (1 << 8)
KERNELS = "/opt/otter-edge/jupyter"
GRADER_HOME = "/home/grader"
HANDOFF_MAX_BYTES = 8 * 1024 * 1024
MESSAGE_MAX_CHARS = 20_000
# Exit code for "this container cannot keep the student apart": the runner treats it as an
# infrastructure failure (never a student's zero). The student cannot cause it: it is checked
# before any student code runs.
EX_SANDBOX = 70
# Exit code for "waited for a job that never came" (--wait-for): never a grade. The runner treats
# it as an infrastructure failure should it ever see it for a job.
EX_NO_JOB = 71
# How often a waiting container looks for its job's marker: a stat() on /job, ~0 CPU, and at most
# this much delay between the hand-over and the start of grading.
WAIT_POLL_SECONDS = 0.005

# The export cell (otter.execute.preprocessor.EXPORT_CELL_SOURCE has the same placeholders):
# runs the tests the notebook did not already check, then writes plain JSON, not a pickle.
EXPORT_CELL_JSON = """\
from otter.execute import Checker
for {tests_loop_var} in {tests_glob_json}:
    Checker.check_if_not_already_checked({tests_loop_var})

import json as _otter_edge_json
with open("{results_path}", "w", encoding="utf-8") as _otter_edge_f:
    _otter_edge_json.dump(
        [{{"name": _tf.name,
          "cases": [{{"name": _r.test_case.name, "passed": _r.passed is True,
                     "message": None if _r.message is None else str(_r.message)}}
                    for _r in _tf.test_case_results]}}
         for _tf in Checker.get_results()],
        _otter_edge_f)
"""


def fail_sandbox(message):
    print(f"otter-edge grade: {message}", file=sys.stderr)
    sys.exit(EX_SANDBOX)


def check_sandbox():
    """Refuse to grade unless the student can really be kept apart."""
    if os.getuid() != GRADER_UID or os.geteuid() != GRADER_UID:
        fail_sandbox(f"expected uid {GRADER_UID}, running as {os.getuid()}/{os.geteuid()}")
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    if status.get("NoNewPrivs", "").strip() != "1":
        fail_sandbox("no_new_privs is off: the container must run with no-new-privileges")
    if int(status["CapAmb"], 16) & SWITCH_CAPS != SWITCH_CAPS:
        fail_sandbox("CAP_SETUID/CAP_SETGID/CAP_SETPCAP missing: the kernel could not run as the student uid")
    st = os.stat(GRADER_HOME)
    if st.st_uid != GRADER_UID or st.st_mode & 0o077:
        fail_sandbox(f"{GRADER_HOME} must be owned by {GRADER_UID} with mode 0700 (a tmpfs with uid=, mode=)")


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


def read_handoff(path):
    with open(path, "rb") as f:
        data = f.read(HANDOFF_MAX_BYTES + 1)
    if len(data) > HANDOFF_MAX_BYTES:
        raise ValueError(f"the notebook's test results exceed {HANDOFF_MAX_BYTES} bytes")
    if not data:
        raise ValueError("the notebook wrote no test results (did the last cell run?)")
    reported = json.loads(data.decode("utf-8"))
    if not isinstance(reported, list):
        raise ValueError("the notebook's test results are not a list")
    by_name = {}
    for entry in reported:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("cases"), list)):
            raise ValueError("malformed test result entry")
        cases = {}
        for case in entry["cases"]:
            if not (isinstance(case, dict) and isinstance(case.get("name"), str)):
                raise ValueError("malformed test case entry")
            message = case.get("message")
            cases[case["name"]] = (case.get("passed") is True, message[:MESSAGE_MAX_CHARS] if isinstance(message, str) else None)
        by_name[entry["name"]] = cases  # a test checked twice: the last check counts, as in otter
    return by_name


def results_from_report(test_paths, reported):
    """otter's GradingResults built from the grader's own test files; the kernel only contributes
    which of their cases passed."""
    from otter.nbmeta_config import NBMetadataConfig
    from otter.test_files import GradingResults, TestCaseResult, create_test_file

    test_files = []
    for path in test_paths:
        tf = create_test_file(path, NBMetadataConfig())
        cases = reported.get(tf.name, {})
        tf.test_case_results = []
        for tc in tf.test_cases:
            passed, message = cases.get(tc.name, (False, "❌ Test case was not run"))
            tf.test_case_results.append(TestCaseResult(test_case=tc, message=message, passed=passed))
        test_files.append(tf)
    return GradingResults(test_files)


def make_grade_notebook(work_dir):
    """A replacement for otter.execute.grade_notebook (same arguments, as PythonRunner.run passes
    them) that keeps the kernel's output out of pickle and the scoring in the grader."""
    import nbformat
    from nbconvert.preprocessors import ExecutePreprocessor
    from traitlets.config import Config

    import otter.execute.preprocessor as otter_preprocessor
    from otter.execute.preprocessor import GradingPreprocessor
    from otter.test_files import GradingResults
    from otter.utils import NBFORMAT_VERSION

    otter_preprocessor.EXPORT_CELL_SOURCE = EXPORT_CELL_JSON

    def grade_notebook(submission_path, *, tests_glob=None, ignore_errors=True, script=False, cwd=None,
                       test_dir=None, seed=None, seed_variable=None, log=None, variables=None,
                       plugin_collection=None, force_python3_kernel=True):
        # Absolute paths: the kernel resolves test paths itself, and may change its directory.
        test_paths = [os.path.abspath(p) for p in (tests_glob or [])]
        if script:
            with open(submission_path) as f:
                nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f.read())])
        else:
            nb = nbformat.read(submission_path, as_version=NBFORMAT_VERSION)
        if plugin_collection is not None:
            nb = plugin_collection.before_execution(nb)

        # The kernel writes its report into this file (it may write, not read or replace it: the
        # directory is the grader's). Its content is the kernel's claim, parsed as data only.
        fd, handoff = tempfile.mkstemp(prefix="results-", suffix=".json", dir=work_dir)
        os.fchmod(fd, 0o622)
        os.close(fd)

        c = Config()
        c.GradingPreprocessor.cwd = cwd
        c.GradingPreprocessor.test_dir = os.path.abspath(test_dir) if test_dir else test_dir
        c.GradingPreprocessor.tests_glob = test_paths
        c.GradingPreprocessor.results_path = handoff
        c.GradingPreprocessor.seed = seed
        c.GradingPreprocessor.seed_variable = seed_variable
        c.GradingPreprocessor.otter_log = log
        c.GradingPreprocessor.variables = variables
        # otter's log server is not started (it unpickles what any local process sends); the
        # kernel's log handler then finds nothing listening on this port and drops its records.
        c.GradingPreprocessor.logging_server_host = "localhost"
        c.GradingPreprocessor.logging_server_port = 9
        c.GradingPreprocessor.force_python3_kernel = True
        c.ExecutePreprocessor.allow_errors = ignore_errors
        # Always the student kernelspec, whatever kernel the notebook's metadata names.
        c.ExecutePreprocessor.kernel_name = "python3"

        gp = GradingPreprocessor(config=c)
        ep = ExecutePreprocessor(config=c)
        try:
            nb, _ = gp.preprocess(nb)
            executed_nb, _ = ep.preprocess(nb)
        finally:
            gp.cleanup()
            kill_student_processes()

        try:
            results = results_from_report(test_paths, read_handoff(handoff))
        except Exception as e:  # otter's own answer to unreadable results: a catastrophic error, score 0
            results = GradingResults.without_results(e)
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

    python_runner.grade_notebook = make_grade_notebook(work_dir)
    run_autograder_main(ag_dir, logo=False, debug=False, otter_run=True)

    kill_student_processes()  # nothing of the student's outlives grading
    shutil.copy(os.path.join(ag_dir, "results", "results.json"), args.output_dir)


if __name__ == "__main__":
    main()

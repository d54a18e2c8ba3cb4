"""The kernel side of the bridge (see bridge_codec for the whole): KernelSide answers the grader's
questions inside the student's kernel. grade.py's init cell puts this directory on the kernel's
sys.path, imports this module and calls install(get_ipython()). It imports bridge_codec only,
never bridge_grader (whose REMOTE_TOKEN the notebook must never see)."""

import importlib
import json
import os
import sys
import types

from bridge_codec import MAX_MESSAGE_CHARS, NUMPY_PRINT_OPTIONS, BridgeError, Codec, NotPlain, _library_name

# The RNGs whose seeding by a test is repeated in the kernel (see grade.py's mirrored_seeds).
SEEDED_MODULES = ("numpy.random", "random")


# What a Remote asks the kernel to compute with the student's object (operator module functions;
# reflected forms pass the test's value first). Comparisons, truth and hashing are not offered: the
# answer would be the object's own claim about itself (see bridge_grader's Remote._refuse).
def _kernel_operators():
    import operator

    binary = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and_", "or_", "xor", "lshift", "rshift")
    unary = ("neg", "pos", "abs", "invert", "index")
    table = {name: getattr(operator, name) for name in binary + unary}
    table.update({"float": float, "int": int, "complex": complex, "round": round})
    return table


KERNEL_OPERATORS = _kernel_operators()


class KernelSide:
    """Answers the grader's questions inside the student's kernel (see grade.py's init cell).
    What it answers is the student's own claim; the grader checks its shape, never trusts it."""

    def __init__(self, namespace):
        self.namespace = namespace
        self.handles = []
        # One handle per object (handles keep their objects alive, so ids stay unique): the grader
        # then holds one Remote per object, and `iter(it) is it` holds as in the kernel.
        self.handle_of = {}
        self.codec = Codec(self._refer, self._resolve)

    def _refer(self, value):
        ref = self.handle_of.get(id(value))
        if ref is None:
            ref = self.handle_of[id(value)] = len(self.handles)
            self.handles.append(value)
        t = type(value)
        data = {"t": "ref", "id": ref, "type": t.__qualname__, "type_module": getattr(t, "__module__", None), "callable": callable(value)}
        if isinstance(value, types.ModuleType):
            data["module"] = value.__name__
        else:
            named = _library_name(value)
            if named:
                data["library"] = list(named)
        return data

    def _resolve(self, data):
        tag = data["t"]
        if tag == "ref":
            return self.handles[data["id"]]
        if tag == "module":
            return importlib.import_module(data["name"])
        if tag == "library":
            obj = importlib.import_module(data["module"])
            for part in data["qualname"].split("."):
                obj = getattr(obj, part)
            return obj
        raise BridgeError(f"unknown tag {tag!r}")

    def handle(self, request_json):
        import contextlib
        import io

        printed = io.StringIO()
        try:
            # What the student's code prints while answering is sent along: the test (a doctest)
            # expects to see it, as it would in the kernel.
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
                reply = self._answer(request_json)
        except BaseException as e:  # noqa: BLE001  (the student's code raised: that is the answer)
            reply = {"error": {"type": type(e).__name__, "message": str(e)[:MAX_MESSAGE_CHARS]}}
        if printed.getvalue():
            reply["stdout"] = printed.getvalue()[:MAX_MESSAGE_CHARS * 256]
        return json.dumps(reply)

    def _answer(self, request_json):
        request = json.loads(request_json)
        op = request["op"]
        if op == "get":
            name = request["name"]
            if name not in self.namespace:
                return {"missing": True}
            value = self.namespace[name]
        elif op == "run_test":
            # The bridge could not carry this test (see grade.py's fallback): it runs here, as
            # plain otter runs it, against the notebook's globals at this point.
            value = self._run_test(request["name"], request["source"])
        elif op == "numpy_printoptions":
            numpy = sys.modules.get("numpy")
            if numpy is None:
                return {"value": self.codec.encode(None)}
            options = numpy.get_printoptions()
            value = {k: options[k] for k in NUMPY_PRINT_OPTIONS if k in options}
        elif op == "seed":
            # A test seeded an RNG: the student's functions draw from the kernel's.
            if request["module"] not in SEEDED_MODULES:
                raise ValueError("not a random module")
            importlib.import_module(request["module"]).seed(*[self.codec.decode(a) for a in request["args"]])
            value = None
        else:
            target = self.handles[request["ref"]]
            if op == "call":
                args = [self.codec.decode(a) for a in request["args"]]
                kwargs = {k: self.codec.decode(v) for k, v in request["kwargs"].items()}
                before = [json.dumps(a, sort_keys=True) for a in request["args"]]
                value = target(*args, **kwargs)
                # Arguments the function changed in place (a list it sorted, a dict it filled):
                # the grader applies the change to the test's own objects.
                changed = {}
                for i, arg in enumerate(args):
                    try:
                        after = self.codec.encode(arg)
                    except NotPlain:
                        continue
                    if json.dumps(after, sort_keys=True) != before[i]:
                        changed[str(i)] = after
                reply = {"value": self.codec.encode(value)}
                if changed:
                    reply["args_after"] = changed
                return reply
            elif op == "getattr":
                value = getattr(target, request["name"])
            elif op == "getitem":
                value = target[self.codec.decode(request["key"])]
            elif op == "len":
                value = len(target)
            elif op == "iter":
                # A handle on the iterator, advanced one item per "next": lazy, as a test that
                # takes the first items of an infinite generator expects.
                value = iter(target)
                return {"value": self._refer(value)}
            elif op == "next":
                value = next(target)
            elif op == "method":
                if request["name"] not in ("__enter__", "__exit__"):
                    raise ValueError("method not offered")
                value = getattr(target, request["name"])(*[self.codec.decode(a) for a in request["args"]])
            elif op == "operator":
                # Arithmetic and numeric conversions on the student's objects, computed by their
                # own methods (what the test would see in the kernel); comparisons are not here.
                name = request["name"]
                if name not in KERNEL_OPERATORS:
                    raise ValueError(f"operator {name!r} is not offered")
                operands = [self.codec.decode(a) for a in request["args"]]
                if request.get("reflected"):
                    value = KERNEL_OPERATORS[name](operands[0], target)
                else:
                    value = KERNEL_OPERATORS[name](target, *operands)
            elif op == "isinstance":
                value = isinstance(self.codec.decode(request["value"]), target)
            elif op == "issubclass":
                value = issubclass(self.codec.decode(request["value"]), target)
            elif op == "repr":
                value = repr(target)
            elif op == "str":
                value = str(target)
            else:
                raise ValueError(f"unknown op {op!r}")
        return {"value": self.codec.encode(value)}


    def _run_test(self, name, source):
        import tempfile

        from otter.nbmeta_config import NBMetadataConfig
        from otter.test_files import create_test_file

        if not isinstance(name, str) or not name.isidentifier() and not name.replace("-", "_").replace(".", "_").isidentifier():
            raise ValueError("bad test name")
        path = os.path.join(tempfile.mkdtemp(), f"{name}.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        tf = create_test_file(path, NBMetadataConfig())
        tf.run(self.namespace)
        return [{"passed": bool(r.passed), "message": None if r.message is None else str(r.message)} for r in tf.test_case_results]


def install(shell):
    """Called by grade.py's init cell in the kernel: the object the grader's requests call."""
    shell.user_ns["__otter_edge__"] = KernelSide(shell.user_ns)

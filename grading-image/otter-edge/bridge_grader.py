"""The grader's side of the bridge (see bridge_codec for the whole): Bridge asks the student's
kernel (bridge_kernel.KernelSide) for what a test reads, Remote stands for a value that stays in the
kernel, and StudentNamespace is the globals a test runs in. Imported by the grader's process only
(grade.py), never by the kernel: REMOTE_TOKEN is made here."""

import __future__
import builtins
import collections
import importlib
import importlib.util
import json
import os
import sys
import types

from bridge_codec import MAX_MESSAGE_CHARS, BridgeError, Codec, NotPlain, _library_name, _module_of

# How much the kernel may send for one answer: past it the value is not data the grader takes (the
# test sees an error, never a partial value).
MAX_ANSWER_CHARS = 256 * 1024 * 1024

# Packages whose functions and classes the grader takes from its own import when a notebook's
# global names one (e.g. `make_array`, `Table`, `np.mean` passed to a student's function). Any
# other callable stays a Remote in the kernel. Modules themselves are re-imported from the
# grader's own site-packages/stdlib whatever their name (see safe_import).
LIBRARY_PACKAGES = frozenset({
    "numpy", "pandas", "datascience", "scipy", "matplotlib", "seaborn", "sklearn", "statsmodels",
    "math", "cmath", "statistics", "random", "collections", "itertools", "functools", "operator",
    "string", "re", "datetime", "decimal", "fractions", "numbers", "textwrap", "calendar", "heapq",
    "bisect", "copy",
})
# Builtins a notebook may hand over by reference (e.g. `f = max`): side-effect-free ones only.
SAFE_BUILTINS = frozenset({
    "abs", "all", "any", "ascii", "bin", "bool", "bytes", "callable", "chr", "complex", "dict", "divmod",
    "enumerate", "filter", "float", "format", "frozenset", "hash", "hex", "int", "isinstance",
    "issubclass", "iter", "len", "list", "map", "max", "min", "next", "oct", "ord", "pow", "range",
    "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "type", "zip",
})


class RemoteError(Exception):
    """An exception raised by the student's code in the kernel, named as the kernel named it."""


def safe_import(name):
    """The grader's own import of module `name`, only from the grader's Python installation (never
    from a directory the student can write): None when there is no such module."""
    if not isinstance(name, str) or not name or name.startswith("."):
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    origin = spec.origin or ""
    roots = tuple(os.path.realpath(p) + os.sep for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    if origin not in ("built-in", "frozen") and not os.path.realpath(origin).startswith(roots):
        return None
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001  (importing fails in the grader: the kernel's module stays remote)
        return None


def library_object(module, qualname):
    """The grader's own copy of a library function or class, if its package is allow-listed."""
    if module == "builtins":
        return getattr(builtins, qualname) if qualname in SAFE_BUILTINS else None
    if module.split(".", 1)[0] not in LIBRARY_PACKAGES:
        return None
    obj = safe_import(module)
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return None
    return obj


_BUILTIN_ERRORS = {name: getattr(builtins, name) for name in dir(builtins)
                   if isinstance(getattr(builtins, name), type) and issubclass(getattr(builtins, name), Exception)}


def remote_exception(error):
    """The student's exception, raised in the grader with the kernel's type name and message, so a
    doctest that expects `ValueError: ...` still matches. Built-in types are used as themselves;
    other names become a new subclass of RemoteError (never an import of the kernel's class)."""
    if type(error) is not dict or type(error.get("type")) is not str or type(error.get("message")) is not str:
        return BridgeError("malformed error from the notebook")
    name, message = error["type"], error["message"][:MAX_MESSAGE_CHARS]
    cls = _BUILTIN_ERRORS.get(name)
    if cls is not None:
        try:
            return cls(message)
        except Exception:  # noqa: BLE001  (an exception type with other constructor arguments)
            pass
    if not name.isidentifier():
        name = "RemoteError"
    return type(name, (RemoteError,), {"__module__": "__main__"})(message)


# Built-in and standard types a handle may have (a generator, a map object, a dict view, ...), by
# (module, qualname) as the kernel names them: a Remote of one of these answers isinstance() for it.
def _builtin_types():
    import collections.abc as abc

    found = {}
    for namespace in (vars(builtins), vars(types), vars(abc), vars(collections)):
        for value in namespace.values():
            if isinstance(value, type):
                found[(value.__module__, value.__qualname__)] = value
    return found


BUILTIN_TYPES = _builtin_types()


class Remote:
    """A value that lives in the student's kernel. Calls, attributes, items, len, iteration (lazy,
    one item per question), next(), arithmetic and numeric conversions, isinstance/issubclass with
    the student's classes, context managers and repr are asked of the kernel; comparisons, hashing,
    truth and `in` are refused, because the answer would be the student's object's claim about
    itself. Every refusal is noted on the bridge (Bridge.limits): grade.py then runs that test in the
    kernel, as plain otter would, rather than fail a student the bridge could not carry."""

    __slots__ = ("_bridge", "_ref", "_type", "_builtin_type")

    def __init__(self, bridge, ref, type_name, builtin_type=None):
        object.__setattr__(self, "_bridge", bridge)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_builtin_type", builtin_type)

    @property
    def __class__(self):
        # isinstance() consults __class__ when type() does not match: a generator (or another
        # built-in type) from the notebook is an instance of the grader's same type.
        return self._builtin_type or Remote

    def __call__(self, *args, **kwargs):
        reply = self._bridge.ask_reply("call", self._ref, args=[self._bridge.encode_for_notebook(a) for a in args],
                                       kwargs={k: self._bridge.encode_for_notebook(v) for k, v in kwargs.items()})
        if type(reply.get("args_after")) is dict:
            for index, data in reply["args_after"].items():
                if type(index) is str and index.isdigit() and int(index) < len(args):
                    self._bridge.update_in_place(args[int(index)], self._bridge.codec.decode(data))
        return self._bridge.value_of(reply)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._bridge.ask("getattr", self._ref, name=name)

    def __setattr__(self, name, value):
        raise TypeError(f"a {self._type} from the notebook cannot be changed by the test")

    def __getitem__(self, key):
        return self._bridge.ask("getitem", self._ref, key=self._bridge.encode_for_notebook(key))

    def __len__(self):
        n = self._bridge.ask("len", self._ref)
        if type(n) is not int or n < 0:
            raise BridgeError("len() from the notebook is not a non-negative int")
        return n

    def __iter__(self):
        iterator = self._bridge.ask("iter", self._ref)
        if not isinstance(iterator, Remote):
            raise BridgeError("iter() from the notebook did not give an iterator")
        return iterator

    def __next__(self):
        return self._bridge.ask("next", self._ref)

    def _operator(self, name, *args, reflected=False):
        return self._bridge.ask("operator", self._ref, name=name, reflected=reflected,
                                args=[self._bridge.encode_for_notebook(a) for a in args])

    def __instancecheck__(self, value):
        answer = self._bridge.ask("isinstance", self._ref, value=self._bridge.encode_for_notebook(value))
        if type(answer) is not bool:
            raise BridgeError("isinstance() from the notebook is not a bool")
        return answer

    def __subclasscheck__(self, value):
        answer = self._bridge.ask("issubclass", self._ref, value=self._bridge.encode_for_notebook(value))
        if type(answer) is not bool:
            raise BridgeError("issubclass() from the notebook is not a bool")
        return answer

    def __enter__(self):
        return self._call_method("__enter__")

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            # The test's exception cannot cross to the kernel as itself: let it propagate, and say so.
            self._bridge.note_limit(f"a `with` block on a {self._type} from the notebook raised")
            return False
        return self._call_method("__exit__", None, None, None)

    def _call_method(self, name, *args):
        return self._bridge.ask("method", self._ref, name=name, args=[self._bridge.encode_for_notebook(a) for a in args])

    def __repr__(self):
        text = self._bridge.ask("repr", self._ref)
        return text if type(text) is str else f"<{self._type} from the notebook>"

    def __str__(self):
        text = self._bridge.ask("str", self._ref)
        return text if type(text) is str else f"<{self._type} from the notebook>"

    def _refuse(self, *_):
        self._bridge.note_limit(f"compares or tests the truth of a {self._type} from the notebook")
        raise TypeError(f"otter-edge: a {self._type} from the notebook cannot be compared or tested for truth by the "
                        "grader; the test must compare plain values (numbers, strings, arrays, tables)")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __hash__ = __contains__ = _refuse


def _binary(name):
    return (lambda self, other: self._operator(name, other),
            lambda self, other: self._operator(name, other, reflected=True))


def _unary(name):
    return lambda self: self._operator(name)


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift", "rshift"):
    _forward, _reflected = _binary(_name + "_" if _name in ("and", "or") else _name)
    setattr(Remote, f"__{_name}__", _forward)
    setattr(Remote, f"__r{_name}__", _reflected)
for _name in ("neg", "pos", "abs", "invert", "index", "float", "int", "complex"):
    setattr(Remote, f"__{_name}__", _unary(_name))
Remote.__round__ = lambda self, *ndigits: self._operator("round", *ndigits)
del _name, _forward, _reflected

# The Remote class's name carries a token made in the grader and never sent to the kernel: when a
# test fails because of a protocol the bridge lacks, Python's own message names the class
# ("'Remote_3fa9…' object is not subscriptable"), and grade.py can tell that from anything the
# notebook could print (see Bridge.carried).
REMOTE_TOKEN = f"Remote_{os.urandom(6).hex()}"
Remote.__name__ = Remote.__qualname__ = REMOTE_TOKEN


class Bridge:
    """The grader's side: asks the kernel through `send(request_json) -> answer_json` (grade.py
    sends it as a Jupyter user expression) and turns answers into grader objects."""

    def __init__(self, send):
        self.send = send
        self.codec = Codec(self._refer, self._resolve)
        self.values = {}
        # One Remote per kernel handle, so that identity (`is`) holds as in the kernel.
        self.remotes = {}
        # Why the bridge could not carry the current check as otter would (see Remote): reset by forget().
        self.limits = []

    def forget(self):
        """Before each check: the notebook's globals may have changed since the last one."""
        self.values = {}
        self.limits = []

    def note_limit(self, reason):
        if reason not in self.limits:
            self.limits.append(reason)

    def carried(self, messages):
        """None when the current check ran as otter would have run it; else why not: a limit the
        bridge noted, or a failing case whose message names the Remote class (a Python protocol the
        bridge does not carry: the token is the grader's, so a notebook cannot print it)."""
        if self.limits:
            return self.limits[0]
        for message in messages:
            if message and REMOTE_TOKEN in message:
                line = next((l for l in message.splitlines() if REMOTE_TOKEN in l), "")
                return "uses a Python protocol the bridge does not carry: " + line.strip().replace(REMOTE_TOKEN, "object from the notebook")[:300]
        return None

    def encode_for_notebook(self, value):
        """A value the test passes to the notebook; a limit (and TypeError) when it cannot cross."""
        try:
            return self.codec.encode(value)
        except NotPlain as e:
            self.note_limit(f"passes a value the bridge cannot send to the notebook ({e})")
            raise TypeError(f"otter-edge: {e}") from None

    def _refer(self, value):
        if isinstance(value, Remote):
            return {"t": "ref", "id": value._ref, "type": value._type}
        if isinstance(value, types.ModuleType):
            return {"t": "module", "name": value.__name__}
        named = _library_name(value)
        if named and library_object(*named) is value:
            return {"t": "library", "module": named[0], "qualname": named[1]}
        raise NotPlain(f"a {type(value).__qualname__} made by the test cannot be passed to the notebook")

    def _resolve(self, data):
        if data["t"] != "ref" or type(data.get("id")) is not int or type(data.get("type")) is not str:
            raise BridgeError(f"unknown value from the notebook: {str(data.get('t'))[:40]!r}")
        if "module" in data:
            module = safe_import(data["module"])
            if module is not None:
                return module
        if type(data.get("library")) is list and len(data["library"]) == 2 and all(type(p) is str for p in data["library"]):
            obj = library_object(*data["library"])
            if obj is not None:
                return obj
        remote = self.remotes.get(data["id"])
        if remote is None:
            builtin = BUILTIN_TYPES.get((data.get("type_module"), data["type"]))
            remote = self.remotes[data["id"]] = Remote(self, data["id"], data["type"][:200], builtin)
        return remote

    def ask(self, op, ref=None, **fields):
        reply = self.ask_reply(op, ref, **fields)
        if reply.get("missing") is True and op == "get":
            raise KeyError(fields.get("name"))
        return self.value_of(reply)

    def ask_reply(self, op, ref=None, **fields):
        """The kernel's whole answer, checked to be an object; what the student's code printed
        while answering is printed here (a doctest compares it), and its exception raised."""
        request = {"op": op, **({} if ref is None else {"ref": ref}), **fields}
        answer = self.send(json.dumps(request))
        if type(answer) is not str or len(answer) > MAX_ANSWER_CHARS:
            raise BridgeError("the notebook's answer is missing or too large")
        try:
            reply = json.loads(answer)
        except ValueError as e:
            raise BridgeError(f"the notebook's answer is not JSON: {e}") from None
        if type(reply) is not dict:
            raise BridgeError("the notebook's answer is not an object")
        if type(reply.get("stdout")) is str:
            sys.stdout.write(reply["stdout"])
        if "error" in reply:
            raise remote_exception(reply["error"])
        return reply

    def value_of(self, reply):
        if "value" not in reply:
            raise BridgeError("the notebook's answer has no value")
        return self.codec.decode(reply["value"])

    def update_in_place(self, target, new):
        """The student's function changed an argument the test passed: the test's own object
        changes the same way (what the test would see in the kernel). A change the bridge cannot
        apply (another type) is noted, so the test runs in the kernel."""
        if type(target) is type(new):
            if isinstance(target, (list, bytearray)):
                target[:] = new
                return
            if isinstance(target, (dict, set)):
                target.clear()
                target.update(new)
                return
            if isinstance(target, collections.deque):
                target.clear()
                target.extend(new)
                return
            if _module_of(target) == "numpy" and getattr(target, "shape", None) == new.shape and target.dtype == new.dtype:
                target[...] = new
                return
        self.note_limit(f"the notebook's function changed a {type(target).__qualname__} argument in place")

    def global_value(self, name):
        """The notebook's global `name` (KeyError when it has none), once per check."""
        if name not in self.values:
            try:
                self.values[name] = (True, self.ask("get", name=name))
            except KeyError:
                self.values[name] = (False, None)
        found, value = self.values[name]
        if not found:
            raise KeyError(name)
        return value


# doctest looks each of these up in a test's globals (to carry `from __future__` flags): never the
# notebook's business, and one round trip to the kernel each, for every test case.
_FUTURE_NAMES = frozenset(__future__.all_feature_names)


class StudentNamespace(dict):
    """The global environment a test runs in: names the test itself sets live here; any other name
    is the notebook's global of that name, fetched through the bridge when first read. doctest
    copies its globals, so `copy` keeps the class; exec looks names up through __missing__ for a
    dict subclass."""

    def __init__(self, bridge, own=()):
        super().__init__(own)
        self.bridge = bridge

    def __missing__(self, name):
        if type(name) is not str or (name.startswith("__") and name.endswith("__")):
            raise KeyError(name)
        return self.bridge.global_value(name)

    def __contains__(self, name):
        if dict.__contains__(self, name):
            return True
        try:
            self[name]
        except KeyError:
            return False
        return True

    def get(self, name, default=None):
        if name in _FUTURE_NAMES and not dict.__contains__(self, name):
            return default
        try:
            return self[name]
        except KeyError:
            return default

    def copy(self):
        return StudentNamespace(self.bridge, dict.items(self))

"""The bridge between the student's kernel and the grader's tests (otter-edge): its data format.

otter 7 runs the autograder's tests inside the student's kernel, so a notebook can rewrite the
checker it is graded by. otter-edge runs the tests in the grader's own process instead (grade.py)
and asks the kernel only for what a test reads from the notebook:

  * the value of a global: sent as data (JSON) when it is plain data (numbers, strings,
    containers, numpy arrays and scalars, pandas frames, datascience Tables) and rebuilt as a
    fresh object of exactly that type in the grader; modules and library functions/classes are
    named, and the grader uses its own (allow-listed) import of them, never the kernel's copy;
  * anything else (the student's functions, classes, objects) stays in the kernel: the grader
    holds a `Remote` handle whose calls, attributes, items, len, iteration and repr are asked of
    the kernel, with plain data going both ways. A Remote refuses to be compared, hashed or
    tested for truth, so an object that claims to equal everything proves nothing.

The kernel never sees a test: only the names the test reads and the arguments it passes to the
student's own functions. Whatever the kernel answers is the student's claim about their own
values, parsed as data only (json, base64, numpy.frombuffer): nothing from the kernel is
unpickled, imported from a path it can write, or executed in the grader.

Three modules, one codec for both sides:
  * bridge_codec (this one): the codec, its limits and exceptions, and what both sides share;
  * bridge_kernel: KernelSide, which the student's kernel imports (installed by grade.py's init
    cell); it imports this module and nothing of the grader's side;
  * bridge_grader: Bridge, Remote and StudentNamespace, imported by the grader's process only
    (grade.py). Its REMOTE_TOKEN must stay out of every module the kernel imports.
"""

import base64
import collections
import datetime
import decimal
import fractions
import math
import types

# How deep a value may nest, and how many items an object array may hold: past either the value is
# not data the other side takes (the test sees an error, never a partial value). An exception's
# message from the notebook is cut at MAX_MESSAGE_CHARS.
MAX_DEPTH = 64
MAX_ITEMS = 10_000_000
MAX_MESSAGE_CHARS = 4000

# numpy's print options a doctest's expected output depends on (`np.True_` or `True`): the
# grader formats as the kernel does. datascience, imported by every data 8 notebook, sets
# legacy="1.13". `formatter` (functions) is left out.
NUMPY_PRINT_OPTIONS = ("precision", "threshold", "edgeitems", "linewidth", "suppress", "nanstr", "infstr", "sign", "floatmode", "legacy")
# pandas extension dtypes rebuilt from their name (pandas 3's default string dtype is "str").
PANDAS_DTYPES = frozenset({
    "str", "string", "boolean", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32",
    "UInt64", "Float32", "Float64",
})

STDLIB_TAGS = frozenset({"Counter", "OrderedDict", "defaultdict", "deque", "date", "time", "datetime", "timedelta",
                         "Decimal", "Fraction"})


class NotPlain(Exception):
    """A value (or part of one) that cannot travel as data."""


class BridgeError(Exception):
    """The kernel's answer is not one the grader accepts."""


# ---------------------------------------------------------------------------------------- codec


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _unb64(text):
    if not isinstance(text, str):
        raise BridgeError("base64 field is not a string")
    return base64.b64decode(text.encode("ascii"), validate=True)


def _module_of(value):
    mod = getattr(type(value), "__module__", "") or ""
    return mod.split(".", 1)[0]


def _plain_dtype(dtype):
    """A numpy dtype whose values are bytes we can rebuild: not object, not structured/void."""
    import numpy as np

    return isinstance(dtype, np.dtype) and dtype.kind in "biufcmMSU" and dtype.fields is None


class Codec:
    """Turns values into JSON-ready data and back. `refer(value)` is asked for any value that is
    not plain data (it returns the data that stands for it, or raises NotPlain); `resolve(data)`
    turns such data back into an object on the receiving side."""

    def __init__(self, refer, resolve):
        self.refer = refer
        self.resolve = resolve
        # Elements of arrays and frame columns: data or nothing, never a reference (one codec, not one per element).
        self.data_only = self if refer is _refuse else Codec(_refuse, resolve)

    # -- encode

    def encode(self, value, depth=0):
        if depth > MAX_DEPTH:
            raise NotPlain("nested too deeply")
        t = type(value)
        if value is None or t is bool or t is str or t is int:
            return value
        if t is float:
            return value if math.isfinite(value) else {"t": "float", "v": repr(value)}
        if t in (list, tuple, set, frozenset):
            items = [self.encode(v, depth + 1) for v in value]
            return {"t": t.__name__, "v": items}
        if t is dict:
            return {"t": "dict", "v": [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in value.items()]}
        if t is complex:
            return {"t": "complex", "v": [self.encode(value.real), self.encode(value.imag)]}
        if t is bytes:
            return {"t": "bytes", "v": _b64(value)}
        if t is range:
            return {"t": "range", "v": [value.start, value.stop, value.step]}
        if value is Ellipsis:  # otter assign's placeholder for an unanswered question
            return {"t": "ellipsis"}
        try:
            return self._encode_library_data(value, depth)
        except NotPlain:
            return self.refer(value)

    def _encode_library_data(self, value, depth):
        top = _module_of(value)
        if top == "numpy":
            return self._encode_numpy(value, depth)
        if top == "pandas":
            return self._encode_pandas(value, depth)
        if top == "datascience" and type(value).__name__ == "Table":
            return {"t": "Table", "labels": [self._exact_str(label) for label in value.labels],
                    "columns": [self._encode_numpy(value.column(i), depth + 1) for i in range(value.num_columns)]}
        return self._encode_stdlib(value, depth)

    def _pairs(self, mapping, depth):
        return [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in mapping.items()]

    def _encode_stdlib(self, value, depth):
        """The standard library's value types that tests compare (exact types only)."""
        t = type(value)
        if t is collections.Counter or t is collections.OrderedDict:
            return {"t": t.__name__, "v": self._pairs(value, depth)}
        if t is collections.defaultdict:
            factory = value.default_factory
            return {"t": "defaultdict", "factory": None if factory is None else self.encode(factory, depth + 1),
                    "v": self._pairs(value, depth)}
        if t is collections.deque:
            return {"t": "deque", "v": [self.encode(v, depth + 1) for v in value], "maxlen": value.maxlen}
        if t in (datetime.date, datetime.time) or (t is datetime.datetime and (value.tzinfo is None or type(value.tzinfo) is datetime.timezone)):
            return {"t": t.__name__, "v": value.isoformat()}
        if t is datetime.timedelta:
            return {"t": "timedelta", "v": [value.days, value.seconds, value.microseconds]}
        if t is decimal.Decimal:
            return {"t": "Decimal", "v": str(value)}
        if t is fractions.Fraction:
            return {"t": "Fraction", "v": [value.numerator, value.denominator]}
        raise NotPlain(t.__qualname__)

    @staticmethod
    def _exact_str(value):
        if type(value) is not str:
            raise NotPlain("label is not a str")
        return value

    def _encode_numpy(self, value, depth):
        import numpy as np

        t = type(value)
        if t is np.ndarray:
            if _plain_dtype(value.dtype):
                return {"t": "ndarray", "dtype": value.dtype.str, "shape": list(value.shape),
                        "v": _b64(np.ascontiguousarray(value).tobytes())}
            if value.dtype.kind == "O":
                if value.size > MAX_ITEMS:
                    raise NotPlain("too many items")
                # Elements must be data themselves: an object array holding student objects stays remote.
                return {"t": "ndarray", "dtype": "O", "shape": list(value.shape),
                        "v": [self._encode_element(v, depth + 1) for v in value.ravel(order="C")]}
            raise NotPlain(f"numpy dtype {value.dtype}")
        if isinstance(value, np.generic) and t.__module__ == "numpy" and _plain_dtype(value.dtype):
            return {"t": "npscalar", "dtype": value.dtype.str, "v": _b64(value.tobytes())}
        raise NotPlain(t.__qualname__)

    def _encode_element(self, value, depth):
        """An element of an array or a frame's column: data or nothing (no remote references)."""
        return self.data_only.encode(value, depth)

    def _encode_pandas(self, value, depth):
        import pandas as pd

        t = type(value)
        if t is pd.RangeIndex:
            return {"t": "RangeIndex", "v": [value.start, value.stop, value.step], "name": self._encode_element(value.name, depth + 1)}
        if t is pd.Index:
            return {"t": "Index", "v": self._encode_column(value, depth + 1), "name": self._encode_element(value.name, depth + 1)}
        if t is pd.Series:
            return {"t": "Series", "v": self._encode_column(value, depth + 1), "index": self._encode_pandas(value.index, depth + 1),
                    "name": self._encode_element(value.name, depth + 1)}
        if t is pd.DataFrame:
            return {"t": "DataFrame", "columns": self._encode_pandas(value.columns, depth + 1),
                    "index": self._encode_pandas(value.index, depth + 1),
                    "v": [self._encode_column(value.iloc[:, i], depth + 1) for i in range(value.shape[1])]}
        if value is pd.NA:
            return {"t": "NA"}
        if value is pd.NaT:
            return {"t": "NaT"}
        raise NotPlain(t.__qualname__)

    def _encode_column(self, column, depth):
        import numpy as np

        dtype = column.dtype
        if isinstance(dtype, np.dtype):
            return {"dtype": None, "v": self._encode_numpy(column.to_numpy(), depth + 1)}
        if str(dtype) in PANDAS_DTYPES:
            values = column.to_numpy(dtype=object)
            return {"dtype": str(dtype), "v": [self._encode_element(v, depth + 1) for v in values]}
        raise NotPlain(f"pandas dtype {dtype}")

    # -- decode

    def decode(self, data, depth=0):
        if depth > MAX_DEPTH:
            raise BridgeError("nested too deeply")
        if data is None or type(data) in (bool, str, int, float):
            return data
        if type(data) is not dict or type(data.get("t")) is not str:
            raise BridgeError(f"not a value: {type(data).__name__}")
        tag, v = data["t"], data.get("v")
        if tag in ("list", "tuple", "set", "frozenset"):
            items = [self.decode(item, depth + 1) for item in self._list(v)]
            return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
        if tag == "dict":
            out = {}
            for pair in self._list(v):
                if type(pair) is not list or len(pair) != 2:
                    raise BridgeError("dict entry is not a pair")
                out[self.decode(pair[0], depth + 1)] = self.decode(pair[1], depth + 1)
            return out
        if tag == "float":
            if v not in ("nan", "inf", "-inf"):
                raise BridgeError("bad float")
            return float(v)
        if tag == "complex":
            parts = self._list(v)
            if len(parts) != 2:
                raise BridgeError("bad complex")
            return complex(*(self._number(self.decode(p, depth + 1)) for p in parts))
        if tag == "bytes":
            return _unb64(v)
        if tag == "ellipsis":
            return Ellipsis
        if tag == "range":
            parts = self._list(v)
            if len(parts) != 3 or any(type(p) is not int for p in parts):
                raise BridgeError("bad range")
            return range(*parts)
        if tag in ("ndarray", "npscalar"):
            return self._decode_numpy(data, depth)
        if tag in ("RangeIndex", "Index", "Series", "DataFrame", "NA", "NaT"):
            return self._decode_pandas(data, depth)
        if tag == "Table":
            return self._decode_table(data, depth)
        if tag in STDLIB_TAGS:
            return self._decode_stdlib(data, depth)
        return self.resolve(data)

    def _decode_pairs(self, v, depth):
        out = []
        for pair in self._list(v):
            if type(pair) is not list or len(pair) != 2:
                raise BridgeError("mapping entry is not a pair")
            out.append((self.decode(pair[0], depth + 1), self.decode(pair[1], depth + 1)))
        return out

    def _decode_stdlib(self, data, depth):
        tag, v = data["t"], data.get("v")
        try:
            if tag == "Counter":
                return collections.Counter(dict(self._decode_pairs(v, depth)))  # Counter(pairs) would count the pairs
            if tag == "OrderedDict":
                return collections.OrderedDict(self._decode_pairs(v, depth))
            if tag == "defaultdict":
                factory = self.decode(data.get("factory"), depth + 1)
                if factory is not None and not callable(factory):
                    raise BridgeError("defaultdict factory is not callable")
                return collections.defaultdict(factory, self._decode_pairs(v, depth))
            if tag == "deque":
                maxlen = data.get("maxlen")
                if maxlen is not None and (type(maxlen) is not int or maxlen < 0):
                    raise BridgeError("bad deque maxlen")
                return collections.deque([self.decode(item, depth + 1) for item in self._list(v)], maxlen)
            if tag in ("date", "time", "datetime"):
                if type(v) is not str or len(v) > 64:
                    raise BridgeError(f"bad {tag}")
                return getattr(datetime, tag).fromisoformat(v)
            if tag == "timedelta":
                parts = self._list(v)
                if len(parts) != 3 or any(type(p) is not int for p in parts):
                    raise BridgeError("bad timedelta")
                return datetime.timedelta(*parts)
            if tag == "Decimal":
                if type(v) is not str or len(v) > 10_000:
                    raise BridgeError("bad Decimal")
                return decimal.Decimal(v)
            if tag == "Fraction":
                parts = self._list(v)
                if len(parts) != 2 or any(type(p) is not int for p in parts):
                    raise BridgeError("bad Fraction")
                return fractions.Fraction(*parts)
        except (ValueError, TypeError, ArithmeticError, OverflowError) as e:
            raise BridgeError(f"bad {tag}: {e}") from None
        raise BridgeError(f"unknown tag {tag!r}")

    @staticmethod
    def _list(v):
        if type(v) is not list:
            raise BridgeError("expected a list")
        return v

    @staticmethod
    def _number(v):
        if type(v) not in (int, float):
            raise BridgeError("expected a number")
        return v

    def _decode_numpy(self, data, depth):
        import numpy as np

        dtype_name = data.get("dtype")
        if not isinstance(dtype_name, str):
            raise BridgeError("bad dtype")
        if data["t"] == "npscalar":
            dtype = np.dtype(dtype_name)
            if not _plain_dtype(dtype):
                raise BridgeError("bad scalar dtype")
            raw = _unb64(data.get("v"))
            if len(raw) != dtype.itemsize:
                raise BridgeError("scalar size does not match its dtype")
            return np.frombuffer(raw, dtype=dtype)[0]
        shape = self._list(data.get("shape"))
        if any(type(n) is not int or n < 0 for n in shape):
            raise BridgeError("bad shape")
        count = math.prod(shape)
        if dtype_name == "O":
            items = self._list(data.get("v"))
            if len(items) != count:
                raise BridgeError("object array size does not match its shape")
            out = np.empty(count, dtype=object)
            for i, item in enumerate(items):
                out[i] = self.decode(item, depth + 1)
            return out.reshape(shape)
        dtype = np.dtype(dtype_name)
        if not _plain_dtype(dtype):
            raise BridgeError("bad array dtype")
        raw = _unb64(data.get("v"))
        if len(raw) != count * dtype.itemsize:
            raise BridgeError("array size does not match its shape")
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

    def _decode_column(self, data, depth):
        import numpy as np
        import pandas as pd

        if type(data) is not dict:
            raise BridgeError("bad column")
        dtype = data.get("dtype")
        if dtype is None:
            values = self.decode(data.get("v"), depth + 1)
            if type(values) is not np.ndarray or values.ndim != 1:
                raise BridgeError("bad column values")
            return values
        if dtype not in PANDAS_DTYPES:
            raise BridgeError("bad column dtype")
        items = [self.decode(item, depth + 1) for item in self._list(data.get("v"))]
        return pd.array(items, dtype=dtype)

    def _decode_pandas(self, data, depth):
        import pandas as pd

        tag = data["t"]
        if tag == "NA":
            return pd.NA
        if tag == "NaT":
            return pd.NaT
        name = self.decode(data.get("name"), depth + 1)
        if tag == "RangeIndex":
            parts = self._list(data.get("v"))
            if len(parts) != 3 or any(type(p) is not int for p in parts):
                raise BridgeError("bad RangeIndex")
            return pd.RangeIndex(*parts, name=name)
        if tag == "Index":
            values = self._decode_column(data.get("v"), depth + 1)
            return pd.Index(values, dtype=values.dtype, name=name, copy=False)
        index = self._decode_pandas(self._index_data(data.get("index")), depth + 1)
        if tag == "Series":
            values = self._decode_column(data.get("v"), depth + 1)
            if len(values) != len(index):
                raise BridgeError("series length does not match its index")
            return pd.Series(values, index=index, dtype=values.dtype, name=name, copy=False)
        columns = self._decode_pandas(self._index_data(data.get("columns")), depth + 1)
        values = [self._decode_column(c, depth + 1) for c in self._list(data.get("v"))]
        if len(values) != len(columns) or any(len(c) != len(index) for c in values):
            raise BridgeError("frame shape does not match its labels")
        # Each column keeps its own dtype: pandas would otherwise infer one (object -> str in pandas 3).
        frame = pd.DataFrame({i: pd.Series(c, index=index, dtype=c.dtype, copy=False) for i, c in enumerate(values)}, index=index)
        frame.columns = columns
        return frame

    @staticmethod
    def _index_data(data):
        if type(data) is not dict or data.get("t") not in ("RangeIndex", "Index"):
            raise BridgeError("bad index")
        return data

    def _decode_table(self, data, depth):
        from datascience import Table

        labels = self._list(data.get("labels"))
        columns = [self._decode_numpy(c, depth + 1) if type(c) is dict and c.get("t") == "ndarray" else None
                   for c in self._list(data.get("columns"))]
        if len(labels) != len(columns) or any(type(label) is not str for label in labels) or any(
                c is None or c.ndim != 1 for c in columns):
            raise BridgeError("bad Table")
        table = Table()
        for label, column in zip(labels, columns):
            table.append_column(label, column)
        return table


def _refuse(value):
    raise NotPlain(type(value).__qualname__)


# ---------------------------------------------------------------------------------------- shared


def _library_name(value):
    """(module, qualname) when `value` is a function or class that an import can find again."""
    if isinstance(value, types.ModuleType):
        return None
    if not (isinstance(value, type) or callable(value)):
        return None
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module == "__main__" or "<" in qualname:
        return None
    return module, qualname

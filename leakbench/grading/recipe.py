"""Does the pipeline's recipe carry learned state? Judged from its pickle, which is never run.

The grader refits ``clone(pipeline)`` (the "recipe") on train_df in a clean worker and requires it
to reproduce the submitted predictions. That proves the pipeline learned from ``fit()`` only if
the recipe itself carries nothing learned: no fitted model and no table of labels or predictions,
whether in an estimator's parameters or in what cloudpickle ships with a function or class the
agent defined (its code constants, closure, defaults, referenced globals, class attributes).

The recipe arrives as ``cloudpickle.dumps(clone(pipeline))`` bytes made in the agent's sandbox
worker. That worker runs the agent's code, so the bytes are whatever the agent wants them to be,
not necessarily what cloudpickle would make. Unpickling them here would call any callable they
name (pickle's REDUCE opcode calls functions: ``os.system``, with the harness's rights), and even
in a worker, a recipe carrying learned state must not get the chance to use it. So the bytes are
read symbolically (:mod:`leakbench.grading.recipe_pickle`): nothing is imported or called, and
the result is a graph of plain values and records of what would be built. That graph is walked
breadth first, each object once, to find fitted estimators, data frames and data.

Data is counted in *values* against ``max_values`` (default 128: below the 200 rows of the
default public test, so a label table for them does not fit, and well above honest recipes, which
carry 0 to about 60). A number or bool is one value; a numpy array counts its elements (at least
one per 8 bytes of buffer); a string counts one per whitespace-separated word of up to 32
characters and one per character of a longer word; a bytes object one per byte; each element of
a list, tuple, set or dict (keys and values) at least one. Values are summed over the whole
recipe, so data cannot hide by being spread out. Not counted: the scalar parameters of
scikit-learn estimators (their options), names up to 64 characters (of modules, classes,
functions, attributes, variables), docstrings that read as text (up to 4096 characters, no word
over 128), numpy dtypes, and the byte code and line tables of code objects (their constants are
counted). Flagged wherever they are: an integer wider than 64 bits, a pandas DataFrame or Series,
an object with fitted attributes (names ending in ``_``), anything that runs code, reads files or
imports (``os``, ``eval``, ``open``...), a change to an imported object, a call of an object the
pickle itself builds.
"""

from __future__ import annotations

import math
import re
from collections import deque

from leakbench.grading.recipe_pickle import CLOUDPICKLE, Node, Refused, read

RECIPE_MAX_BYTES = 1 << 20
RECIPE_MAX_VALUES = 128

_MAX_VISITS = 200_000  # objects the walk looks at; honest recipes have a few thousand
_CLASSES = ("_make_skeleton_class", "_make_skeleton_enum")
_WRAPPERS = ("builtins.staticmethod", "builtins.classmethod", "builtins.property")
_NEW = ("copyreg.__newobj__", "copyreg.__newobj_ex__", "copyreg._reconstructor")
_CTORS = {"__randomstate_ctor": "RandomState", "__generator_ctor": "Generator"}
_FRAMES = {"DataFrame", "Series", "BlockManager", "SingleBlockManager"}
_OPTIONS = (str, int, float, bool, type(None))
_LEARN = "a pipeline must learn from fit(), not carry data"
_BUILD = "a recipe may only build objects"
_CODE = "it can run code or read files, and a recipe may only build objects"
# What a recipe has no reason to use: it runs code, reads files or imports.
_BAD_MODULES = {
    "os", "posix", "nt", "subprocess", "shutil", "socket", "io", "_io", "pathlib", "importlib",
    "runpy", "code", "codeop", "pickle", "_pickle", "marshal", "ctypes", "sys", "urllib", "http",
    "requests", "pty", "signal", "multiprocessing", "threading", "asyncio", "tempfile", "glob",
}  # fmt: skip
_BAD_NAMES = {
    "eval", "exec", "compile", "open", "__import__", "breakpoint", "input", "setattr", "delattr",
    "globals", "locals", "vars", "load", "loads", "fromfile", "loadtxt", "genfromtxt",
}  # fmt: skip
_KINDS = {
    list: "a list", tuple: "a tuple", dict: "a dict", set: "a set", frozenset: "a frozenset",
    str: "a string", bytes: "a bytes object", bytearray: "a bytearray", int: "an integer",
    float: "a float", complex: "a complex number", bool: "a bool",
}  # fmt: skip
_SLOT = re.compile(r"^(class attribute|global|default argument|attribute) '[^']*' of ")
# How the walk treats a value: counted as data; free if a short name or option; free if it reads
# as text (docstrings); a function or code object whose ``where`` is already its label; a code
# object nested in another one's constants.
_DATA, _FREE, _TEXT, _METHOD, _NESTED = range(5)


def inspect_recipe(data: bytes, *, max_values: int = RECIPE_MAX_VALUES) -> list[str]:
    """Reasons the pickled recipe carries learned state or data (empty: clean). Never executes
    anything from ``data``; never raises.

    ``data`` is ``cloudpickle.dumps(clone(pipeline))`` as an untrusted worker made it, at most
    ``RECIPE_MAX_BYTES``. Each reason is one sentence naming what is carried and where (a
    parameter, a closure, a code constant...), so that an honest agent can fix its code. How data
    is counted against ``max_values`` is in the module docstring.
    """
    try:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return [f"the recipe cannot be read: it is a {type(data).__name__}, not bytes"]
        size = memoryview(data).nbytes
        if size > RECIPE_MAX_BYTES:
            return [f"the recipe cannot be read: it is {size} bytes, over {RECIPE_MAX_BYTES}"]
        try:
            root, calls = read(bytes(data))
        except Exception as exc:
            return [f"the recipe cannot be read: {_describe(exc)}"]
        return _Walk(max_values).run(root, calls)
    except Exception as exc:  # a bug here must refuse the recipe, not crash the grader
        return [f"the recipe cannot be inspected: {_describe(exc)}"]


class _Walk:
    """One breadth-first pass over what ``read`` returns, each container and node once (by
    identity), carrying for each value where it is (``where``) and how it counts (mode)."""

    def __init__(self, max_values: int):
        self.max_values, self.reasons, self.carriers = max_values, [], {}
        self.docs, self.todo, self.visits = set(), deque(), 0
        self.seen: dict[int, object] = {}  # by id; holding each object keeps its id unique

    def run(self, root, calls) -> list[str]:
        self.push(root, "")
        self.drain()
        # A call whose result the recipe does not reach still runs while it loads, and can hand
        # data to objects it does reach (setattr, dict.update): inspect those calls too.
        for call in calls:
            self.push(call, "a call made while the recipe loads")
        self.drain()
        top = sorted((c for c in self.carriers.values() if c[0]), key=lambda c: -c[0])[:3]
        total = sum(c[0] for c in self.carriers.values())
        if total > self.max_values:
            if top[0][0] > self.max_values:
                text = "{} data values in {} ({})".format(*top[0])
                text += f" and {total - top[0][0]} elsewhere" if total > top[0][0] else ""
            else:
                text = f"{total} data values, the most " + ", ".join(
                    "{} in {} ({})".format(*c) for c in top
                )
            self.flag(f"the recipe carries {text}", f"at most {self.max_values} allowed", _LEARN)
        return list(dict.fromkeys(self.reasons))

    def mark(self, *objects) -> None:
        for obj in objects:
            self.seen[id(obj)] = obj

    def flag(self, what: str, where: str, rule: str) -> None:
        self.reasons.append(f"{what} ({where or 'the recipe itself'}); {rule}")

    def push(self, obj, where, mode=_DATA, carrier=None):
        self.todo.append((obj, where[:300], mode, carrier))  # deep nesting: keep labels short

    def carrier(self, kind, where) -> list:
        """The running count of data values of this kind in this place: [count, kind, where]."""
        return self.carriers.setdefault((kind, where), [0, kind, where or "the recipe itself"])

    def drain(self):
        while self.todo:
            self.visits += 1
            if self.visits > _MAX_VISITS:
                self.reasons.append(f"the recipe cannot be read: it has over {_MAX_VISITS} objects")
                return self.todo.clear()
            obj, where, mode, carrier = self.todo.popleft()
            if not isinstance(obj, (list, tuple, dict, set, frozenset, Node)):
                self.scalar(obj, where, mode, carrier)
            elif id(obj) not in self.seen:
                self.mark(obj)
                if isinstance(obj, Node):
                    self.node(obj, where, mode, carrier)
                    continue
                carrier = carrier or self.carrier(_KINDS[type(obj)], where)
                for item in [*obj.keys(), *obj.values()] if type(obj) is dict else obj:
                    self.push(item, where, _DATA, carrier)

    def scalar(self, x, where, mode, carrier):
        if type(x) is int and x.bit_length() > 64:
            return self.flag(f"the recipe carries a {x.bit_length()}-bit integer", where, _LEARN)
        if type(x) in (str, bytes, bytearray) and len(x) > 64:
            if id(x) in self.seen:  # a long string shared through the memo is judged once
                return
            self.mark(x)
        if mode != _DATA and _is_free(x, mode):
            return
        values = _values(x)
        if carrier is not None:
            carrier[0] += max(values, 1)
        elif values and type(x) in (str, bytes, bytearray):
            self.carrier(_KINDS[type(x)], where)[0] += values
        elif values:  # numbers in many slots add up: name the namespace, not each slot
            self.carrier("numbers", _SLOT.sub(r"\1s of ", where))[0] += 1

    def node(self, n, where, mode, carrier):
        dotted, func, fq = _dotted(n), n.func, _qualname(n.func)
        if dotted and not _is(func, "subimport"):  # a bare module import is fine
            module, _, attr = dotted.rpartition(".")
            if module.split(".")[0] in _BAD_MODULES or attr in _BAD_NAMES:
                self.flag(f"the recipe uses {dotted}", where, _CODE)
        if func is None or _is(func, "subimport", "_builtin_type", "_make_empty_cell"):
            if n.states or n.items:  # BUILD or SETITEMS on an imported object changes it
                self.flag(f"the recipe modifies {dotted or fq}", "while loading", _BUILD)
                for part in (n.states, n.items):
                    self.push(part, f"a change to {dotted or fq}")
            return
        if fq == "builtins.getattr" and (len(n.args) != 2 or type(n.args[1]) is not str):
            self.flag("the recipe computes an attribute name while loading", where, _BUILD)
        if func.func is not None and not fq and not _is(func.func, *_CLASSES):
            self.flag("the recipe calls an object it builds while loading", where, _BUILD)
        for extra in (n.kwargs, n.items):
            if extra:
                self.push(extra, f"arguments of {where or 'the recipe'}")
        module, name = fq.rpartition(".")[::2]
        if _is(func, "_make_function") and len(n.args) == 5:
            return self.function(n, where, mode)
        if _is(func, *_CLASSES):
            return self.klass(n)
        if module.split(".")[0] == "numpy" and self.numpy(n, name, where, carrier):
            return
        if fq == "types.CodeType":
            self.code(n, where, mode)
        elif _is(func, "_make_cell") or fq in (*_WRAPPERS, "builtins.getattr"):
            for arg in n.args:
                self.push(arg, where, mode)
        elif _is(func, "dynamic_subimport") and len(n.args) == 2:
            self.fields(n.args[1], lambda k: f"global '{k}' of module {_name(n.args[0])}")
        else:
            return self.instance(n, fq, where)
        for state in n.states:  # state given to a code object, cell or module: data
            self.push(state, f"state of {where or 'the recipe'}")

    def fields(self, d, where, mode=_DATA):
        """The entries of a namespace (attributes, globals, class dict): names are not data."""
        if type(d) is not dict:
            return self.push(d, where("?"), mode)
        self.mark(d)
        for key, value in d.items():
            self.push(key, where("?"), _FREE)
            self.push(value, where(_name(key)), mode)

    def function(self, n, where, mode):
        """cloudpickle's ``_make_function(code, globals, name, defaults, closure)``, then
        ``_function_setstate`` with (``__dict__``, slots: closure, globals, defaults, doc...)."""
        code, base, name, argdefs, closure = n.args
        state, slots = {}, {}
        for s in n.states:
            if type(s) is tuple and len(s) == 2 and type(s[0]) is dict and type(s[1]) is dict:
                state.update(s[0])
                slots.update(s[1])
            else:
                self.push(s, where)
        name = slots.get("__name__", name if type(name) is str else _code_name(code))
        label = f"function '{_name(name)}'" + f" in {where}" * bool(where)
        label = where if mode == _METHOD else label
        if type(slots.get("__doc__")) is str:
            self.docs.add(slots["__doc__"])
        for arg, mode_ in ((code, _METHOD), (name, _TEXT), (closure, _FREE)):
            self.push(arg, label, mode_)
        self.push(argdefs, f"default argument of {label}")
        self.fields(base, lambda k: label, _TEXT)  # __name__, __file__...
        self.fields(state, lambda k: f"attribute '{k}' of {label}")
        for key, value in slots.items():
            if key == "__globals__":
                self.fields(value, lambda k: f"global '{k}' of {label}")
            elif key in ("__closure__", "__defaults__") and type(value) is tuple:
                self.mark(value)
                place = "closure" if key == "__closure__" else "default argument"
                for item in value:
                    self.push(item, f"{place} of {label}")
            elif key == "__kwdefaults__":
                self.fields(value, lambda k: f"default argument of {label}")
            elif key in ("__doc__", "__name__", "__qualname__", "__module__"):
                self.push(value, label, _TEXT)
            else:
                self.push(value, f"attribute '{_name(key)}' of {label}")

    def klass(self, n):
        """``_make_skeleton_class(type, name, bases, kwargs, id, extra)`` (or ``_enum``), then
        ``_class_setstate`` with (class dict, slots)."""
        a, enum = n.args, n.func.name == "_make_skeleton_enum"
        cname = _name(a[1]) if len(a) > 1 else "?"
        for i, arg in enumerate(a):
            if enum and i == 3:
                self.push(arg, f"members of enum {cname}")
            else:
                self.fields(arg, lambda k: f"definition of class {cname}", _TEXT)
        for state in n.states:
            if not (type(state) is tuple and len(state) == 2 and type(state[0]) is dict):
                self.push(state, f"class {cname}")
                continue
            self.mark(state, state[0])
            self.push(state[1], f"class {cname}")
            for key, value in state[0].items():
                attr = f"'{_name(key)}' of class {cname}"
                self.push(key, attr, _FREE)
                if key == "__doc__" and type(value) is str:
                    self.docs.add(value)
                    self.push(value, attr, _TEXT)
                elif key in ("__module__", "__qualname__") or _is_method(value):
                    self.push(value, attr, _METHOD)
                else:
                    self.push(value, f"class attribute {attr}")

    def code(self, n, where, mode):
        """``CodeType(argcount, ..., code, consts, names, varnames, filename, name, ...)``."""
        a = n.args
        if len(a) not in (16, 18):  # not a layout CPython 3.8-3.13 takes: count it all
            return self.push(a, f"code in {where}")
        label = where if mode == _METHOD else f"'{_name(a[11])}' in {where}"
        for i, arg in enumerate(a):
            if i == 7 or type(arg) is bytes:  # byte code and line tables are code, not data
                continue
            for item in arg if type(arg) is tuple else (arg,):  # names of variables, cells...
                self.push(item, label, _FREE if type(arg) is tuple else _TEXT)
        if type(a[7]) is not tuple:
            return self.push(a[7], f"code constant of {label}")
        self.mark(a[7])
        for i, const in enumerate(a[7]):
            if i == 0 and type(const) is str and const in self.docs:
                self.push(const, label, _TEXT)
            elif isinstance(const, Node) and _qualname(const.func) == "types.CodeType":
                self.push(const, label, _NESTED)
            else:
                self.push(const, f"code constant of {label}")

    def numpy(self, n, name, where, carrier) -> bool:
        """Arrays count their elements, a dtype is structure; False: not a layout numpy makes."""
        a, raws, rest = n.args, [], [x for x in n.args if isinstance(x, Node)]
        if name == "_frombuffer" and len(a) == 4:  # (buffer, dtype, shape, order)
            raws, rest = [(a[0], a[2])], [a[1], a[3]]
        elif name == "scalar" and len(a) == 2:  # (dtype, bytes)
            raws, rest = [(a[1], (1,))], [a[0]]
        elif name == "dtype":
            rest = list(a)
        elif name != "_reconstruct":
            return False
        for state in n.states:  # ndarray.__setstate__ replaces the data: count every state
            if name == "dtype" and type(state) is tuple:
                rest += state
            elif type(state) is tuple and len(state) == 5:  # (version, shape, dtype, F, data)
                raws.append((state[4], state[1]))
                rest += state[:4]
            else:
                self.push(state, where)
        for item in rest:
            self.push(item, where, _FREE)
        for raw, shape in raws:
            carrier = carrier or self.carrier("a numpy array", where)
            if type(raw) is bytes or type(raw) is bytearray:
                carrier[0] += max(_size(shape), -(-len(raw) // 8), 1)
            else:  # an object array: its elements, as a list
                self.push(raw, where, _DATA, carrier)
        return True

    def instance(self, n, fq, where):
        """An object built by calling a class (or a function): its class, state and arguments."""
        cls, args = (n.args[0], n.args[1:]) if fq in _NEW and n.args else (n.func, n.args)
        module = cls.module if isinstance(cls, Node) else ""
        if isinstance(cls, Node) and _is(cls.func, *_CLASSES):
            cname = _name(cls.args[1]) if len(cls.args) > 1 else "?"
        else:
            cname = cls.name.rpartition(".")[2] if isinstance(cls, Node) and cls.name else "?"
            cname = fq[6:] if fq.startswith("types.") else _CTORS.get(cname, _name(cname))
        if module.split(".")[0] == "pandas" and cname in _FRAMES:
            self.swallow(n)
            return self.flag(
                f"the recipe carries a pandas {cname}", where, "a recipe must not carry data "
                "frames: a pipeline gets its data in fit() and predict()"
            )  # fmt: skip
        self.push(cls, f"called while loading {where}".strip(), _FREE)
        namespaces = []
        for state in n.states:
            parts = state if type(state) is tuple and len(state) == 2 else (state,)
            if all(type(p) is dict or p is None for p in parts):
                namespaces += [p for p in parts if p]
            else:
                self.push(state, f"state of {cname}")
        fitted = sorted({k for d in namespaces for k in d if _is_learned(k)})
        if fitted:
            self.swallow(n)
            return self.reasons.append(
                f"a fitted {cname} is carried in the recipe ({where or 'the recipe itself'}): it "
                f"has learned attributes ({', '.join(map(_name, fitted[:4]))}), so it was fitted "
                "outside the pipeline's fit()"
            )
        sklearn = module.split(".")[0] == "sklearn"
        for d in namespaces:
            self.mark(d)
            for key, value in d.items():
                option = sklearn and type(key) is str and type(value) in _OPTIONS
                self.push(key, where, _FREE)
                self.push(value, f"{cname}.{_name(key)}", _FREE if option else _DATA)
        if args:
            self.push(args, f"arguments of {cname}")

    def swallow(self, n):
        """Mark all a flagged object holds as seen: one reason for it, not one per part."""
        todo = [n.func, n.args, n.kwargs, n.states, n.items]
        while todo and self.visits < _MAX_VISITS:
            x = todo.pop()
            if isinstance(x, (list, tuple, dict, set, frozenset, Node)) and id(x) not in self.seen:
                self.mark(x)
                self.visits += 1
                if isinstance(x, Node):
                    todo += [x.func, x.args, x.kwargs, x.states, x.items]
                else:
                    todo += [*x.keys(), *x.values()] if type(x) is dict else x


def _is(node, *names) -> bool:
    """Is ``node`` one of cloudpickle's own helpers called ``names``?"""
    return isinstance(node, Node) and node.module in CLOUDPICKLE and node.name in names


def _qualname(func) -> str:
    """``module.name`` of a global; ``types.X`` for cloudpickle's ``_builtin_type('X')``."""
    if isinstance(func, Node) and func.func is None:
        return f"{func.module}.{func.name}"
    if isinstance(func, Node) and _is(func.func, "_builtin_type") and func.args:
        return f"types.{_name(func.args[0])}"
    return ""


def _dotted(x) -> str:
    """The dotted name ``x`` is looked up by: a global, a module, ``getattr`` chains of them."""
    attrs: list[str] = []
    for _ in range(16):
        if isinstance(x, Node) and x.func is None:
            return ".".join([x.module, x.name, *attrs[::-1]])
        if isinstance(x, Node) and _is(x.func, "subimport") and x.args:
            return ".".join([_name(x.args[0]), *attrs[::-1]])
        if not isinstance(x, Node) or _qualname(x.func) != "builtins.getattr" or len(x.args) != 2:
            return ""
        attrs.append(_name(x.args[1]))
        x = x.args[0]
    return ""


def _is_method(value) -> bool:
    """A function, or a staticmethod, classmethod or property wrapping functions."""
    fq = _qualname(value.func) if isinstance(value, Node) else ""
    return isinstance(value, Node) and (_is(value.func, "_make_function") or fq in _WRAPPERS)


def _is_learned(key) -> bool:
    """scikit-learn's convention for what ``fit()`` learns: ``coef_``, ``classes_``..."""
    dunder = type(key) is str and key.startswith("__") and key.endswith("__")
    return type(key) is str and key.endswith("_") and not dunder


def _values(x) -> int:
    """Data values in one scalar (see the module docstring)."""
    if type(x) is str:
        return sum(1 if len(word) <= 32 else len(word) for word in x.split())
    if type(x) is bytes or type(x) is bytearray:
        return len(x)
    return 0 if x is None else 1


def _is_free(x, mode) -> bool:
    """A name or option (``_FREE``), or a docstring that reads as text: not data."""
    if type(x) is str and mode in (_TEXT, _METHOD):
        return len(x) <= 4096 and all(len(word) <= 128 for word in x.split())
    return len(x) <= 64 if type(x) is str else type(x) not in (bytes, bytearray)


def _size(shape) -> int:
    ok = type(shape) is tuple and len(shape) <= 64 and all(type(d) is int for d in shape)
    return math.prod(shape) if ok and all(d >= 0 for d in shape) else 0


def _name(x) -> str:
    return x[:64] if type(x) is str else "?"


def _code_name(code) -> str:
    ok = isinstance(code, Node) and len(code.args) in (16, 18)
    return code.args[11] if ok and type(code.args[11]) is str else "?"


def _describe(exc: Exception) -> str:
    try:
        text = str(exc) if isinstance(exc, Refused) else f"{type(exc).__name__}: {exc}"
    except Exception:
        text = type(exc).__name__
    return text[:200]

"""Reading a pickle symbolically: what it would import, build and call, with nothing run.

Used by :mod:`leakbench.grading.recipe` on recipes made by an untrusted worker. The opcodes are
decoded by :func:`pickletools.genops` and run on a stack of plain values (numbers, strings, bytes,
lists, tuples, dicts, sets) and :class:`Node` records. A global becomes a ``Node`` that only names
it: nothing is imported. A call (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ) becomes a ``Node`` that
records what would be called with which arguments; BUILD, APPEND(S), SETITEM(S) and ADDITEMS on a
``Node`` are recorded on it. So no code from the pickle, and no method of any object it names, can
run here. A dict key or set item is size-checked before it is hashed, since hashing nested tuples
recurses in C and a DAG of shared tuples hashes in exponential time. Persistent ids, extension
codes and out-of-band buffers are refused: a recipe never needs them.
"""

from __future__ import annotations

import pickletools

MAX_OPS = 100_000  # a recipe of 7 kB has 1,500 opcodes
_MAX_KEY_ITEMS = 1_000  # elements in one dict key or set item, nested ones included
_KEY_BUDGET = 1_000_000  # the same, summed over the pickle
CLOUDPICKLE = ("cloudpickle.cloudpickle", "cloudpickle.cloudpickle_fast", "cloudpickle")
_SETTERS = ("_function_setstate", "_class_setstate")
_VALUES = {"int_or_bool", "int", "bytes_or_str", "bytes", "bytearray", "str", "float"}
_CONSTANTS = {
    o.name for o in pickletools.opcodes if o.arg and {s.name for s in o.stack_after} & _VALUES
}
_EMPTY = {"EMPTY_LIST": list, "EMPTY_TUPLE": tuple, "EMPTY_DICT": dict, "EMPTY_SET": set}
_SINGLETONS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_MARKED = {"TUPLE", "LIST", "DICT", "FROZENSET", "APPENDS", "SETITEMS", "ADDITEMS", "OBJ", "INST"}
_REFUSED = {"PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"}


class Refused(Exception):
    """The pickle uses a feature a recipe never needs, or exceeds a limit."""


class Node:
    """An object the pickle would look up (``func`` is None: the global ``module.name``) or build
    (``func`` called with ``args`` and ``kwargs``; ``new``: through ``cls.__new__``), with the
    states (BUILD) and items (APPEND, SETITEM: keys and values in turn) it would then be given.
    Only ever recorded: it has no behaviour, and hashes by identity."""

    __slots__ = ("args", "func", "items", "kwargs", "module", "name", "new", "states")

    def __init__(self, func=None, args=(), kwargs=None, new=False, module="", name=""):
        self.func, self.args, self.kwargs, self.new = func, args, kwargs, new
        self.module, self.name, self.states, self.items = module, name, [], []


def _check_keys(keys, budget: list[int]) -> None:
    """Refuse keys whose hashing would recurse deeply in C or take long: a tuple hashes all it
    holds, a shared tuple as often as it is referenced, and nothing caches tuple hashes."""
    for key in keys:
        todo, count = [key], 0
        while todo:
            item = todo.pop()
            if type(item) is tuple or type(item) is frozenset:
                count += len(item)
                budget[0] -= len(item)
                if count > _MAX_KEY_ITEMS or budget[0] < 0:
                    raise Refused("its dict keys or set items are too large")
                todo.extend(item)


def read(data: bytes) -> tuple[object, list[Node]]:
    """The object ``data`` describes, as plain values and ``Node`` records, and every call it
    makes and every imported object it changes, reachable from that object or not (a call whose
    result is dropped still runs). Raises on a malformed pickle."""
    stack: list = []
    marks: list[list] = []
    memo: dict = {}
    names: dict[tuple[str, str], Node] = {}
    calls: list[Node] = []
    budget = [_KEY_BUDGET]

    def lookup(module, name) -> Node:
        if type(module) is not str or type(name) is not str:
            raise Refused("a global's name is not a string")
        return names.setdefault((module, name), Node(module=module, name=name))

    def target(obj) -> Node:
        if not isinstance(obj, Node):
            raise Refused(f"it sets state or items on a {type(obj).__name__}")
        if obj.func is None:
            calls.append(obj)  # a change to an imported object
        return obj

    def call(func, args, kwargs=None, new=False) -> Node:
        if not isinstance(func, Node):
            raise Refused(f"it calls a {type(func).__name__}")
        if type(args) is not tuple or not (kwargs is None or type(kwargs) is dict):
            raise Refused("a call's arguments are not a tuple")
        if func.func is None and func.module in CLOUDPICKLE and func.name in _SETTERS:
            # cloudpickle's state setter for a function or class: record the state on it, so
            # the walk knows whose closure, globals or class dict it is
            if len(args) != 2:
                raise Refused(f"{func.name} is misused")
            target(args[0]).states.append(args[1])
            return args[0]
        calls.append(Node(func, args, kwargs, new))
        return calls[-1]

    def add(container, items, kind) -> None:
        if kind is dict and len(items) % 2:
            raise Refused("a dict has an odd number of items")
        if type(container) is list and kind is list:
            container.extend(items)
        elif type(container) is dict and kind is dict:
            _check_keys(items[::2], budget)
            container.update(zip(items[::2], items[1::2], strict=True))
        elif type(container) is set and kind is set:
            _check_keys(items, budget)
            container.update(items)
        else:
            target(container).items.extend(items)

    for count, (op, arg, _) in enumerate(pickletools.genops(data)):
        name = op.name
        if count >= MAX_OPS:
            raise Refused(f"it has more than {MAX_OPS} opcodes")
        if name in _CONSTANTS:
            stack.append(arg)
        elif name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):  # the most frequent first
            memo[len(memo) if arg is None else arg] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo[arg])
        elif name in _EMPTY:
            stack.append(_EMPTY[name]())
        elif name in _SINGLETONS:
            stack.append(_SINGLETONS[name])
        elif name == "MARK":
            marks.append(stack)
            stack = []
        elif name in _MARKED or name == "POP_MARK" or (name == "POP" and not stack):
            items, stack = stack, marks.pop()
            if name == "TUPLE":
                stack.append(tuple(items))
            elif name == "LIST":
                stack.append(items)
            elif name == "DICT":
                stack.append({})
                add(stack[-1], items, dict)
            elif name == "FROZENSET":
                _check_keys(items, budget)
                stack.append(frozenset(items))
            elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                add(stack[-1], items, {"APPENDS": list, "SETITEMS": dict}.get(name, set))
            elif name == "OBJ":
                stack.append(call(items[0], tuple(items[1:]), new=True))
            elif name == "INST":
                stack.append(call(lookup(*arg.split(" ", 1)), tuple(items), new=True))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            size = int(name[-1])
            if len(stack) < size:
                raise Refused(f"{name} on a short stack")
            stack[-size:] = [tuple(stack[-size:])]
        elif name in ("APPEND", "SETITEM"):
            items = [stack.pop()] if name == "APPEND" else [stack.pop(-2), stack.pop()]
            add(stack[-1], items, list if name == "APPEND" else dict)
        elif name == "BUILD":
            state = stack.pop()
            target(stack[-1]).states.append(state)
        elif name in ("REDUCE", "NEWOBJ"):
            args = stack.pop()
            stack[-1] = call(stack[-1], args, new=name == "NEWOBJ")
        elif name == "NEWOBJ_EX":
            kwargs, args = stack.pop(), stack.pop()
            stack[-1] = call(stack[-1], args, kwargs, True)
        elif name == "GLOBAL":
            stack.append(lookup(*arg.split(" ", 1)))
        elif name == "STACK_GLOBAL":
            stack.append(lookup(stack.pop(-2), stack.pop()))
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "POP":
            stack.pop()
        elif name == "STOP":
            return stack.pop(), calls
        elif name in _REFUSED:
            raise Refused("it uses persistent ids, extension codes or out-of-band buffers")
        elif name not in ("PROTO", "FRAME"):
            raise Refused(f"unknown opcode {name}")
    raise Refused("it ends before its STOP opcode")

"""The keys table of docs/settings.md, generated from the settings model.

One row per dotted key (type, built-in default in TOML syntax, what the presets set instead,
description) and one header row per section, walked from ``Settings.model_fields``. The
descriptions live in the model (``Field(description=...)`` and the section docstrings), so the
page cannot drift from the code: ``python -m leakbench.settings_reference`` rewrites the table
between the page's two marker comments, and ``--check`` fails when the committed page is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import tomli_w
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from leakbench.errors import LeakbenchError
from leakbench.settings import Settings, SettingsSources, preset_names, resolve
from leakbench.store.files import write_atomic

BEGIN = "<!-- settings-reference:begin -->"
END = "<!-- settings-reference:end -->"
COMMAND = "python -m leakbench.settings_reference"
DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
# A dict-valued section such as ``pricing`` is documented once, under this placeholder.
PLACEHOLDERS = {"pricing": "<model>"}

_HEADER = (
    "| key | type | built-in default | presets that differ | description |\n|---|---|---|---|---|"
)
_NOTICE = f"<!-- generated from leakbench/settings.py by `{COMMAND}`: edit the model, not this -->"
_MISSING: Any = PydanticUndefined
# The model's docstrings cite a design spec that is not among the docs; the page leaves it out.
_SPEC_REF = re.compile(r"\s*\(SPEC §[^)]*\)")
_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


@dataclass(frozen=True)
class Row:
    """One line of the table: a dotted key, or a section (``header``) shown as ``[key]``."""

    key: str
    type: str
    default: str
    presets: str
    description: str
    header: bool = False

    def markdown(self) -> str:
        key = f"**`[{self.key}]`**" if self.header else f"`{self.key}`"
        cells = (key, self.type, self.default, self.presets, self.description)
        return "| " + " | ".join(cells) + " |"


def reference_markdown() -> str:
    """The keys table as markdown: a header row per section, then a row per key."""
    return "\n".join([_HEADER, *(row.markdown() for row in reference_rows())]) + "\n"


def reference_rows() -> list[Row]:
    """Every section and key of ``Settings``: in each section its keys, then its sections."""
    presets = {name: resolve(SettingsSources(preset=name, environ={})) for name in preset_names()}
    return list(_walk(Settings, "", Settings(), presets))


def _walk(
    model: type[BaseModel], prefix: str, builtin: Any, presets: dict[str, Any]
) -> Iterator[Row]:
    # Keys first, then sub-sections, as in a TOML file, where a key after [a.b] would be in it.
    tables_last = sorted(model.model_fields.items(), key=lambda item: _is_table(item[1]))
    for name, info in tables_last:
        key = f"{prefix}{name}"
        default = _value(builtin, name, info)
        in_presets = {p: _value(value, name, None) for p, value in presets.items()}
        differ = {p: v for p, v in in_presets.items() if v is not _MISSING and v != default}
        section, entry = _section(info.annotation), _dict_section(info.annotation)
        if section is not None:
            # An optional section is set or not; the keys of a set one carry their own notes.
            sets = {p: "set" for p in differ if default is None}
            notes = _preset_notes(sets, len(presets))
            yield _section_row(key, section, info, optional=default is None, presets=notes)
            yield from _walk(section, f"{key}.", default, in_presets)
        elif entry is not None:
            key = f"{key}.{PLACEHOLDERS[name]}"
            notes = _preset_notes({p: "other tables" for p in differ}, len(presets))
            yield _section_row(key, entry, info, optional=True, presets=notes)
            yield from _entries(f"{key}.", entry, default)
        else:
            yield Row(
                key=key,
                type=_type(info.annotation) + _bounds(info),
                default=_default(default),
                presets=_preset_notes(
                    {p: f"`{_toml(v)}`" for p, v in differ.items()}, len(presets)
                ),
                description=_markdown(info.description or ""),
            )


def _is_table(info: FieldInfo) -> bool:
    return _section(info.annotation) is not None or _dict_section(info.annotation) is not None


def _value(parent: Any, name: str, info: FieldInfo | None) -> Any:
    """The field's value in ``parent``; its own default where the section is unset."""
    if parent is not None and parent is not _MISSING:
        return getattr(parent, name)
    if info is None:
        return _MISSING
    return info.get_default(call_default_factory=True)


def _section_row(
    key: str, section: type[BaseModel], info: FieldInfo, *, optional: bool, presets: str
) -> Row:
    summary = (section.__doc__ or "").strip().split("\n\n")[0]
    # An optional or per-name section's own field says what leaving it out, or its name, means.
    extra = _sentence(info.description or "") if optional else ""
    return Row(
        key=key,
        type="table",
        default="unset" if info.default is None else "",
        presets=presets,
        description=_markdown(" ".join(part for part in (summary, extra) if part)),
        header=True,
    )


def _entries(prefix: str, entry: type[BaseModel], builtin: dict[str, BaseModel]) -> Iterator[Row]:
    for name, info in entry.model_fields.items():
        values = ", ".join(f"`{_toml(getattr(v, name))}` for `{m}`" for m, v in builtin.items())
        default = _default(info.get_default(call_default_factory=True))
        yield Row(
            key=f"{prefix}{name}",
            type=_type(info.annotation) + _bounds(info),
            default=f"built in: {values}; {default} for another model" if values else default,
            presets="",
            description=_markdown(info.description or ""),
        )


def _preset_notes(notes: dict[str, str], n_presets: int) -> str:
    """``default``, ``disguised``: value; presets with the same value share one note."""
    if len(notes) > 1 and len(notes) == n_presets and len(set(notes.values())) == 1:
        return f"every preset: {next(iter(notes.values()))}"
    grouped: dict[str, list[str]] = {}
    for name, value in notes.items():
        grouped.setdefault(value, []).append(f"`{name}`")
    return "; ".join(f"{', '.join(names)}: {value}" for value, names in grouped.items())


def _section(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field holding one (``Section`` or ``Section | None``)."""
    for candidate in (annotation, *_union_members(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _dict_section(annotation: Any) -> type[BaseModel] | None:
    """The entry model of a field holding one section per name (``dict[str, Section]``)."""
    if get_origin(annotation) is dict:
        value = get_args(annotation)[1]
        if isinstance(value, type) and issubclass(value, BaseModel):
            return value
    return None


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(a for a in get_args(annotation) if a is not type(None))
    return ()


_SCALARS = {bool: "boolean", int: "integer", float: "float", str: "string"}


def _type(annotation: Any) -> str:
    """A TOML-flavoured name for a field's type, e.g. ``array of floats``."""
    members = _union_members(annotation)
    if members:
        return " or ".join(_type(m) for m in members)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " / ".join(f'"{a}"' for a in args)
    if origin is list:
        inner = _type(args[0])
        if inner.startswith("array"):
            inner = "arrays" + inner.removeprefix("array")
        elif inner in _SCALARS.values():
            inner += "s"
        return f"array of {inner}"
    if origin is tuple:
        return "[" + ", ".join(_type(a) for a in args) + "]"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        if isinstance(item, annotated_types.MinLen) and item.min_length == 1:
            parts.append("not empty")
        for attr, sign in _BOUNDS:
            bound = getattr(item, attr, None)
            if bound is not None:
                parts.append(f"{sign} {bound}")
    return ", " + ", ".join(parts) if parts else ""


def _default(value: Any) -> str:
    if value is _MISSING:
        return "required"
    if value is None:
        return "unset"
    return f"`{_toml(value)}`"


def _toml(value: Any) -> str:
    """``value`` as a TOML literal on one line (tomli-w writes arrays one item a line)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    text = tomli_w.dumps({"v": value}, indent=0).removeprefix("v = ").rstrip("\n")
    # Newlines only come from array layout: tomli-w escapes them inside strings.
    return text.replace(",\n]", "]").replace("[\n", "[").replace(",\n", ", ")


def _sentence(fragment: str) -> str:
    fragment = fragment.strip()
    if not fragment:
        return ""
    return fragment[0].upper() + fragment[1:] + ("" if fragment.endswith(".") else ".")


def _markdown(text: str) -> str:
    """One table cell: one line, ``code`` as `code`, no stray ``|``, ``<`` or ``>``."""
    text = " ".join(_SPEC_REF.sub("", text).split())
    out = []
    for i, part in enumerate(text.split("``")):
        if i % 2:
            out.append("`" + part.replace("|", "\\|") + "`")
        else:
            out.append(part.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;"))
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# The page


def render_page(text: str) -> str:
    """``text`` with the part between the markers replaced by the current table."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise LeakbenchError(
            f"the page needs one '{BEGIN}' line and, after it, one '{END}' line",
            hint="the table is written between them",
        )
    block = f"{BEGIN}\n{_NOTICE}\n\n{reference_markdown()}\n"
    return text[:start] + block + text[end:]


def write_reference(path: Path = DOCS_PAGE) -> bool:
    """Rewrite the table in ``path``; True when that changed the file."""
    text = Path(path).read_text(encoding="utf-8")
    new = render_page(text)
    if new != text:
        write_atomic(Path(path), new)
    return new != text


def is_current(path: Path = DOCS_PAGE) -> bool:
    """Whether the table in ``path`` is what the model gives now."""
    text = Path(path).read_text(encoding="utf-8")
    return render_page(text) == text


def main(argv: list[str] | None = None) -> int:
    # A maintainer's tool (``python -m``), not a ``leakbench`` command: argparse is enough.
    parser = argparse.ArgumentParser(prog=COMMAND, description="Rewrite the settings table.")
    parser.add_argument("path", nargs="?", type=Path, default=DOCS_PAGE, help="the page")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    try:
        if args.check:
            if not is_current(args.path):
                fix = COMMAND if args.path == DOCS_PAGE else f"{COMMAND} {args.path}"
                print(f"{args.path}: the settings table is stale; run: {fix}", file=sys.stderr)
                return 1
            return 0
        changed = write_reference(args.path)
    except (LeakbenchError, OSError) as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return 2
    print(f"{'wrote' if changed else 'unchanged:'} {args.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

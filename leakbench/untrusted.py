"""Text an agent controls (its messages, code, sandbox output), made safe to show anywhere."""

from __future__ import annotations

# Characters that a terminal acts on rather than shows: C0 controls but newline and tab (ESC
# starts CSI/OSC sequences, BEL, backspace and carriage return rewrite what is on screen), DEL,
# the C1 controls (0x9b is a one-byte CSI) and the bidirectional overrides that reorder a line.
_NAMED = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\r": "\\r", "\v": "\\v"}
_UNSAFE: dict[int, str] = {
    **{c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if chr(c) not in "\n\t"},
    **{
        ord(c): f"\\u{ord(c):04x}" for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    },
    **{ord(c): name for c, name in _NAMED.items()},
}


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on shown as an escape (``\\x1b``).

    Markup (rich's or HTML) is the renderer's to escape: this only makes the text inert for a
    terminal and visible in a page."""
    return text.translate(_UNSAFE)

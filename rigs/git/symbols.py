"""The language-specific part of reading a diff: which hunk-header driver git uses for which
file type, and which names in hunk headers and changed lines are definitions (Python, JS/TS,
Go, Rust, Java, Kotlin, C#, ...). Pure text: nothing here runs git."""

from __future__ import annotations

import codecs
import re

# git picks a language-aware hunk-header driver (`def method(` rather than the enclosing
# `class`) only through attributes; these defaults yield to the repository's own.
_DRIVERS = "py:python pyi:python go:golang rs:rust java:java kt:kotlin rb:ruby php:php cs:csharp"
_DRIVERS += " c:cpp h:cpp cc:cpp cpp:cpp hpp:cpp sh:bash css:css md:markdown"
DIFF_ATTRIBUTES = "".join(f"*.{pair.replace(':', ' diff=')}\n" for pair in _DRIVERS.split())


_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@ ?(.*)$")
_DEFINITION = re.compile(
    r"^\s*(?:(?:export|default|public|private|protected|internal|static|abstract|final|async"
    r"|override|pub(?:\([^)]*\))?)\s+)*(?:def|class|function\*?|func|fn|interface|struct"
    r"|trait|enum)\s+(?:\([^)]*\)\s*)?([A-Za-z_$][\w$]*)"
)
_CALL = re.compile(r"([A-Za-z_$][\w$]*)\s*\(")
_KEYWORDS = {"if", "for", "while", "switch", "return", "catch", "elif", "with"}


def _header_symbol(header: str) -> str | None:
    if m := _DEFINITION.match(header):
        return m.group(1)
    return next((n for n in _CALL.findall(header) if n not in _KEYWORDS), None)


def _diff_path(text: str) -> str | None:
    text = text.rstrip("\t")  # git appends a tab to names containing spaces
    if text.startswith('"') and text.endswith('"'):  # C-quoted name
        raw = codecs.escape_decode(text[1:-1].encode("utf-8", "surrogateescape"))[0]
        text = raw.decode("utf-8", "surrogateescape")
    return None if text == "/dev/null" else text[2:]


def patch_symbols(patch: str) -> dict[str, list[str]]:
    """Function/class names each file's hunks touch in a zero-context patch: from hunk headers
    (the enclosing definition) and from added/removed lines that are definitions. Hunk lengths
    are counted, so a removed ``-- comment`` line is never taken for a ``---`` header. A hunk
    that starts with a definition (a function appended after another) does not count the
    header's: git names the definition before it, which did not change."""
    symbols: dict[str, list[str]] = {}
    path = old_path = None
    old_left = new_left = 0
    enclosing = None  # the hunk header's name, until the hunk's first line says whether it counts
    for line in patch.split("\n"):
        name = None
        if old_left > 0 or new_left > 0:
            if line.startswith("\\"):
                continue  # "\ No newline at end of file"
            old_left -= 0 if line.startswith("+") else 1
            new_left -= 0 if line.startswith("-") else 1
            if line[:1] in ("+", "-") and (m := _DEFINITION.match(line[1:])):
                name = m.group(1)
                enclosing = None
            elif not line[1:].strip():
                pass  # a blank line decides nothing: a new definition is often preceded by some
            elif enclosing and path is not None:
                if enclosing not in symbols.setdefault(path, []):
                    symbols[path].append(enclosing)
                enclosing = None
        elif line.startswith("diff --git "):
            path = old_path = None
        elif line.startswith("--- "):
            old_path = _diff_path(line[4:])
        elif line.startswith("+++ "):
            path = _diff_path(line[4:]) or old_path
        elif m := _HUNK.match(line):
            old_left, new_left = int(m.group(1) or 1), int(m.group(2) or 1)
            enclosing = _header_symbol(m.group(3))
        if name and path is not None and name not in symbols.setdefault(path, []):
            symbols[path].append(name)
    return symbols

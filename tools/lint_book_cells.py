"""Format and lint the code cells of the book's chapters with ruff, like the package.

    python tools/lint_book_cells.py          # check: what ruff would change or flag
    python tools/lint_book_cells.py --fix    # format the cells in place
    python tools/lint_book_cells.py book/pooling.md ...   # only these chapters

Each ``{code-cell}`` of a MyST chapter is formatted on its own (ruff format, with the
settings of pyproject.toml); each chapter's cells are linted together, in order, as the
notebook runs them, so a name defined in one cell is known in the next. A cell's options
(``:tags:`` lines or a ``---`` block) are left as they are. Lint findings are fixed by
hand. Rules that do not fit a notebook are off for cells: imports where they are first
needed (E402) and an expression on a cell's last line, which Jupyter displays (B018).
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUFF = [sys.executable, "-m", "ruff"]
CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
NOTEBOOK_IGNORES = "E402,B018"


def cells(text):
    """``(start, end, options, body, body_line)`` for each code cell.

    ``text[start:end]`` is the cell's inside, ``options`` its option lines, ``body`` its
    code and ``body_line`` the chapter line (from 1) where the code starts."""
    for match in CELL.finditer(text):
        inside = match.group(1)
        options = ""
        if inside.startswith("---\n"):
            end = inside.index("\n---\n", 3) + 5
            options = inside[:end]
        else:
            lines = inside.splitlines(keepends=True)
            while lines and lines[0].startswith(":"):
                options += lines.pop(0)
        body = inside[len(options) :]
        line = text.count("\n", 0, match.start(1) + len(options)) + 1
        yield match.start(1), match.end(1), options, body, line


def _ruff(args, files, cwd):
    return subprocess.run(
        [*RUFF, *args, "--config", str(ROOT / "pyproject.toml"), *map(str, files)],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def format_chapter(path, fix):
    """Format each cell of ``path``; with ``fix``, write the result.

    Returns the chapter lines of the cells that change."""
    text = path.read_text()
    found = list(cells(text))
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for k, (_, _, _, body, _) in enumerate(found):
            file = Path(tmp) / f"cell{k:03d}.py"
            file.write_text(body)
            files.append(file)
        if not files:
            return []
        _ruff(
            ["check", "--quiet", "--fix", "--select", "I"], files, tmp
        )  # sort each cell's imports
        _ruff(["format", "--quiet"], files, tmp)
        formatted = [file.read_text() for file in files]
    changed = [
        line
        for (_, _, _, body, line), new in zip(found, formatted, strict=True)
        if body != new
    ]
    if fix and changed:
        pieces, last = [], 0
        for (start, end, options, _, _), new in zip(found, formatted, strict=True):
            pieces += [text[last:start], options, new]
            last = end
        path.write_text("".join(pieces) + text[last:])
    return changed


def lint_chapter(path):
    """Ruff's findings for the cells of a chapter: ``(chapter line, message)``."""
    script, origin = [], []  # origin[i]: the chapter line of the script's line i + 1
    for _, _, _, body, line in cells(path.read_text()):
        for offset, code_line in enumerate(body.splitlines()):
            script.append(code_line)
            origin.append(line + offset)
        script.append("")
        origin.append(line)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "chapter.py"
        file.write_text("\n".join(script) + "\n")
        result = _ruff(
            [
                "check",
                "--output-format",
                "concise",
                "--extend-ignore",
                NOTEBOOK_IGNORES,
            ],
            [file],
            tmp,
        )
    findings = []
    for row in result.stdout.splitlines():
        match = re.match(r".*chapter\.py:(\d+):(\d+): (.*)", row)
        if match:
            findings.append((origin[int(match.group(1)) - 1], match.group(3)))
    return findings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", type=Path)
    parser.add_argument("--fix", action="store_true", help="format the cells in place")
    args = parser.parse_args(argv)
    chapters = args.chapters or sorted((ROOT / "book").glob("*.md"))
    problems = 0
    for path in chapters:
        name = path.relative_to(ROOT) if path.is_absolute() else path
        for line in format_chapter(path, args.fix):
            if not args.fix:
                print(f"{name}:{line}: cell is not formatted (run with --fix)")
                problems += 1
        for line, message in lint_chapter(path):
            print(f"{name}:{line}: {message}")
            problems += 1
    print(f"{problems} problem(s) in the code cells of {len(chapters)} chapter(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

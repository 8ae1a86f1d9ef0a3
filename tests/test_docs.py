"""The documentation stays true: its code runs, its commands parse, its links resolve.

Pages: README.md and docs/*.md (code and commands); BENCHMARKS.md, benchmarks/README.md and the generated tables
under docs/results/ (links and repository paths only).

* Every ```python block runs, the blocks of one page in order in one namespace, in a temporary working directory,
  on one thread, with a small fake MNIST (synthetic digits written as IDX files, ``$TORCHSTN_DATA``) so nothing is
  downloaded.
* Every ``torchstn ...`` command (a line of a bash/console/plain block, ``python -m torchstn ...`` and
  ``torchrun ... -m torchstn ...`` included, or an inline code span of the prose) is parsed by the real
  ``torchstn`` argparse parser without running it: an unknown subcommand or option fails. A config name (an
  experiment's cell such as ``table1:RTS/st_cnn_affine``, or a packaged config) and its ``--set`` overrides are
  loaded too (``load_config``; a deprecated name fails), and ``reproduce --only`` cells must exist.
* A ```toml block that holds ``[model]`` is loaded as a training config.
* No page (generated tables included) names a folder of the machine it was written on (``/tmp/...``, a home).
* Every relative link, and every backticked path into the repository (``src/...``, ``tests/...``, a top-level
  ``NAME.md``) outside the generated tables, must name a file or folder that exists.

A page can steer one block with an HTML comment on the line(s) right before its opening fence (rare; each says why):

    <!-- doc-test: skip REASON -->          the block is neither run nor parsed
    <!-- doc-test: setup CODE -->           CODE runs first, in the page's namespace (may span lines)

A failure names the page, the line of the block and the error; a python traceback shows the page's own line numbers.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CODE_PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
LINK_PAGES = sorted(
    {*CODE_PAGES, ROOT / "BENCHMARKS.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs" / "results").rglob("*.md")}
)
# python -m MODULE runs the same parser as torchstn + these words
MODULES = {
    "torchstn": [],
    "torchstn.experiments.colocalisation": ["reproduce", "colocalisation"],
    "torchstn.experiments.svhn": ["svhn"],
    "torchstn.experiments.cub": ["cub"],
}
COMMAND_LANGS = {"", "bash", "sh", "shell", "console", "text"}
PLACEHOLDER = re.compile(r"<[^>]*>|[A-Z][A-Z0-9_]*")  # a whole value the reader fills in: <cell>, N, CELLS

# Python blocks known to fail on their current text, with what each needs. Strict: such a block still runs, and the
# test fails once it passes, so that the entry is removed.
KNOWN_BROKEN: dict[tuple[str, str], str] = {}  # (page, first line of the block) -> why it cannot run yet


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else page.name


# --- reading a page ------------------------------------------------------------------------------------------------


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    markers: dict = field(default_factory=dict)  # {"skip" or "setup": text, "line": its first line}

    @property
    def where(self) -> str:
        return f"{_rel(self.page)}:{self.line}"


_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*$")
_MARKER = re.compile(r"<!--\s*doc-test:\s*(\w+)\s*(.*?)\s*-->", re.S)


def _markers(lines: list[str], fence: int, page: Path) -> dict[str, str]:
    """The ``doc-test`` comment that ends on the line right before ``lines[fence]``: ``{directive: argument}``."""
    if fence == 0 or not lines[fence - 1].rstrip().endswith("-->"):
        return {}
    start = fence - 1
    while start > 0 and "<!--" not in lines[start]:
        start -= 1
    m = _MARKER.search("\n".join(lines[start:fence]))
    if not m:
        return {}
    directive, arg = m.group(1), m.group(2)
    if directive not in ("skip", "setup") or not arg:
        raise AssertionError(
            f"{_rel(page)}:{start + 1}: doc-test marker needs `skip REASON` or `setup CODE`, got {m.group(0)!r}"
        )
    arg_line = start + 1 + m.string.count("\n", 0, m.start(2))  # 1-based line where CODE / REASON starts
    return {directive: arg, "line": arg_line}


def read_page(page: Path) -> tuple[list[Block], str]:
    """The fenced blocks of ``page`` and its prose with every block blanked out (line numbers kept)."""
    lines = page.read_text().splitlines()
    blocks, prose, i = [], list(lines), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        # a line keeps its indentation past the fence's ("".isspace() is False: a fence at column 0 strips nothing)
        body = "\n".join(line.lstrip() if line[:indent].strip() else line[indent:] for line in lines[i + 1 : j])
        blocks.append(Block(page, i + 1, lang, body, _markers(lines, i, page)))
        prose[i : j + 1] = [""] * (min(j, len(lines) - 1) - i + 1)
        i = j + 1
    return blocks, "\n".join(prose)


# --- python blocks -------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch, one_thread):
    """A small MNIST (synthetic digits, 300 train / 200 test) as IDX files in ``$TORCHSTN_DATA``; caches in tmp."""
    from torchstn.data import synthetic_digits, write_idx

    data = tmp_path / "mnist"
    for split, prefix, n in (("train", "train", 300), ("test", "t10k", 200)):
        images, labels = synthetic_digits(n, seed=1 if split == "train" else 2)
        write_idx(data / f"{prefix}-images-idx3-ubyte", images)
        write_idx(data / f"{prefix}-labels-idx1-ubyte", labels.to(torch.uint8))
    monkeypatch.setenv("TORCHSTN_DATA", str(data))
    monkeypatch.setenv("TORCHSTN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return data


def _run_python(code: str, first_line: int, page: Path, namespace: dict, what: str) -> str | None:
    """Run ``code`` (from line ``first_line`` of ``page``) in ``namespace``; the failure report, or None."""
    compiled = compile("\n" * first_line + code, str(page), "exec")  # padded: tracebacks show the page's lines
    try:
        exec(compiled, namespace)
    except Exception as e:  # report any failure with the page's line
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(page)]
        line = frames[-1].lineno if frames else first_line
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-8))
        return f"{_rel(page)}:{line}: {what} failed: {type(e).__name__}: {e}\n\n{tb}"
    return None


PYTHON_PAGES = [p for p in CODE_PAGES if any(b.lang == "python" for b in read_page(p)[0])]


def run_python_blocks(page: Path) -> list[tuple[Block, str | None]]:
    """Run the python blocks of ``page`` in order in one namespace: each block with its failure report or None."""
    namespace: dict = {"__name__": "__doc_test__"}
    results = []
    for b in (b for b in read_page(page)[0] if b.lang == "python" and "skip" not in b.markers):
        error = None
        if "setup" in b.markers:
            error = _run_python(b.markers["setup"], b.markers["line"] - 1, page, namespace, "doc-test setup")
        error = error or _run_python(b.text, b.line, page, namespace, f"python block at line {b.line}")
        results.append((b, error))
    return results


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_rel)
def test_python_blocks_run(page, fake_mnist):
    for b, error in run_python_blocks(page):
        known = next(
            (why for (p, start), why in KNOWN_BROKEN.items() if p == _rel(page) and b.text.startswith(start)), None
        )
        if known and error:
            pytest.xfail(f"{b.where}: {known}")
        if known:
            pytest.fail(f"{b.where} runs now: remove its KNOWN_BROKEN entry", pytrace=False)
        if error:
            pytest.fail(error, pytrace=False)


def test_markers_steer_blocks(tmp_path):
    """A setup marker runs first in the page's namespace, a skip marker skips, and failures name the page's line."""
    page = tmp_path / "page.md"
    page.write_text("""# A page

<!-- doc-test: setup
x = 2
-->
```python
y = x + 1
```

<!-- doc-test: skip it would download something -->
```python
raise RuntimeError("skipped blocks never run")
```

```python
assert y == 3
z = 1 / 0
```
""")
    results = run_python_blocks(page)
    assert [b.line for b, _ in results] == [6, 15]
    assert results[0][1] is None
    assert "page.md:17: python block at line 15 failed: ZeroDivisionError" in results[1][1]
    page.write_text("<!-- doc-test: skipp typo -->\n```python\npass\n```\n")
    with pytest.raises(AssertionError, match="doc-test marker needs"):
        read_page(page)


def test_a_block_keeps_its_own_indentation(tmp_path):
    """A block's lines lose the fence's indentation and no more: a loop in a block at column 0 (or in a list item)
    still runs."""
    page = tmp_path / "page.md"
    loop = "total = 0\nfor i in range(3):\n    total += i\nassert total == 3\n"
    indented = "".join(f"   {line}\n" for line in loop.splitlines())
    page.write_text(f"```python\n{loop}```\n\n* item\n\n   ```python\n{indented}   ```\n")
    blocks, _ = read_page(page)
    assert [b.text for b in blocks] == [loop.rstrip("\n")] * 2
    assert [error for _, error in run_python_blocks(page)] == [None, None]


def test_known_broken_blocks_still_exist():
    """Each KNOWN_BROKEN entry names a block that is still on its page (else the entry is stale)."""
    for (page, start), _ in KNOWN_BROKEN.items():
        texts = [b.text for b in read_page(ROOT / page)[0] if b.lang == "python"]
        assert any(t.startswith(start) for t in texts), f"KNOWN_BROKEN entry {page}: {start!r} matches no block"


# --- torchstn commands ---------------------------------------------------------------------------------------------


def _commands_in_block(block: Block) -> list[tuple[int, str]]:
    """``(line, command text)`` of every shell command in a bash/console/plain block, continuations joined."""
    lines = block.text.splitlines()
    prompted = any(line.lstrip().startswith("$ ") for line in lines)
    out, pending, start = [], "", 0
    for k, line in enumerate(lines):
        if prompted and not pending:
            if not line.lstrip().startswith("$ "):
                continue
            line = line.lstrip()[2:]
        if not pending:
            start = block.line + 1 + k
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def _expand(command: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), command)


def torchstn_argv(command: str, variables: dict[str, str] | None = None) -> list[str] | None:
    """The arguments after ``torchstn`` in a shell command line, or None if it does not run the torchstn CLI."""
    try:
        words = shlex.split(_expand(command, variables or {}), comments=True)
    except ValueError:
        return None
    while words and (words[0] in ("time", "sudo", "nohup", "env") or re.fullmatch(r"\w+=.*", words[0])):
        words = words[1:]  # time torchstn ..., TORCHSTN_CACHE=dir torchstn ...
    if words[:1] == ["torchstn"]:
        return None if words[1:2] and words[1].endswith(":") else words[1:]  # `torchstn train: ...`: its output
    for k in range(len(words) - 1):  # python -m torchstn ..., torchrun ... -m torchstn ...
        if words[k] == "-m" and words[k + 1] in MODULES and words[0] in ("python", "python3", "torchrun"):
            return MODULES[words[k + 1]] + words[k + 2 :]
    return None


def check_command(argv: list[str]) -> str | None:
    """Parse ``torchstn ARGV`` with the real parser (nothing runs); the error text, or None if it is accepted."""
    from torchstn.errors import TorchstnError
    from torchstn.experiments.cli import get_args_parser
    from torchstn.experiments.engine.config_io import load_config
    from torchstn.experiments.reproduce import EXPERIMENTS, experiment_cells

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = get_args_parser().parse_args(argv)
    except SystemExit as e:
        return None if e.code == 0 else err.getvalue().strip().splitlines()[-1]
    overrides = [o for o in getattr(args, "overrides", []) if not PLACEHOLDER.fullmatch(o.partition("=")[2])]
    config = getattr(args, "config", None) or ""
    named = config and not config.endswith(".toml") and (":" in config or "/" not in config)  # not a file path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # the docs use today's spellings
            if args.command == "train" and named:
                load_config(config, overrides)  # a cell (table1:RTS/st_cnn_affine) or a packaged config, else an error
            if args.command == "reproduce" and args.experiment in EXPERIMENTS:
                only = [] if PLACEHOLDER.fullmatch(args.only) else [s for s in args.only.split(",") if s.strip()]
                cells = experiment_cells(args.experiment, only)
                load_config(next(iter(cells.values())), overrides)
    except (TorchstnError, DeprecationWarning) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _inline_commands(prose: str) -> list[tuple[int, str]]:
    """``torchstn ...`` code spans of the prose that are whole commands (not ``torchstn train | eval`` lists)."""
    out = []
    for m in re.finditer(r"`((?:python3? -m )?torchstn[\w.]* [^`]+)`", prose):
        text = " ".join(m.group(1).split())
        if "|" in text or "..." in text:
            continue
        text = re.sub(r"\[[^\]]*\]", "", text)  # [--set optim.iterations=2000]: an optional part
        if len(text.split()) > 2 and torchstn_argv(text) is not None:  # `torchstn export` names a command only
            out.append((prose.count("\n", 0, m.start()) + 1, text))
    return out


def page_commands(page: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, command, argv)`` of every torchstn command on ``page``."""
    blocks, prose = read_page(page)
    found = []
    for b in blocks:
        if b.lang not in COMMAND_LANGS or "skip" in b.markers:
            continue
        variables: dict[str, str] = {}
        for line, command in _commands_in_block(b):
            assign = re.fullmatch(r"\s*(\w+)=(\"[^\"]*\"|'[^']*'|\S*)\s*(#.*)?", command)
            if assign:  # W="--backbone ...": later lines use $W
                variables[assign.group(1)] = " ".join(shlex.split(assign.group(2)))
                continue
            argv = torchstn_argv(command, variables)
            if argv is not None:
                found.append((line, command.strip(), argv))
    for line, command in _inline_commands(prose):
        found.append((line, command, torchstn_argv(command)))
    return found


@pytest.mark.parametrize("page", CODE_PAGES, ids=_rel)
def test_torchstn_commands_parse(page):
    errors = []
    for line, command, argv in page_commands(page):
        error = check_command(argv)
        if error:
            errors.append(f"{_rel(page)}:{line}: `{command}`\n    {error}")
    assert not errors, "commands the torchstn CLI refuses:\n" + "\n".join(errors)


@pytest.mark.parametrize("page", CODE_PAGES, ids=_rel)
def test_toml_config_blocks_load(page, tmp_path):
    from torchstn.experiments.engine.config_io import load_config

    for b in read_page(page)[0]:
        if b.lang == "toml" and "[model]" in b.text and "skip" not in b.markers:
            path = tmp_path / "doc.toml"
            path.write_text(b.text)
            try:
                load_config(path)
            except Exception as e:
                pytest.fail(f"{b.where}: the config block does not load: {type(e).__name__}: {e}", pytrace=False)


# --- links and paths -----------------------------------------------------------------------------------------------

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REPO_PATH = re.compile(r"`((?:src|tests|docs|benchmarks|requirements)/[\w./-]+)`|\b([A-Z][A-Z_]+\.md)\b")


def _is_pattern(path: str) -> bool:
    """A path with a part the reader fills in: ``<...>``, ``{a,b}``, ``*`` or an upper-case word inside a name."""
    if re.search(r"[<{*]", path):
        return True
    for segment in path.split("/"):
        stem = segment.split(".")[0]
        if any(re.fullmatch(r"[A-Z]+", t) and t != stem for t in re.split(r"[_.-]", segment)):
            return True
    return False


def _targets(page: Path) -> list[tuple[int, str, Path]]:
    prose = read_page(page)[1]
    prose_no_code = re.sub(r"`[^`\n]*`", lambda m: " " * len(m.group(0)), prose)
    found = []
    for m in _LINK.finditer(prose_no_code):
        target = m.group(1)
        if re.match(r"[a-z][a-z+.-]*:", target) or target.startswith("#"):
            continue  # a web address, or an anchor on the same page
        path = target.split("#")[0]
        found.append((prose.count("\n", 0, m.start()) + 1, target, (page.parent / path).resolve()))
    generated = page.is_relative_to(ROOT / "docs" / "results")  # their recorded paths name run outputs
    for m in _REPO_PATH.finditer("" if generated else prose):
        path = (m.group(1) or m.group(2)).rstrip(".")
        if _is_pattern(path):
            continue  # docs/img/data_NAME.png, docs/results/<experiment>_cpu.md: a pattern, not a file
        found.append((prose.count("\n", 0, m.start()) + 1, path, ROOT / path))
    return found


@pytest.mark.parametrize("page", LINK_PAGES, ids=_rel)
def test_links_resolve(page):
    dead = [f"{_rel(page)}:{line}: {target}" for line, target, path in _targets(page) if not path.exists()]
    assert not dead, "links or paths to files that do not exist:\n" + "\n".join(dead)


def test_fake_mnist_is_what_blocks_read(fake_mnist):
    """The python blocks read the small fake MNIST, never a real one or a download."""
    from torchstn.data import load_mnist

    images, _ = load_mnist("train")
    assert images.shape[0] == 300


MACHINE_PATH = re.compile(r"(?<![\w.~])(/work/|/root\b|/home/|/tmp/|/Users/|scratch/)")


@pytest.mark.parametrize("page", LINK_PAGES + sorted((ROOT / "docs" / "results").rglob("*.csv")), ids=_rel)
def test_no_machine_paths(page):
    """No page names a folder of the machine it was written on; examples use relative paths (runs/x, .venv-bench)."""
    hits = [
        f"{_rel(page)}:{k}: {line.strip()[:100]}"
        for k, line in enumerate(page.read_text().splitlines(), 1)
        if MACHINE_PATH.search(line)
    ]
    assert not hits, "machine-specific paths:\n" + "\n".join(hits)

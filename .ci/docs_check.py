#!/usr/bin/env python3
"""The docs describe what exists.

    python3 .ci/docs_check.py [BIN_DIR]                # BIN_DIR defaults to target/debug
    python3 .ci/docs_check.py --self-test [BIN_DIR]

Over README.md, docs/*.md and every other Markdown file git tracks (vendor/, target/ and
node_modules/ left out):

1. Links. Every relative link and image resolves: the file or directory exists, and for
   `page.md#anchor` (or `#anchor` in the same file) a heading of that page has that GitHub-style
   slug (an explicit `<a id=…>`/`<a name=…>` counts too).

2. Commands and flags. Every command line the docs show for `devdb`, `devdb-proxy` or
   `devdb-controller` (a line of a shell or unlabelled fenced block, or an inline code span,
   starting with the binary; also `cargo run … --bin X -- ARGS` and `cargo run -p devdb-proxy --
   ARGS`) names subcommands that exist and flags that the help of that (sub)command lists. The
   structure comes from running `BIN --help` recursively over the binaries in BIN_DIR (a name
   that is not listed is asked of the binary too: hidden aliases count); nothing is hard-coded.
   Placeholders (`NAME`, `<name>`, `…`), environment assignments before the command, `$ `
   prompts, `\\` continuations, shell pipes and `;`/`&&` are understood, and so is the synopsis
   style: `devdb db stop NAME | start NAME`, `[--file F | --rotate-key]`, and a next line that
   goes on with more flags.
   In README.md and docs/*.md, an inline code span that is only flags (`--wake-timeout`,
   `--restore-sandbox auto`) must name flags of one of the three binaries; under a heading that
   names one of them in code (`` ## `devdb-proxy` reference ``), of that binary. Another
   program's flags are written with the program's name (`pg_restore --no-owner`), which this
   check leaves alone.

Prints one line per problem (file:line: what is wrong) and exits 1 if there is any.
--self-test writes a page with broken links and anchors, unknown subcommands and bogus flags
(beside correct ones) into a temporary directory, checks it, and fails unless exactly those are
reported. Python 3 standard library only.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARIES = ("devdb", "devdb-proxy", "devdb-controller")
EXCLUDED_DIRS = ("vendor/", "target/")
SHELL_LANGS = {"", "sh", "bash", "shell", "console", "zsh", "shell-session"}


# --- Markdown ------------------------------------------------------------------------------


@dataclass
class Page:
    path: Path
    rel: str
    lines: list[str]
    # (line number, language, text) of each fenced block line.
    code_lines: list[tuple[int, str, str]] = field(default_factory=list)
    # Text outside fenced blocks, with line numbers: (line number, text).
    prose: list[tuple[int, str]] = field(default_factory=list)
    anchors: set[str] = field(default_factory=set)
    # (line number, heading text) of each heading, in order.
    headings: list[tuple[int, str]] = field(default_factory=list)


FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"""<a\s+[^>]*(?:id|name)\s*=\s*["']([^"']+)["']""", re.I)


def read_page(path: Path, root: Path) -> Page:
    text = path.read_text(encoding="utf-8")
    page = Page(path=path, rel=path.relative_to(root).as_posix(), lines=text.split("\n"))
    fence: str | None = None
    lang = ""
    counts: dict[str, int] = {}
    for number, line in enumerate(page.lines, 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, lang = m.group(1), m.group(2).lower()
            continue
        if fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and line.strip().strip(fence[0]) == "":
                fence = None
            else:
                page.code_lines.append((number, lang, line))
            continue
        page.prose.append((number, line))
        h = HEADING.match(line)
        if h:
            page.headings.append((number, h.group(2)))
            slug = github_slug(h.group(2))
            n = counts.get(slug, 0)
            counts[slug] = n + 1
            page.anchors.add(slug if n == 0 else f"{slug}-{n}")
        for a in HTML_ANCHOR.findall(line):
            page.anchors.add(a)
    return page


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text (markup removed), lower-cased, with every
    character but letters, digits, `_`, `-` and spaces dropped, and spaces made hyphens."""
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "").replace("*", "")
    out = []
    for ch in text.lower():
        cat = unicodedata.category(ch)
        if ch in " -_" or cat[0] in "LNM":
            out.append(ch)
    return "".join(out).replace(" ", "-")


INLINE_CODE = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")


def prose_paragraphs(page: Page):
    """Runs of consecutive non-blank prose lines (a paragraph, a table, a list), each a list of
    (line number, text): inline code may cross line ends within one."""
    block: list[tuple[int, str]] = []
    for number, line in page.prose + [(0, "")]:
        if line.strip() == "" or (block and number != block[-1][0] + 1):
            if block:
                yield block
            block = []
            if line.strip() == "":
                continue
        block.append((number, line))


def line_of(block: list[tuple[int, str]], offset: int) -> int:
    """The line number of character `offset` of the block's text joined with newlines."""
    pos = 0
    for number, line in block:
        if offset <= pos + len(line):
            return number
        pos += len(line) + 1
    return block[-1][0]


def code_spans(page: Page):
    """(line, headings, text) of every inline code span outside fenced blocks; headings are the
    texts of the headings it is under, outermost first."""
    levels = {number: len(HEADING.match(line).group(1)) for number, line in page.prose if HEADING.match(line)}
    for block in prose_paragraphs(page):
        text = "\n".join(line for _, line in block)
        for m in INLINE_CODE.finditer(text):
            number = line_of(block, m.start())
            stack: list[tuple[int, str]] = []
            for h_line, h_text in page.headings:
                if h_line > number:
                    break
                while stack and stack[-1][0] >= levels[h_line]:
                    stack.pop()
                stack.append((levels[h_line], h_text))
            yield number, [h for _, h in stack], " ".join(m.group(2).split())


def links(page: Page):
    """(line, target) of every link and image outside fenced blocks and code spans."""
    for block in prose_paragraphs(page):
        text = "\n".join(line for _, line in block)
        # Blank out code spans (keeping offsets) so that nothing inside them counts as a link.
        blanked = INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
        for m in LINK.finditer(blanked):
            yield line_of(block, m.start()), m.group(1).strip("<>")
        for number, line in block:
            d = REF_DEF.match(line)
            if d:
                yield number, d.group(1).strip("<>")


# --- links ---------------------------------------------------------------------------------


def check_links(pages: dict[Path, Page], root: Path, failures: list[str]) -> int:
    seen = 0
    for page in pages.values():
        for number, target in links(page):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
                continue  # http:, https:, mailto: …
            seen += 1
            where = f"{page.rel}:{number}"
            path_part, _, anchor = target.partition("#")
            path_part = urllib.parse.unquote(path_part)
            if path_part == "":
                dest = page.path
            elif path_part.startswith("/"):
                dest = (root / path_part.lstrip("/")).resolve()
            else:
                dest = (page.path.parent / path_part).resolve()
            if not dest.exists():
                failures.append(f"{where}: link {target!r}: {rel_to(dest, root)} does not exist")
                continue
            if anchor and dest.suffix.lower() == ".md" and dest.is_file():
                other = pages.get(dest) or read_page(dest, root)
                if urllib.parse.unquote(anchor) not in other.anchors:
                    near = ", ".join(sorted(a for a in other.anchors if anchor.split("-")[0] in a)[:5])
                    failures.append(
                        f"{where}: link {target!r}: no heading with the anchor #{anchor} in "
                        f"{rel_to(dest, root)}" + (f" (near: {near})" if near else "")
                    )
    return seen


def rel_to(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


# --- the binaries' commands and flags ------------------------------------------------------


@dataclass
class Command:
    path: tuple[str, ...]
    help: str
    children: dict[str, "Command"]
    # Declared long flags, and whether each takes a value (an optional `[<V>]` does not count).
    flags: dict[str, bool]


OPTION_LINE = re.compile(
    r"^\s+(?:-[A-Za-z0-9], )?(--[A-Za-z0-9][A-Za-z0-9-]*)((?:[ =])(?:<[^>]+>|\[<[^>]+>\]))?(?:\.\.\.)?(?:\s{2,}|$)"
)
ALIASES = re.compile(r"\[aliases?: ([^\]]+)\]")


def parse_help(text: str) -> tuple[list[str], dict[str, bool]]:
    """The subcommands (from `Commands:`) and declared long flags of a clap help text."""
    children: list[str] = []
    flags: dict[str, bool] = {}
    section = ""
    for line in text.splitlines():
        if re.match(r"^\S.*:$", line):
            section = line[:-1]
            continue
        if section == "Commands":
            m = re.match(r"^  ([a-z][a-z0-9-]*)(?:\s{2,}|$)", line)
            if m and m.group(1) != "help":
                children.append(m.group(1))
            continue
        m = OPTION_LINE.match(line)
        if m:
            value = m.group(2) or ""
            flags[m.group(1)] = value.strip().startswith("<")
        for group in ALIASES.findall(line):
            for alias in re.findall(r"--[A-Za-z0-9][A-Za-z0-9-]*", group):
                flags.setdefault(alias, False)
    flags.setdefault("--help", False)
    return children, flags


class Binaries:
    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.trees: dict[str, Command] = {}
        self.aliases: dict[tuple[str, ...], Command | None] = {}
        self.errors: list[str] = []
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            self.nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"
        self.no_config = str(Path(tempfile.gettempdir()) / f"devdb-docs-check-{os.getpid()}" / "config.json")
        for name in BINARIES:
            exe = bin_dir / name
            if not os.access(exe, os.X_OK):
                self.errors.append(f"{exe}: missing (build it: cargo build --offline -p devdb-controller -p devdb-proxy)")
                continue
            self.trees[name] = self._load((name,))

    def _help(self, path: tuple[str, ...]) -> str:
        exe = self.bin_dir / path[0]
        # `devdb down` takes no --help of its own: it stops every database of the controller it
        # reaches, then hands its arguments over to `devdb-controller down`. So the binaries are
        # asked with no token, no saved settings and a server that is certainly not there.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVDB_")}
        env.update(NO_COLOR="1", COLUMNS="100", DEVDB_SERVER=self.nowhere, DEVDB_CONFIG=self.no_config)
        try:
            run = subprocess.run(
                [str(exe), *path[1:], "--help"], capture_output=True, text=True, timeout=30, env=env,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            self.errors.append(f"{' '.join(path)} --help: no answer in 30 s")
            return ""
        if run.returncode != 0 or "Usage:" not in run.stdout:
            self.errors.append(f"{' '.join(path)} --help: exit {run.returncode}: {(run.stderr or run.stdout).strip()[:300]}")
        return run.stdout

    def _load(self, path: tuple[str, ...]) -> Command:
        text = self._help(path)
        children, flags = parse_help(text)
        node = Command(path=path, help=text, children={}, flags=flags)
        for child in children:
            node.children[child] = self._load(path + (child,))
        return node

    def alias(self, node: Command, token: str) -> Command | None:
        """The subcommand `token` names when it is a hidden alias (`devdb db ls`): asked of the
        binary itself, whose help then shows the subcommand's own name."""
        if not re.match(r"^[a-z][a-z0-9-]*$", token):
            return None
        key = node.path + (token,)
        if key not in self.aliases:
            self.aliases[key] = None
            errors = len(self.errors)
            text = self._help(key)
            del self.errors[errors:]  # an unknown name is the caller's to report
            usage = re.search(r"^Usage: (.*)$", text, re.M)
            if usage:
                words = usage.group(1).split()
                if words[: len(node.path)] == list(node.path) and len(words) > len(node.path):
                    self.aliases[key] = node.children.get(words[len(node.path)])
        return self.aliases[key]

    def all_flags(self, name: str | None = None) -> set[str]:
        out: set[str] = set()

        def walk(node: Command) -> None:
            out.update(node.flags)
            for child in node.children.values():
                walk(child)

        for bin_name, tree in self.trees.items():
            if name is None or bin_name == name:
                walk(tree)
        return out


ENV_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*|<[^>]*>|\{[^}]*\}|.*(?:…|\.\.\.).*|[A-Z][A-Z0-9_]*=.*)$")
WRAPPERS = {"sudo", "env", "exec", "time", "command", "nohup"}
SEPARATORS = {"|", "||", "&&", ";", "&"}


def tokenize(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("$ "):
        text = text[2:]
    try:
        lexer = shlex.shlex(text, posix=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote in prose: plain words
        tokens = text.split("#", 1)[0].split() if text.startswith("devdb") else text.split()
    out: list[str] = []
    for token in tokens:
        # `;` glued to a word ends a command as well.
        if len(token) > 1 and token.endswith(";"):
            out += [token[:-1], ";"]
        else:
            out.append(token)
    return out


def segments(tokens: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for token in tokens:
        if token in SEPARATORS:
            out.append([])
        else:
            out[-1].append(token)
    return [s for s in out if s]


def command_start(tokens: list[str]) -> tuple[str, list[str]] | None:
    """The binary a command line runs, and its arguments, if it runs one of ours."""
    i = 0
    while i < len(tokens) and (ENV_ASSIGN.match(tokens[i]) or tokens[i] in WRAPPERS):
        i += 1
    if i >= len(tokens):
        return None
    name = tokens[i].rsplit("/", 1)[-1]
    if name in BINARIES:
        return name, tokens[i + 1 :]
    if name == "cargo" and tokens[i + 1 : i + 2] == ["run"] and "--" in tokens:
        before = tokens[i + 2 : tokens.index("--")]
        chosen = None
        if "--bin" in before and before.index("--bin") + 1 < len(before):
            chosen = before[before.index("--bin") + 1]
        elif "-p" in before and before.index("-p") + 1 < len(before):
            package = before[before.index("-p") + 1]
            chosen = package if package == "devdb-proxy" else None  # one binary only
        if chosen in BINARIES:
            return chosen, tokens[tokens.index("--") + 1 :]
    return None


def clean(token: str) -> str:
    return token.strip("[]()").rstrip(",")


class CommandChecker:
    def __init__(self, binaries: Binaries, failures: list[str]):
        self.bins = binaries
        self.failures = failures
        self.commands = 0
        self.flags = 0

    def check_line(self, where: str, text: str) -> None:
        previous: Command | None = None
        for seg in segments(tokenize(text)):
            start = command_start(seg)
            if start:
                name, args = start
                if name not in self.bins.trees:
                    continue
                self.commands += 1
                previous = self.walk(where, self.bins.trees[name], args)
                continue
            if previous is None:
                continue
            first = clean(seg[0])
            parent = self.parent_of(previous)
            if first.startswith("--"):
                # `[--file F | --rotate-key]`: more flags of the same command.
                previous = self.walk(where, previous, seg, subcommands=False)
            elif parent is not None and first in parent.children:
                # `devdb db stop NAME | start NAME`: a sibling subcommand.
                previous = self.walk(where, parent, seg)
            else:
                previous = None  # a pipe into another program

    def parent_of(self, node: Command) -> Command | None:
        if len(node.path) < 2:
            return None
        parent = self.bins.trees[node.path[0]]
        for part in node.path[1:-1]:
            parent = parent.children[part]
        return parent

    def walk(self, where: str, node: Command, args: list[str], subcommands: bool = True) -> Command:
        positional = not subcommands
        i = 0
        while i < len(args):
            raw = args[i]
            token = clean(raw)
            i += 1
            if token == "--":
                break
            if token.startswith("--") and len(token) > 2:
                flag, eq, _ = token.partition("=")
                self.flags += 1
                if "/--" in flag:
                    # `--tls-cert/--tls-key`: each of them (each takes its own value).
                    self.walk(where, node, flag.split("/"), subcommands=False)
                    continue
                if flag not in node.flags:
                    self.failures.append(
                        f"{where}: `{' '.join(node.path)}` has no flag {flag} "
                        f"(`{' '.join(node.path)} --help` lists {', '.join(sorted(f for f in node.flags if f != '--help')) or 'none'})"
                    )
                elif node.flags[flag] and not eq and not raw.endswith("]") and i < len(args):
                    i += 1  # its value
                continue
            if token.startswith("-") and len(token) > 1:
                continue  # a short flag
            if token == "":
                continue
            if not positional and token in node.children:
                node = node.children[token]
                continue
            if not positional and node.children and self.bins.alias(node, token) is not None:
                node = self.bins.alias(node, token)
                continue
            if not positional and node.children and not PLACEHOLDER.match(token):
                self.failures.append(
                    f"{where}: `{' '.join(node.path)}` has no subcommand {token!r} "
                    f"(it has {', '.join(node.children)})"
                )
                return node
            positional = True
        return node

    def check_flags_only(self, where: str, headings: list[str], text: str) -> None:
        """An inline code span of flags alone: flags of our binaries (of the one a heading above
        it names, the innermost such heading)."""
        scope = None
        for heading in headings:
            named = [b for b in BINARIES if f"`{b}`" in heading]
            if len(named) == 1:
                scope = named[0]
        known = self.bins.all_flags(scope)
        for token in tokenize(text):
            token = clean(token)
            if token.startswith("--") and len(token) > 2:
                flag = token.partition("=")[0]
                self.flags += 1
                if flag not in known and scope:
                    self.failures.append(f"{where}: {flag}: no such flag of `{scope}`, whose section this is")
                elif flag not in known:
                    self.failures.append(
                        f"{where}: {flag}: no such flag of devdb, devdb-proxy or devdb-controller "
                        "(another program's flag: write the program's name before it)"
                    )


def manual(rel: str) -> bool:
    """The manual (README.md and docs/), where a flag alone in code is one of ours; the crates'
    and tools' own READMEs also name their scripts' flags."""
    return rel == "README.md" or (rel.startswith("docs/") and rel.count("/") == 1)


def check_commands(pages: dict[Path, Page], binaries: Binaries, failures: list[str]) -> CommandChecker:
    checker = CommandChecker(binaries, failures)
    for page in pages.values():
        # Fenced blocks: shell and unlabelled ones. A line ending in `\\` goes on on the next one,
        # and so does a synopsis whose next line starts with more flags (`    [--no-wait]`).
        logical: list[list] = []
        previous_number = -1
        for number, lang, line in page.code_lines:
            if lang not in SHELL_LANGS:
                continue
            adjacent = logical and number == previous_number + 1
            if adjacent and (logical[-1][2] or re.match(r"^\s+\[?--", line)):
                logical[-1][1] += " " + line.strip()
            else:
                logical.append([number, line, False])
            previous_number = number
            logical[-1][2] = logical[-1][1].rstrip().endswith("\\")
            if logical[-1][2]:
                logical[-1][1] = logical[-1][1].rstrip()[:-1]
        for start, text, _ in logical:
            checker.check_line(f"{page.rel}:{start}", text)
        for number, headings, text in code_spans(page):
            where = f"{page.rel}:{number}"
            if command_start(tokenize(text)) is not None:
                checker.check_line(where, text)
            elif text.startswith("--") and manual(page.rel):
                checker.check_flags_only(where, headings, text)
    return checker


# --- files ---------------------------------------------------------------------------------


def markdown_files(root: Path) -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.md"],
            cwd=root, capture_output=True, check=True,
        ).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = [p.relative_to(root).as_posix() for p in root.rglob("*.md")]
    out = []
    for rel in listed:
        if not rel or rel.startswith(EXCLUDED_DIRS) or "node_modules/" in rel:
            continue
        if (root / rel).is_file():
            out.append(root / rel)
    return sorted(set(out))


def check(root: Path, files: list[Path], binaries: Binaries, stats: dict | None = None) -> list[str]:
    failures: list[str] = []
    pages = {f.resolve(): read_page(f.resolve(), root.resolve()) for f in files}
    links_seen = check_links(pages, root.resolve(), failures)
    checker = check_commands(pages, binaries, failures)
    if stats is not None:
        stats.update(links=links_seen, commands=checker.commands, flags=checker.flags)
    return failures


# --- self-test -----------------------------------------------------------------------------

BROKEN_PAGE = """# A page

## Good section

Fine: [the other page](other.md), [its heading](other.md#a-heading), [here](#good-section),
`devdb db create NAME --project P --ttl 72h`, `devdb-proxy --routes-from URL`.

```sh
$ DEVDB_SERVER=http://x devdb project list --json | jq .
devdb db stop NAME | start NAME | protect NAME [--off]
devdb db connect kate-pg -- --no-psqlrc
devdb db ls --project shop; devdb config set-api URL   # hidden aliases
devdb project create shop \\
    --from https://example.com/shop.dump --no-wait
```

## Broken

A [missing page](missing.md), [a missing heading](other.md#no-such-heading) and [here](#nowhere).

```sh
devdb db create kate-pg --project shop --bogus-flag
devdb db frobnicate kate-pg
devdb config set-apx URL
devdb project create shop \\
    --from https://example.com/shop.dump --also-bogus
devdb db create NAME --project P
                [--ttl 72h] [--bogus-in-synopsis]
```

`devdb-proxy --no-such-proxy-flag` and, standalone, `--not-a-flag-anywhere`.

## `devdb-proxy` flags

`--wake-timeout` is the proxy's; `--idle-stop-after` is the controller's, not the proxy's.
"""

OTHER_PAGE = "# Other\n\n## A heading\n\nBack to [the page](page.md#good-section).\n"

# (text of the line, what its failure names): the line numbers are found in the page.
EXPECTED_ON = [
    ("A [missing page]", "missing.md"),
    ("A [missing page]", "#no-such-heading"),
    ("A [missing page]", "#nowhere"),
    ("--bogus-flag", "--bogus-flag"),
    ("devdb db frobnicate", "'frobnicate'"),
    ("devdb config set-apx", "'set-apx'"),
    ("devdb project create shop \\\n    --from https://example.com/shop.dump --also-bogus", "--also-bogus"),
    ("devdb db create NAME --project P\n", "--bogus-in-synopsis"),
    ("--no-such-proxy-flag", "--no-such-proxy-flag"),
    ("--no-such-proxy-flag", "--not-a-flag-anywhere"),
    ("`--idle-stop-after`", "--idle-stop-after: no such flag of `devdb-proxy`"),
]


def expected() -> list[tuple[str, str]]:
    out = []
    for needle, what in EXPECTED_ON:
        line = BROKEN_PAGE[: BROKEN_PAGE.index(needle)].count("\n") + 1
        out.append((f"docs/page.md:{line}", what))
    return out


def self_test(binaries: Binaries) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "docs").mkdir()
        (root / "docs" / "page.md").write_text(BROKEN_PAGE, encoding="utf-8")
        (root / "docs" / "other.md").write_text(OTHER_PAGE, encoding="utf-8")
        failures = check(root, [root / "docs" / "page.md", root / "docs" / "other.md"], binaries)
    wanted = expected()
    ok = True
    for where, what in wanted:
        if not any(f.startswith(where + ":") and what in f for f in failures):
            print(f"self-test: not reported: {where}: {what}")
            ok = False
    for f in failures:
        if not any(f.startswith(where + ":") and what in f for where, what in wanted):
            print(f"self-test: reported wrongly: {f}")
            ok = False
    for f in failures:
        if any(f.startswith(where + ":") and what in f for where, what in wanted):
            print(f"self-test: found as it should: {f}")
    print("self-test: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--self-test"]
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print(__doc__.strip().split("\n\n")[0], file=sys.stderr)
        return 2
    bin_dir = Path(args[0]) if args else ROOT / "target" / "debug"
    if not bin_dir.is_absolute():
        bin_dir = Path.cwd() / bin_dir
    binaries = Binaries(bin_dir)
    if binaries.errors:
        for e in binaries.errors:
            print(f"docs check: {e}")
        return 1
    if "--self-test" in argv:
        return self_test(binaries)
    files = markdown_files(ROOT)
    stats: dict = {}
    failures = check(ROOT, files, binaries, stats)
    for f in failures:
        print(f)
    print(
        f"docs check: {len(files)} Markdown files, {stats['links']} relative links, "
        f"{stats['commands']} command lines and {stats['flags']} flags checked: {len(failures)} problem(s)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

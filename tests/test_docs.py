"""The README repeats numbers from the manifest for readers; these tests keep the two in step. Every page (README.md,
docs/*.md) is checked too: its relative links and anchors resolve, its avidzoo commands parse, its Python compiles and
its avidzoo imports work."""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import shlex
from pathlib import Path

import avidzoo
from avidzoo.cli import build_parser
from avidzoo.config import resolve_weights
from avidzoo.manifest import get_manifest

from conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_readme_opens_with_install_and_test_commands():
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert block == ['pip install -c constraints.txt ".[dev,ray,remote]"', "pytest"]
    assert README.index("```bash") < README.index("## ")


def test_readme_weights_table_matches_manifest():
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^\| `([\w.]+)` \| ([^|]+) \| ([^|]+) \| (yes|no) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+|-) \| ([\w/]+) "
        r"\| ([^|]+) \|$",
        README, re.M)}
    manifest = get_manifest()
    weights = manifest.data["weights"]
    assert set(rows) == set(weights)
    for name, (method, data, audio, ucf, hmdb, kin, protocol, lic) in rows.items():
        w = weights[name]
        spec, make_config = resolve_weights(name)
        title = manifest.model(spec.model).method_info["title"]
        assert title.lower().startswith(method.strip().lower()), (name, method)
        assert data.strip() == w["pretrain_data"] and lic.strip() == w["license"] and protocol == w["protocol"]
        assert (audio == "yes") == ("audio" in make_config()["modalities"])
        assert (float(ucf), float(hmdb)) == (w["metrics"]["ucf101_video@1"], w["metrics"]["hmdb51_video@1"])
        assert (None if kin == "-" else float(kin)) == w["metrics"].get("kinetics400_linear")


def test_readme_names_every_model():
    for name in avidzoo.list_models():
        assert f"`{name}`" in README, name


# -- every page: links, commands and Python blocks that still work ----------------------------------------------------
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def fenced(text: str, lang: str) -> list[str]:
    """The contents of the page's ```lang blocks."""
    return [body for tag, body in FENCE.findall(text) if tag == lang]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lowercased, punctuation other than - and _ dropped,
    spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of every heading outside code blocks (a repeated heading's get -1, -2, ...)."""
    found, count = set(), {}
    for line in FENCE.sub("", text).splitlines():
        if m := re.match(r"#{1,6} +(.+?) *#*$", line):
            s = slug(m.group(1))
            found.add(f"{s}-{count[s]}" if s in count else s)
            count[s] = count.get(s, 0) + 1
    return found


def broken_links(page: Path, root: Path = REPO_ROOT) -> list[str]:
    """Relative links of ``page`` (outside code) to a file that does not exist (or lies outside ``root``), or to an
    #anchor that names no heading of its page."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text(encoding="utf-8")))
    bad = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)(?: \"[^\"]*\")?\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http(s), mailto: not checked (no internet)
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or root.resolve() not in (file, *file.parents):
            bad.append(f"{page.name}: {target} (no such file)")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file.read_text(encoding="utf-8"))):
            bad.append(f"{page.name}: {target} (no heading #{anchor} in {file.name})")
    return bad


def strip_comment(line: str) -> str:
    """``line`` without its shell comment: a # at the start of a word, outside quotes."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def avidzoo_commands(block: str) -> list[tuple[str, list[str]]]:
    """Every avidzoo command line of a ```bash block, as (the line, its arguments after ``avidzoo``): plain
    ``avidzoo ...``, ``python -m avidzoo ...``, ``torchrun ... -m avidzoo ...``, after ``VAR=value`` prefixes, ``;``,
    ``&&`` or ``do``, and quoted (``sbatch --wrap "avidzoo ..."``). Continuation lines are joined; a shell loop's
    variable stands for its first value."""
    text = re.sub(r"\\\n\s*", " ", block)
    loop = dict(re.findall(r"\bfor (\w+) in (\S+)", text))
    found = []
    for line in text.splitlines():
        line = re.sub(r"\$\{?(\w+)\}?", lambda m: loop.get(m.group(1), m.group(0)), strip_comment(line)).strip()
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split, lex.commenters = True, ""
        words, command = list(lex), []
        for word in [*words, ";"]:
            if word.strip(";&|"):
                command.append(word)
                continue
            while command and (re.match(r"\w+=", command[0]) or command[0] in ("do", "then", "else", "time")):
                command.pop(0)
            if command[:1] == ["avidzoo"]:
                found.append((line, command[1:]))
            elif command[:1] in (["python"], ["python3"], ["torchrun"]) and "-m" in command:
                i = command.index("-m")
                if command[i + 1:i + 2] == ["avidzoo"]:
                    found.append((line, command[i + 2:]))
            found += [(w, shlex.split(w)[1:]) for w in command[1:] if w.startswith("avidzoo ")]
            command = []
    return found


def parse_errors(commands: list[tuple[str, list[str]]]) -> list[str]:
    """The commands the real parser refuses, each with argparse's message."""
    bad = []
    for line, argv in commands:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(argv)
        except SystemExit as e:
            if e.code:
                bad.append(f"{line}\n    {err.getvalue().strip().splitlines()[-1]}")
    return bad


def test_every_relative_link_and_anchor_resolves():
    assert len(DOCS) > 5
    bad = [b for page in DOCS for b in broken_links(page)]
    assert not bad, "\n".join(bad)


def test_readme_links_every_docs_page():
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)[#)]", README))
    assert {f"docs/{p.name}" for p in DOCS[1:]} <= linked


def test_every_documented_command_parses():
    commands = [(f"{page.name}: {line}", argv) for page in DOCS for block in fenced(page.read_text(), "bash")
                for line, argv in avidzoo_commands(block)]
    assert len(commands) > 20
    documented = {argv[0] for _, argv in commands if argv and not argv[0].startswith("-")}
    parser = build_parser()
    subcommands = set(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)
    assert documented == subcommands, sorted(subcommands ^ documented)  # every subcommand has an example
    bad = parse_errors(commands)
    assert not bad, "\n".join(bad)


def python_block_errors(block: str, name: str) -> list[str]:
    """What is wrong with a ```python block: it does not compile, or one of its avidzoo imports fails."""
    try:
        tree = ast.parse(block, name)
        compile(tree, name, "exec")
    except SyntaxError as e:
        return [f"{name}: {e}"]
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        if any(m == "avidzoo" or m.startswith("avidzoo.") for m in modules):
            try:
                exec(compile(ast.Module([node], []), name, "exec"), {})
            except ImportError as e:
                bad.append(f"{name}: {ast.unparse(node)}: {e}")
    return bad


def test_every_python_block_compiles_and_its_imports_work():
    blocks = [(f"{page.relative_to(REPO_ROOT)}, python block {i + 1}", block) for page in DOCS
              for i, block in enumerate(fenced(page.read_text(encoding="utf-8"), "python"))]
    assert len(blocks) > 5
    bad = [e for name, block in blocks for e in python_block_errors(block, name)]
    assert not bad, "\n".join(bad)


def test_the_checkers_find_a_broken_link_a_bad_command_and_a_bad_import(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Title\n\n## Models\n\n## Models\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text("# A title\n\n[ok](../README.md#models-1) [self](#a-title) [gone](nope.md) "
                    "[anchor](../README.md#no-such-heading) `[code](nope.md)` [web](https://example.com/x) "
                    "[outside](../../etc)\n")
    assert broken_links(page, tmp_path) == [
        "page.md: nope.md (no such file)", "page.md: ../README.md#no-such-heading (no heading #no-such-heading in "
        "README.md)", "page.md: ../../etc (no such file)"]
    block = ("export AVIDZOO_OFFLINE=1\npip install avidzoo  # avidzoo extract --nope\n"
             "avidzoo extract videos/ --model M \\\n    --out feats/ --clips-per-video 3  # a comment's quote: '\n"
             "torchrun --nproc_per_node 8 -m avidzoo list --pretrained\n"
             "for k in 2 5; do AVIDZOO_HOME=/tmp avidzoo extract v/ --model M --out f/ --clips-per-video $k; done\n"
             "sbatch --wrap \"avidzoo extract v/ --out f/ --no-such-flag\"\n"
             "python -m avidzoo list --pretrained --bogus\n")
    commands = avidzoo_commands(block)
    assert [argv for _, argv in commands] == [
        ["extract", "videos/", "--model", "M", "--out", "feats/", "--clips-per-video", "3"],
        ["list", "--pretrained"],
        ["extract", "v/", "--model", "M", "--out", "f/", "--clips-per-video", "2"],
        ["extract", "v/", "--out", "f/", "--no-such-flag"],
        ["list", "--pretrained", "--bogus"]]
    bad = parse_errors(commands)
    assert len(bad) == 2 and "--no-such-flag" in bad[0] and "--bogus" in bad[1]
    assert slug("Weights: where they come from (`AVIDZOO_WEIGHTS_DIR`), and how") == \
        "weights-where-they-come-from-avidzoo_weights_dir-and-how"
    assert python_block_errors("import avidzoo\nmodel = avidzoo.from_pretrained(", "b")[0].startswith("b: ")
    bad = python_block_errors("import torch\nfrom avidzoo.io import MediaFile, no_such_name\nx = frames[0]\n", "b")
    assert len(bad) == 1 and bad[0].startswith("b: from avidzoo.io import MediaFile, no_such_name: cannot import name")

"""Every code block of README.md runs as written, in order, in a fresh folder: the `indis ...` command lines through
the CLI entry point with exactly the README's arguments, the Python blocks in one shared namespace. A block may only
be skipped when an HTML comment right above it says why (`<!-- not run by the README test: ... -->`), and the test
checks that nothing else is skipped."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import torch

from indis.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- not run by the README test:[^>]*-->\s*)?```(\w*)\n(.*?)```", re.S)


def blocks():
    text = README.read_text()
    out = [(m.group(2), m.group(3), bool(m.group(1))) for m in BLOCK.finditer(text)]
    assert text.count("<!-- not run by the README test:") == sum(skip for _, _, skip in out)  # every marker skips a block
    return out


def test_readme_blocks_run_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    ran = {"bash": 0, "python": 0}
    for lang, code, skip in blocks():
        if skip:
            continue
        assert lang in ("bash", "python"), f"unexpected code block language {lang!r} in README.md"
        if lang == "bash":
            for line in code.strip().splitlines():
                argv = shlex.split(line, comments=True)
                assert argv[0] == "indis", line
                with torch.random.fork_rng():
                    rc = main(argv[1:])
                err = capsys.readouterr().err
                assert rc == 0, (line, err)
        else:
            exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 - our own README
        ran[lang] += 1
    assert ran["bash"] >= 1 and ran["python"] >= 2
    assert (tmp_path / "runs" / "samples" / "samples.png").is_file()
    assert (tmp_path / "runs" / "my-indis-schedule" / "README.md").is_file()

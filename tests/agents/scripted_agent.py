#!/usr/bin/env python3
"""A small but real coding agent for tests and the example plan.

It reads its prompt the way real agent CLIs do (``--prompt-file PATH``, the
``VIGIL_PROMPT_FILE`` variable, the last argument, or stdin) and follows instructions
written in it, one per line:

    WRITE path <<content>>           write content (``\\n`` escapes become newlines)
    APPEND path <<content>>          append content
    DELETE path                      remove a file
    BUGGY path <<wrong>> <<right>>   write ``wrong``, or ``right`` once the prompt holds a
                                     fix-round section (the previous attempt failed)
    SAY text                         print text
    EXIT code                        exit with ``code`` after the other instructions

Like a careless agent, it takes instructions from anywhere in the prompt, context files
included. ``--expect stdin|arg|file`` makes it fail unless the prompt came that way.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

FIX_ROUND_HEADER = "## The previous attempt failed"
_TEXT = r"<<(.*?)>>"


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


def read_prompt(args: argparse.Namespace) -> tuple[str, str]:
    """The prompt and how it arrived."""
    if args.prompt_file:
        return Path(args.prompt_file).read_text(), "file"
    env_file = os.environ.get("VIGIL_PROMPT_FILE")
    if env_file and Path(env_file).is_file():
        return Path(env_file).read_text(), "file"
    if args.prompt is not None:
        return args.prompt, "arg"
    return sys.stdin.read(), "stdin"


def main() -> int:
    parser = argparse.ArgumentParser(description="scripted coding agent for tests")
    parser.add_argument("--prompt-file")
    parser.add_argument("--expect", choices=["stdin", "arg", "file"])
    parser.add_argument("prompt", nargs="?")
    args = parser.parse_args()
    prompt, how = read_prompt(args)
    if args.expect and args.expect != how:
        print(f"scripted-agent: expected the prompt on {args.expect}, got it on {how}")
        return 3
    fix_round = FIX_ROUND_HEADER in prompt
    print(f"scripted-agent: prompt via {how}, {len(prompt)} chars, fix round: {fix_round}")
    exit_code = 0
    for line in prompt.splitlines():
        words = line.strip().split(maxsplit=2)
        if not words:
            continue
        verb = words[0]
        texts = [_unescape(t) for t in re.findall(_TEXT, line)]
        if verb in ("WRITE", "APPEND", "BUGGY") and len(words) >= 2 and texts:
            path = Path(words[1])
            path.parent.mkdir(parents=True, exist_ok=True)
            if verb == "BUGGY":
                content = texts[-1] if fix_round and len(texts) > 1 else texts[0]
            else:
                content = texts[0]
            with path.open("a" if verb == "APPEND" else "w") as fh:
                fh.write(content)
            print(f"scripted-agent: {verb.lower()} {path}")
        elif verb == "DELETE" and len(words) >= 2:
            Path(words[1]).unlink(missing_ok=True)
            print(f"scripted-agent: deleted {words[1]}")
        elif verb == "SAY":
            print(line.strip()[4:])
        elif verb == "EXIT" and len(words) >= 2 and words[1].isdigit():
            exit_code = int(words[1])
    return exit_code


if __name__ == "__main__":
    sys.exit(main())

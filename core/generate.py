"""Answer a prompt with a finished instruction-tuned (sft) run, headless.

    python -m core.generate --run RUN_DIR --prompt TEXT [--base] [--max-new-tokens N] [--temperature T]

Prints the tuned model's answer (or the base model's, with --base) on stdout; --json prints
{"prompt", "answer", "view"} instead. A problem is one `error:` line on stderr (exit 2).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from core.cli import cli_guard
from core.config import ConfigError
from core.evaluate import quiet_libraries


def generate(run_dir: str, prompt: str, tuned: bool = True, max_new_tokens: int = 64,
             temperature: float = 0.0) -> str:
    from core.infer import RunModel
    if not os.path.isdir(run_dir):
        raise ConfigError(f"run folder {run_dir} does not exist")
    if not prompt.strip():
        raise ConfigError("the prompt is empty; give --prompt TEXT")
    return RunModel(run_dir).generate(prompt, tuned=tuned, max_new_tokens=max_new_tokens,
                                      temperature=temperature)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.generate", description="Answer a prompt with a finished sft run.")
    ap.add_argument("--run", required=True, help="the run's folder (runs/<id>)")
    ap.add_argument("--prompt", required=True, help="the question or instruction")
    ap.add_argument("--base", action="store_true", help="answer with the base model, before tuning")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the same answer every time)")
    ap.add_argument("--json", action="store_true", help="print a JSON object instead of the bare answer")
    args = ap.parse_args(argv)

    def work() -> int:
        quiet_libraries()
        if not 1 <= args.max_new_tokens <= 4096:
            raise ConfigError(f"--max-new-tokens={args.max_new_tokens} is out of range; allowed: in [1, 4096]")
        if not 0.0 <= args.temperature <= 5.0:
            raise ConfigError(f"--temperature={args.temperature} is out of range; allowed: in [0.0, 5.0]")
        answer = generate(args.run, args.prompt, tuned=not args.base, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature)
        if args.json:
            print(json.dumps({"prompt": args.prompt, "answer": answer, "view": "base" if args.base else "tuned"},
                             ensure_ascii=False))
        else:
            print(answer)
        return 0

    return cli_guard(work)


if __name__ == "__main__":
    sys.exit(main())

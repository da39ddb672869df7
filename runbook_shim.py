"""What the runbook's root scripts share: run a `cardmint` command, re-running the script
with the project's virtualenv when the interpreter that started it cannot import CardMint.
Imported by production_cli.py and test_v03_production.py (both beside it)."""

import os
import sys
from pathlib import Path


def run(script: str, args: list[str]) -> int:
    """`cardmint *args`; `script` is the calling file, re-executed under .venv if needed."""
    try:
        from cardmint.cli.main import main as cardmint
    except ImportError:
        venv_python = Path(script).resolve().parent / ".venv" / "bin" / "python"
        if venv_python.exists() and not os.environ.get("CARDMINT_SHIM_REEXEC"):
            os.environ["CARDMINT_SHIM_REEXEC"] = "1"
            os.execv(venv_python, [str(venv_python), script, *sys.argv[1:]])
        print("CardMint is not installed: run `make run` or `make test` first", file=sys.stderr)
        return 3
    return cardmint(args)

"""`python -m saeclaims COMMAND`: the library's commands that run outside pytest.

    python -m saeclaims merge DIR... --out DIR   one report from the shards of a run (--sae-shard K/N)
"""

from __future__ import annotations

import sys

COMMANDS = {"merge": "saeclaims.merge"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())

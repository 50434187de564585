"""`python -m saeclaims.organism build --corpus DIR --out DIR [--seed N] [--smoke]`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m saeclaims.organism")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train tokenizer, model and SAEs; write the card")
    b.add_argument("--corpus", type=Path, default=Path("../shared/corpus/gutenberg"))
    b.add_argument("--out", type=Path, default=Path("fixtures/organism"))
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--smoke", action="store_true", help="tiny sizes, about a minute")
    args = p.parse_args(argv)

    from .build import BuildSpec, build, smoke_spec

    args.out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.StreamHandler(sys.stderr), logging.FileHandler(args.out / "build.log")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", handlers=handlers)
    if not args.corpus.is_dir():
        p.error(f"corpus folder {args.corpus} does not exist")
    spec = smoke_spec(args.seed) if args.smoke else BuildSpec(seed=args.seed)
    card = build(args.corpus, args.out, spec)
    summary = {k: card[k] for k in ("eval_loss", "w_pos_top3_share")}
    summary["saes"] = {k: {"l0": v["in_context"]["l0"], "ev": v["in_context"]["explained_variance"]}
                       for k, v in card["saes"].items()}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

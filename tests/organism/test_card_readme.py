"""The card's README is the card's numbers: marks met and missed are said, the figure is written."""

import json

from saeclaims.organism.__main__ import main
from saeclaims.organism.card_readme import LOSS_FIGURE, README, readme_text

CARD = {
    "seed": 0, "model_training_tokens": 20_000_000, "pos_to_token_norm": 0.77, "long_context_gain": 0.0016,
    "spec": {"context_ratio": 8, "quality_seqs": 32, "sae": {"d_sae": 2048},
             "model": {"n_layers": 4, "d_model": 128, "n_heads": 4, "d_mlp": 512, "d_vocab": 4096, "n_ctx": 1024}},
    "w_pos_top3_share": {"rows 1..127": 0.985},
    "eval_loss": {"overall": 3.65, "by_position": {"[8,64)": 3.78, "[0,8)": 4.5, "[512,1024)": 3.63}},
    "saes": {
        "ctx128/blocks.0.hook_resid_pre": {"hook_name": "blocks.0.hook_resid_pre", "ce_loss_score_short_context": 0.96,
                                           "in_context": {"explained_variance": 0.94, "l0": 21.5}},
        "ctx1024/blocks.0.hook_resid_pre": {"hook_name": "blocks.0.hook_resid_pre",
                                            "ce_loss_score_short_context": 0.94,
                                            "in_context": {"explained_variance": 0.88, "l0": 120.0}}},
    "control_ce_score_gap": {"blocks.0.hook_resid_pre": 0.02},
    "stages": {"model_s": 5200, "sae_s": {"a": 600, "b": 600}},
}


def test_readme_says_each_mark_met_or_missed():
    text = readme_text(CARD)
    assert "| W_pos: top-3 PC share of rows 1..127 | 0.985 | >= 0.9 (GPT-2: 0.957) | yes |" in text
    assert "| long-context gain: loss on [64,128) minus on [512,1024) | 0.0016 nats | >= 0.05 | **no** |" in text
    assert "[0,8) 4.500, [8,64) 3.780, [512,1024) 3.630" in text  # bins in position order
    assert "| ctx128/blocks.0.hook_resid_pre | 0.940 | 21.5 | 0.9600 | +0.0200 **no** |" in text
    assert "| ctx1024/blocks.0.hook_resid_pre | 0.880 **no** | 120.0 **no** | 0.9400 **no** | - |" in text
    assert "model 87 min, SAEs 20 min" in text


def test_card_subcommand_writes_readme_and_figure(tmp_path):
    (tmp_path / "card.json").write_text(json.dumps(CARD))
    assert main(["card", "--out", str(tmp_path)]) == 0
    assert (tmp_path / README).read_text() == readme_text(CARD)
    assert (tmp_path / LOSS_FIGURE).read_bytes()[:4] == b"\x89PNG"

"""Checked against the peer implementation: on the organism, the `sae` variant's CE-loss score
(against zero ablation) agrees with sae_lens's own `evals.run_evals`, and its KL with sae_lens's
`get_recons_loss` (the function run_evals calls), on the same SAE and tokens.

run_evals averages KL over all T positions, ours covers the T-1 positions that have a next token, so
KL is compared token by token on those; the CE score uses the same positions in both."""

import numpy as np
import pytest
import torch

from saeclaims.splice import measure
from saeclaims.subjects import load_organism, organism_dir

pytestmark = pytest.mark.skipif(not (organism_dir() / "card.json").exists(), reason="organism not built")
N_SEQS, SEQ_LEN = 8, 256


@pytest.fixture(scope="module")
def organism():
    return load_organism(n_seqs=N_SEQS, seq_len=SEQ_LEN)


def sae_lens_metrics(subject, hook):
    from datasets import Dataset
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler
    from sae_lens.training.activations_store import ActivationsStore

    sae = subject.saes[hook]
    data = Dataset.from_dict({"input_ids": subject.tokens.tolist()})
    store = ActivationsStore.from_sae(subject.model, sae, data, context_size=SEQ_LEN, streaming=False,
                                      store_batch_size_prompts=N_SEQS, n_batches_in_buffer=4,
                                      train_batch_size_tokens=1024)
    assert torch.equal(store.get_batch_tokens(N_SEQS), subject.tokens)  # the very same tokens
    store.iterable_sequences = store._iterate_tokenized_sequences()
    cfg = EvalConfig(batch_size_prompts=N_SEQS, n_eval_reconstruction_batches=1, compute_kl=True,
                     compute_ce_loss=True, n_eval_sparsity_variance_batches=1)
    metrics, _ = run_evals(sae, store, subject.model, ActivationScaler(), cfg,
                           exclude_special_tokens=[subject.bos_token_id])
    return metrics["model_performance_preservation"]


def sae_lens_kl_per_token(subject, hook):
    from sae_lens.evals import get_recons_loss
    from sae_lens.training.activation_scaler import ActivationScaler

    out = get_recons_loss(subject.saes[hook], subject.model, ActivationScaler(), subject.tokens, compute_kl=True,
                          compute_ce_loss=False, ignore_tokens=[subject.bos_token_id])
    return out["kl_div_with_sae"][:, :-1].numpy()


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_pre", "blocks.2.hook_resid_pre", "blocks.3.hook_resid_post"])
def test_ce_score_and_kl_match_sae_lens(organism, hook):
    perf = sae_lens_metrics(organism, hook)
    m = measure(organism, [hook], ("zero", "sae"), progress=False)
    # sae_lens averages over positions whose input token is not special; so do we here
    mask = (organism.tokens[:, :-1] != organism.bos_token_id).numpy()
    clean = m.clean_ce[mask].mean()
    zero = m.get("zero", hook, "ce")[mask].mean()
    sae = m.get("sae", hook, "ce")[mask].mean()
    ce_score = (zero - sae) / (zero - clean)
    assert abs(ce_score - perf["ce_loss_score"]) <= 1e-3, (ce_score, perf)
    kl_ref = sae_lens_kl_per_token(organism, hook)
    kl = m.get("sae", hook, "kl")
    assert np.abs(kl - kl_ref).max() <= 1e-3
    assert abs(kl[mask].mean() - kl_ref[mask].mean()) <= 1e-4
    assert np.isclose(clean, perf["ce_loss_without_sae"], atol=1e-3)

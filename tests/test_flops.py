"""FLOP counts (flops.py) against what the kernels execute."""





def test_flop_counts_follow_what_the_kernels_execute():
    from saeclaims.flops import Shape, attention_share, layer_flops, sae_passes, workload_flops

    s = Shape(n_layers=4, d_model=128, d_mlp=512, d_vocab=4096, seq_len=512, d_sae=2048)
    assert layer_flops(s) == 2 * (4 * 128**2 + 2 * 128 * 512 + 2 * 512 * 128)  # the full T x T square
    assert layer_flops(s, "causal") < layer_flops(s)
    assert 0 < attention_share(s, "causal") < attention_share(s) < 1
    variants = ("zero", "sae", "random_error", "pos_repair_out", "token_then_pos")
    assert sae_passes(variants) == 4 and sae_passes(variants, shared_sae=True) == 2
    hooks = ["blocks.0.hook_resid_pre", "blocks.3.hook_resid_post"]
    plain = workload_flops(s, hooks, variants, 100)
    fused = workload_flops(s, hooks, variants, 100, attention="causal", shared_sae=True)
    assert fused["naive"] == plain["naive"] and fused["batched"] < plain["batched"]
    assert fused["bound"] > plain["bound"] > 1
    # the clean pass and its unembedding once; `zero` at a residual hook one row per batch of 4, inside a block all
    layer, unembed = layer_flops(s, "causal"), 2 * 128 * 4096
    for hook, layers, rows in (("blocks.0.hook_resid_pre", 4, 1 / 4), ("blocks.3.hook_resid_post", 0, 1 / 4),
                               ("blocks.0.hook_attn_out", 4, 1), ("blocks.1.hook_resid_mid", 3, 1)):
        suffix = layers * layer + unembed
        got = workload_flops(s, [hook], ("zero",), 1, attention="causal", batch_seqs=4)["batched"]
        assert got == 4 * layer + unembed + rows * suffix, hook
        assert workload_flops(s, [hook], ("zero",), 1, attention="causal")["batched"] == 4 * layer + unembed + suffix
        sae = workload_flops(s, [hook], ("sae",), 1, attention="causal", batch_seqs=4)["batched"]
        assert sae == 4 * layer + unembed + suffix + 2 * 2 * 128 * 2048  # one SAE round trip

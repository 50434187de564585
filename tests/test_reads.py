"""What a run's claim tests read, per SAE id: markers' reads= checked, united, and narrowed to what is offered."""

from saeclaims.reads import ALWAYS, VariantReads, reads_problem

OFFERED = ("zero", "sae", "token_then_pos", "shift_pos", "random_error", "pos_repair_out")


def test_reads_must_be_a_tuple_of_known_variant_names():
    assert reads_problem(None) is None
    assert reads_problem(()) is None
    assert reads_problem(("sae", "shift_pos")) is None and reads_problem(["zero"]) is None
    assert "must be a tuple of variant names" in reads_problem("sae")  # a string is not a list of names
    assert "must be a tuple of variant names" in reads_problem(3)
    assert "unknown variants ['shift']" in reads_problem(("sae", "shift"))


def test_reads_unite_per_id_and_undeclared_reads_everything():
    r = VariantReads()
    r.add(["a"], ("shift_pos",))
    r.add(["a", "b"], ("zero",))
    r.add(["c"], ())
    assert r.variants_for("a", OFFERED) == ["zero", "sae", "shift_pos"]
    assert r.variants_for("b", OFFERED) == ["zero", "sae"]
    assert r.variants_for("c", OFFERED) == list(ALWAYS)
    assert r.variants_for("not-read", OFFERED) == list(ALWAYS)  # the figures' series read the SAE everywhere
    r.add(["b"], None)  # a test that declares nothing reads every variant ...
    r.add(["b"], ("zero",))  # ... whatever else is declared there later
    assert r.variants_for("b", OFFERED) == list(OFFERED)
    assert r.variants_for("a", OFFERED) == ["zero", "sae", "shift_pos"]


def test_only_offered_variants_are_asked_for():
    r = VariantReads()
    r.add(["a"], ("reencode", "mean", "shift_pos"))  # reencode runs in its own call; mean no claim reads
    assert r.variants_for("a", OFFERED) == ["sae", "shift_pos"]


def test_a_run_notes_the_reads_of_its_selected_claim_tests_per_sae_id():
    """A per-hook claim test reads at its row's SAE id; a test whose scope has one row for the subject (across
    hooks, the model) may read any id; reference rows read no measurements."""
    from types import SimpleNamespace

    from saeclaims.catalog import Catalog, Claim
    from saeclaims.marker import CLAIM_MARKER, ClaimMarker
    from saeclaims.session import ClaimSession

    def claim(cid, scope):
        return Claim(cid, "toy", "s", "https://example.org", "w", "stat", ">", 0.0, "why", scope)

    def item(cid, row, reads=None, reference=None):  # as collection leaves it: the checked marker in the stash
        return SimpleNamespace(stash={CLAIM_MARKER: ClaimMarker(cid, reads, reference, "subj", row)})

    ids = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    session = ClaimSession.__new__(ClaimSession)
    session.catalog = Catalog([claim("per-hook", "all"), claim("across", "across_resid_pre"),
                               claim("model", "model")])
    session.collected, session.reads = True, {}
    session.settings, session._all_reads = SimpleNamespace(shard_spec=None), None  # the whole run, no shard
    session._infos = {"subj": SimpleNamespace(sae_ids=ids, full_context_sae_ids=[], hook_of=lambda i: i)}
    session.note_reads([item("per-hook", ids[0], reads=("shift_pos",)), item("across", "resid_pre", reads=("zero",)),
                        item("model", "model", reads=()), item("model", "model", reference="ref")])
    reads = session.reads["subj"]
    assert reads.variants_for(ids[0], OFFERED) == ["zero", "sae", "shift_pos"]
    assert reads.variants_for(ids[1], OFFERED) == ["zero", "sae"]
    session.note_reads([item("per-hook", ids[1])])  # no reads=: everything at its row
    assert session.reads["subj"].variants_for(ids[1], OFFERED) == list(OFFERED)


def test_a_shard_measures_its_own_saes_as_the_whole_run_reads_them_and_others_for_its_rows_only():
    """--sae-shard 2/2 holds blocks.1; a per-hook test there (shift_pos) is in shard 2, the layer contrast (zero,
    at every resid_pre id) in shard 1. Shard 2 splices at blocks.1 what the whole run reads there; shard 1 at
    blocks.1 only what its own rows read (the contrast's zero)."""
    from types import SimpleNamespace

    from saeclaims.catalog import Catalog, Claim
    from saeclaims.marker import CLAIM_MARKER, ClaimMarker
    from saeclaims.session import ClaimSession
    from saeclaims.shards import ShardPlan, ShardSpec

    def claim(cid, scope):
        return Claim(cid, "toy", "s", "https://example.org", "w", "stat", ">", 0.0, "why", scope)

    def item(cid, row, reads=None):
        return SimpleNamespace(stash={CLAIM_MARKER: ClaimMarker(cid, reads, None, "subj", row)})

    ids = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    everything = [item("per-hook", ids[1], reads=("shift_pos",)), item("across", "resid_pre", reads=("zero",))]
    for k, mine in ((1, [everything[1]]), (2, [everything[0]])):
        session = ClaimSession.__new__(ClaimSession)
        session.catalog = Catalog([claim("per-hook", "all"), claim("across", "across_resid_pre")])
        session.collected, session.reads, session.problems = True, {}, []
        session._infos = {"subj": SimpleNamespace(sae_ids=ids, full_context_sae_ids=[], hook_of=lambda i: i)}
        session.settings = SimpleNamespace(shard_spec=ShardSpec(k, 2), subjects=("subj",))
        session._plan = ShardPlan.make(2, {"subj": ids})
        session._all_reads = session._reads_of(everything)
        session.note_reads(mine)
        at1 = session.reads["subj"].variants_for(ids[1], OFFERED)
        assert at1 == (["zero", "sae"] if k == 1 else ["zero", "sae", "shift_pos"]), k

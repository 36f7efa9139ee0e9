"""What the task sources share: the :class:`Source` interface and the checks of
sources with a fixed list of task names (GLUE, builtin)."""

from __future__ import annotations

from ..errors import ConfigError

# config keys that only the local source reads; prepare-task rejects them elsewhere
LOCAL_KEYS = ("train_file", "validation_file", "format", "quoting", "header", "column_map",
              "label_names")


class Source:
    """A task source (see :mod:`.registry`); subclasses set ``name`` and ``tasks`` and
    define :meth:`prepare`."""

    name: str = ""
    tasks: tuple[str, ...] | None = None  # None: any task name goes
    # the task kinds (workflow_scripts.taskkinds) whose rows it prepares; ``spec["task_kind"]``
    # says which one :meth:`prepare` is asked for
    kinds: tuple[str, ...] = ("label", "text")

    def label_count(self, key: str, spec: dict) -> int | None:
        """The task's label count when the config alone tells it, else None."""
        return None

    def official_metric(self, key: str, spec: dict) -> str | None:
        """The metric the task is scored by where its benchmark names one (GLUE), else None
        (:func:`.registry.task_metric` then falls back to accuracy)."""
        return None

    def train_rows(self, key: str, spec: dict, base_dir) -> int | None:
        """The rows of the task's training split before any cap, when they can be counted
        without preparing the task (the held-out split's config check), else None."""
        return None

    def check_config(self, key: str, spec: dict, base_dir, objective: str | None = None) -> None:
        """The checks a schema cannot express; raises ConfigError naming ``tasks.<key>``
        (``objective``: the families' that use the task, whose task kind it has; None:
        unused)."""

    def verbalisation(self, name: str | None) -> tuple[str, tuple[str, ...]] | None:
        """The task's default ``(template, label_words)`` as a choice task (a template over
        ``text_a``/``text_b``, one word per label in label order), or None when it has none
        (the task's config must then give both)."""
        return None

    def info_name(self, name: str | None, spec: dict) -> str | None:
        """The task name recorded in the info file (``name`` as given by default)."""
        return name

    def prepare(self, name: str | None, spec: dict, seed: int):
        """``(train, validation, label_names, origin, extra)`` of task ``name``."""
        raise NotImplementedError


class NamedSource(Source):
    """A source whose task names are a fixed list (``tasks.T.name``, default ``T``)."""

    def check_config(self, key: str, spec: dict, base_dir, objective: str | None = None) -> None:
        real = spec.get("name", key)
        if real not in self.tasks:
            raise ConfigError(
                f"tasks.{key}: unknown {self.name} task {real!r}; known {self.name} tasks are "
                f"{', '.join(self.tasks)} (set 'name:' if the key differs)"
            )
        for option in LOCAL_KEYS:
            if option in spec:
                raise ConfigError(
                    f"tasks.{key}.{option}: applies to local tasks only (this task's source is "
                    f"{self.name}); remove it"
                )

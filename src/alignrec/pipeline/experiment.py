"""One experiment: every stage from raw data to a served cache, with one config file.

An experiment config is a YAML/JSON mapping whose sections are the stages' own configs
(unknown keys are errors, as everywhere)::

    name: ml100k-demo
    out: runs/ml100k-demo          # the run folder
    data: {dataset: ml-100k}       # alignrec prepare (or {synthetic: {num_users: 48, ...}})
    llm: smollm2                   # the backbone of every LLM stage, named once (tiny: the backbone section)
    backbone: null                 # or {hidden_size: 32, ...}: the tiny random LLM that llm: tiny builds
    behaviour: {model: dccf, epochs: 60}   # collab model whose item embeddings feed the tokenizer
    baselines: [{model: sasrec}, {model: pop}]  # evaluated on the same split, shown beside
    tokenizer: {method: alignment, levels: 4, codebook_size: 256}
    tasks: {max_samples_per_task: 2000}
    finetune: {max_steps: 200}
    evaluate: {users: 200}
    precache: {max_users: 200}     # null = no pre-cache
    threads: 2

Layout ``run``: each stage writes the folder the architecture document names (RUN/dataset,
RUN/collab/<model>, RUN/tokenizer, RUN/tasks, RUN/finetune, RUN/evaluate, RUN/cache, RUN/report;
RUN/backbone when the experiment builds a tiny backbone).
Layout ``shared`` (sweeps): stages live in ``ROOT/stages/<stage>-<key>`` so experiments that
agree on a prefix of the pipeline compute it once.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from alignrec.config import ConfigError, from_mapping, load_config_file, to_dict
from alignrec.layout import FOLDERS
from alignrec.pipeline.stages import StageResult, run_stage
from alignrec.utils.log import get_logger

log = get_logger(__name__)

Layout = Literal["run", "shared"]
TINY = "tiny"  # the llm spec that means "the backbone this experiment builds"

# The entry modules of each stage's work: their source and that of everything they import from
# the package is part of the stage's key (alignrec.pipeline.fingerprint).
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "prepare": ("alignrec.data.prepare",),
    "synthetic": ("alignrec.data.prepare", "alignrec.data.synthetic"),  # prepare with data.synthetic
    "backbone": ("alignrec.llm.tiny",),
    "collab": ("alignrec.collab.trainer",),
    "tokenizer": ("alignrec.tokenizer.train",),
    "tasks": ("alignrec.tasks.build",),
    "finetune": ("alignrec.finetune.recipe",),
    "prefer": ("alignrec.prefer.recipe",),
    "evaluate": ("alignrec.evaluate.recipe",),
    "precache": ("alignrec.serve.precache",),
}


@dataclass
class SyntheticDataConfig:
    """A synthetic data set (:mod:`alignrec.data.synthetic`) instead of a source read by prepare."""

    num_users: int = field(default=48, metadata={"help": "users"})
    num_items: int = field(default=24, metadata={"help": "items (at least two per group)"})
    groups: int = field(default=4, metadata={"help": "item groups (rings for cyclic, clusters for clusters)"})
    length: int = field(default=8, metadata={"help": "interactions per user"})
    kind: Literal["cyclic", "clusters"] = field(default="cyclic", metadata={"help": "cyclic walks or cluster draws"})
    seed: int = field(default=0, metadata={"help": "random seed"})

    def __post_init__(self) -> None:
        if self.num_users < 1 or self.groups < 1 or self.length < 3:
            raise ValueError("num_users and groups must be >= 1 and length >= 3 (leave-one-out)")
        if self.num_items < 2 * self.groups:
            raise ValueError(f"num_items: need at least two items per group, got {self.num_items} for {self.groups} groups")


@dataclass
class TinyBackboneConfig:
    """A tiny random Llama (:func:`alignrec.llm.tiny.build_tiny_backbone`) whose word vocabulary
    covers the data set's item text; sections whose ``llm`` is ``tiny`` use it."""

    hidden_size: int = field(default=32, metadata={"help": "hidden size"})
    layers: int = field(default=2, metadata={"help": "decoder layers"})
    heads: int = field(default=2, metadata={"help": "attention heads"})
    initializer_range: float = field(
        default=0.2, metadata={"help": "std of the random weights (large enough for confident frozen rows, like a pretrained model)"}
    )
    seed: int = field(default=0, metadata={"help": "random seed of the weights"})

    def __post_init__(self) -> None:
        if min(self.hidden_size, self.layers, self.heads) < 1 or self.hidden_size % self.heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a positive multiple of heads ({self.heads}); layers >= 1")
        if not self.initializer_range > 0:
            raise ValueError(f"initializer_range must be > 0, got {self.initializer_range}")


@dataclass
class ExperimentConfig:
    """An experiment: which data, which models, which budgets. Sections are stage configs."""

    name: str = field(default="experiment", metadata={"help": "experiment name (used in reports and result files)"})
    out: str = field(default="", metadata={"help": "run folder (default runs/<name>)"})
    data: dict[str, Any] = field(
        default_factory=lambda: {"dataset": "ml-100k"},
        metadata={"help": "prepare settings; {synthetic: {...}, max_history: ...} builds a synthetic data set instead"},
    )
    llm: str = field(
        default="smollm2",
        metadata={"help": "the backbone of every LLM stage (the tokenizer's text alignment and fine-tuning), named once: "
                  "'smollm2' (offline GGUF), a .gguf file, a local HF folder, a hub id, or 'tiny' (the backbone section)"},
    )
    backbone: dict[str, Any] | None = field(
        default=None, metadata={"help": "tiny random backbone settings (null = none); llm: tiny uses it"}
    )
    behaviour: dict[str, Any] = field(
        default_factory=lambda: {"model": "dccf"},
        metadata={"help": "collab settings (train + model keys) of the behaviour model that feeds the tokenizer"},
    )
    baselines: list[dict[str, Any]] = field(
        default_factory=list, metadata={"help": "collab settings of further baselines scored on the same split"}
    )
    tokenizer: dict[str, Any] = field(default_factory=dict, metadata={"help": "tokenize train settings"})
    tasks: dict[str, Any] = field(default_factory=dict, metadata={"help": "tasks build settings"})
    finetune: dict[str, Any] = field(default_factory=dict, metadata={"help": "finetune settings"})
    prefer: dict[str, Any] | None = field(
        default=None, metadata={"help": "preference-alignment settings after fine-tuning (null = skip, the default); "
                                "when on, evaluate and precache read the model it selects"})
    evaluate: dict[str, Any] = field(default_factory=dict, metadata={"help": "evaluate settings"})
    precache: dict[str, Any] | None = field(default_factory=dict, metadata={"help": "precache settings (null = skip)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads for every stage (0 = torch's default)"})
    deterministic: bool = field(
        default=True,
        metadata={"help": "run every stage with torch's deterministic algorithms, so that a rerun gives bit-identical "
                  "outputs with several threads too (off: a little faster, not reproducible)"},
    )

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name must be a non-empty name without '/', got {self.name!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        self.stage_configs()  # validate every section now, not an hour into the run

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    def stage_configs(self) -> StageConfigs:
        return StageConfigs.from_experiment(self)


@dataclass
class StageConfigs:
    """The typed config of every stage, built from an experiment's sections."""

    prepare: Any
    synthetic: SyntheticDataConfig | None
    backbone: TinyBackboneConfig | None
    behaviour: tuple[Any, Any]  # (CollabConfig, model config)
    baselines: list[tuple[Any, Any]]
    tokenizer: Any
    tasks: Any
    finetune: Any
    evaluate: Any
    precache: Any | None
    prefer: Any | None = None

    @classmethod
    def from_experiment(cls, experiment: ExperimentConfig) -> StageConfigs:
        from alignrec.data.prepare import PrepareConfig
        from alignrec.evaluate.recipe import EvaluateConfig
        from alignrec.serve.precache import PrecacheConfig
        from alignrec.tasks.build import TasksConfig
        from alignrec.tokenizer.config import TokenizerConfig
        from alignrec.finetune.config import FinetuneConfig
        from alignrec.prefer.config import PreferConfig

        where = f"experiment {experiment.name!r}"
        baselines = [collab_configs(section, f"{where}: baselines[{i}]") for i, section in enumerate(experiment.baselines)]
        names = [train.model for train, _ in baselines]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: baselines: each model may appear once, got {names}")
        data = dict(experiment.data)
        synthetic = None
        if "synthetic" in data:
            synthetic = from_mapping(SyntheticDataConfig, data.pop("synthetic") or {}, source=f"{where}: data.synthetic")
            sources = sorted(set(data) & {"format", "dataset", "inter", "items", "dir", "category"})
            if sources:
                raise ConfigError(f"{where}: data: synthetic replaces the source; remove {sources}")
            data["format"] = "csv"  # the format write_synthetic records; no file is read
        backbone = None if experiment.backbone is None else from_mapping(
            TinyBackboneConfig, experiment.backbone, source=f"{where}: backbone")
        # tokenizer.llm: none (no text alignment) switches a tokenizer feature off; it names no backbone
        named = [name for name in ("tokenizer", "finetune")
                 if "llm" in getattr(experiment, name) and str(getattr(experiment, name)["llm"]).lower() != "none"]
        if named:
            raise ConfigError(f"{where}: {', '.join(f'{n}.llm' for n in named)}: the backbone is named once per "
                              f"experiment, by the top-level key llm (e.g. llm: {experiment.llm}); remove it from the section")
        configs = cls(
            prepare=from_mapping(PrepareConfig, data, source=f"{where}: data"),
            synthetic=synthetic,
            backbone=backbone,
            behaviour=collab_configs(experiment.behaviour, f"{where}: behaviour"),
            baselines=baselines,
            tokenizer=from_mapping(TokenizerConfig, {"llm": experiment.llm, **experiment.tokenizer}, source=f"{where}: tokenizer"),
            tasks=from_mapping(TasksConfig, experiment.tasks, source=f"{where}: tasks"),
            finetune=from_mapping(FinetuneConfig, {**experiment.finetune, "llm": experiment.llm}, source=f"{where}: finetune"),
            evaluate=from_mapping(EvaluateConfig, experiment.evaluate, source=f"{where}: evaluate"),
            precache=None
            if experiment.precache is None
            else from_mapping(PrecacheConfig, experiment.precache, source=f"{where}: precache"),
            # the pipeline evaluates the selected model in its evaluate stage
            prefer=None if experiment.prefer is None else from_mapping(
                PreferConfig, {"evaluate_test": False, **experiment.prefer}, source=f"{where}: prefer"),
        )
        if backbone is None and experiment.llm == TINY:
            raise ConfigError(f"{where}: llm: {TINY} needs a backbone section (the tiny model to build)")
        return configs


def collab_configs(section: dict[str, Any], source: str) -> tuple[Any, Any]:
    """(CollabConfig, model config) from one flat section; unknown keys are errors. A key set to null
    is unset (its default applies): ``--set behaviour.model=fmlp --set behaviour.train_stride=null``
    switches a SASRec section to a model that has no such setting."""
    from alignrec.collab.config import CollabConfig, resolve_configs
    from alignrec.collab.registry import get_model_spec, model_names

    section = {key: value for key, value in section.items() if value is not None}
    model = section.get("model")
    if model not in model_names():
        raise ConfigError(f"{source}: model: expected one of {model_names()}, got {model!r}")
    known = {f.name for f in dataclasses.fields(CollabConfig)} | {
        f.name for f in dataclasses.fields(get_model_spec(model).config_class) if f.init
    }
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} for model {model!r}; valid keys: {sorted(known)}")
    try:
        return resolve_configs(dict(section))
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None


# ----------------------------------------------------------------------------- loading


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML: numbers, null, lists)."""
    data = copy.deepcopy(data)
    for override in overrides:
        path, sep, raw = override.partition("=")
        if not sep or not path:
            raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. finetune.max_steps=100")
        value = yaml.safe_load(raw) if raw else ""
        node = data
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {override!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None, data: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read an experiment config file (or mapping) and apply ``--set`` overrides."""
    raw = dict(data) if data is not None else load_config_file(path) if path else {}
    raw = apply_overrides(raw, overrides or [])
    return from_mapping(ExperimentConfig, raw, source=str(path) if path else "experiment")


# ----------------------------------------------------------------------------- running


@dataclass
class ExperimentResult:
    """Where each stage's outputs are and what the run measured."""

    config: ExperimentConfig
    root: Path
    stages: dict[str, StageResult] = field(default_factory=dict)
    seconds: float = 0.0

    def out(self, stage: str) -> Path:
        return self.stages[stage].out


@contextlib.contextmanager
def torch_settings(threads: int, deterministic: bool) -> Iterator[None]:
    """Torch's thread count (0 = leave it) and deterministic algorithms for the stages of a run;
    the previous deterministic setting is restored afterwards.

    Why deterministic: with more than one thread, the CPU backward of advanced indexing with
    repeated indices (``embeddings[users]`` in the BPR losses of DCCF/LightGCN, a code's rows in
    the tokenizer) accumulates in a varying order, so two runs of the same seed drift apart in
    the last bits and then, through the tokenizer's assignment and the fine-tune, in the results.
    Ops without a deterministic kernel only warn (``warn_only``).
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


class ExperimentRunner:
    """Runs the stages of an experiment in order (see the module docstring for layouts)."""

    def __init__(self, config: ExperimentConfig, root: Path | None = None, layout: Layout = "run"):
        self.config = config
        self.configs = config.stage_configs()
        self.root = Path(root) if root is not None else config.run_dir
        self.layout = layout
        self.result = ExperimentResult(config, self.root)

    # -- where things go ------------------------------------------------------------------
    def place(self, stage: str, run_path: str, settings: Any, upstream: list[str], code: tuple[str, ...] = ()) -> Path:
        if self.layout == "run":
            return self.root / run_path
        from alignrec.pipeline.stages import stage_code, stage_key

        key = stage_key(stage, settings, upstream, stage_code(code).get("*", ""))
        return self.root / "stages" / f"{stage.replace('/', '-')}-{key[:12]}"

    def stage(self, name: str, run_path: str, settings: Any, upstream: list[str], work: Any, always: bool = False,
              code: tuple[str, ...] = ()) -> StageResult:
        out = self.place(name, run_path, settings, upstream, code)
        result = run_stage(name, out, settings, upstream, work, always=always, code=code)
        self.result.stages[name] = result
        return result


    # -- the pipeline ---------------------------------------------------------------------
    def run(self, until: str | None = None) -> ExperimentResult:
        """Run every stage (or up to and including ``until``)."""
        self._started = time.perf_counter()
        order = ["prepare", "backbone", "behaviour", "baselines", "tokenizer", "tasks", "finetune", "prefer", "evaluate", "precache",
                 "report"]
        if until is not None and until not in order:
            raise ConfigError(f"--until: expected one of {order}, got {until!r}")
        with torch_settings(self.config.threads, self.config.deterministic):
            for step in order:
                getattr(self, f"_{step}")()
                if step == until:
                    break
        self.result.seconds = round(time.perf_counter() - self._started, 1)
        return self.result

    def _prepare(self) -> None:
        from alignrec.data.prepare import prepare, write_dataset
        from alignrec.data.synthetic import synthetic_raw

        config, synthetic = self.configs.prepare, self.configs.synthetic
        settings = to_dict(config) if synthetic is None else {"prepare": to_dict(config), "synthetic": to_dict(synthetic)}
        code = STAGE_CODE["prepare" if synthetic is None else "synthetic"]

        def work(out: Path, resume: bool) -> None:
            # both write out.parent/dataset atomically
            if synthetic is None:
                prepare(config, out.parent)
            else:
                write_dataset(synthetic_raw(**to_dict(synthetic)), out.parent, config)

        base = self.root if self.layout == "run" else self.place("prepare", "", settings, [], code)
        self.result.stages["prepare"] = run_stage("prepare", base / "dataset", settings, [], work, code=code)

    @property
    def dataset_dir(self) -> Path:
        return self.result.out("prepare")

    def _backbone(self) -> None:
        if self.configs.backbone is None:
            return
        config = self.configs.backbone

        def work(out: Path, resume: bool) -> None:
            from alignrec.data import load_dataset
            from alignrec.llm.tiny import build_tiny_backbone

            model, tokenizer = build_tiny_backbone(words=load_dataset(self.dataset_dir).item_texts(), **to_dict(config))
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)

        self.stage("backbone", "backbone", to_dict(config), [self.result.stages["prepare"].key], work,
                   code=STAGE_CODE["backbone"])

    def _llm(self, config: Any) -> tuple[Any, list[str]]:
        """``config`` with ``llm: tiny`` pointing at the backbone stage's folder, and that stage's key
        (for the upstream list) when it does."""
        if config.llm != TINY:
            return config, []
        backbone = self.result.stages["backbone"]
        return dataclasses.replace(config, llm=str(backbone.out)), [backbone.key]

    def _collab(self, name: str, configs: tuple[Any, Any]) -> None:
        from alignrec.collab.trainer import train

        train_config, model_config = configs
        if self.config.threads and not train_config.threads:
            train_config = dataclasses.replace(train_config, threads=self.config.threads)
        settings = {"train": to_dict(train_config), "model": to_dict(model_config)}
        upstream = [self.result.stages["prepare"].key]

        def work(out: Path, resume: bool) -> None:
            train(train_config, model_config, self.dataset_dir, out, resume=resume)

        self.stage(name, f"collab/{train_config.model}", settings, upstream, work, code=STAGE_CODE["collab"])

    def _behaviour(self) -> None:
        self._collab("behaviour", self.configs.behaviour)

    def _baselines(self) -> None:
        behaviour_model = self.configs.behaviour[0].model
        for configs in self.configs.baselines:
            if configs[0].model == behaviour_model:
                continue  # already trained as the behaviour model
            self._collab(f"baseline/{configs[0].model}", configs)

    def _tokenizer(self) -> None:
        from alignrec.tokenizer.train import train_tokenizer

        config, backbone = self._llm(self.configs.tokenizer)
        behaviour = self.result.stages["behaviour"]
        upstream = [self.result.stages["prepare"].key, behaviour.key, *backbone]

        def work(out: Path, resume: bool) -> None:
            train_tokenizer(config, self.dataset_dir, embeddings=str(behaviour.out), out_dir=out)

        self.stage("tokenizer", FOLDERS["tokenize"], to_dict(config), upstream, work, code=STAGE_CODE["tokenizer"])

    def _tasks(self) -> None:
        from alignrec.tasks.build import run_build

        tokenizer = self.result.stages["tokenizer"]
        config = dataclasses.replace(self.configs.tasks, codes=str(tokenizer.out))
        upstream = [self.result.stages["prepare"].key, tokenizer.key]

        def work(out: Path, resume: bool) -> None:
            run_build(config, self.dataset_dir, out)

        self.stage("tasks", FOLDERS["tasks"], to_dict(config), upstream, work, code=STAGE_CODE["tasks"])

    def _finetune(self) -> None:
        from alignrec.finetune.recipe import finetune

        tokenizer, tasks = self.result.stages["tokenizer"], self.result.stages["tasks"]
        config = self.configs.finetune
        if self.config.threads and not config.torch_threads:
            config = dataclasses.replace(config, torch_threads=self.config.threads)
        config, backbone = self._llm(dataclasses.replace(config, tasks=str(tasks.out), codes=str(tokenizer.out)))
        config, teacher = self._teacher(config)
        upstream = [self.result.stages["prepare"].key, tokenizer.key, tasks.key, *backbone, *teacher]

        def work(out: Path, resume: bool) -> None:
            finetune(config, self.dataset_dir, out, resume=resume, overwrite=not resume)

        self.stage("finetune", FOLDERS["finetune"], to_dict(config), upstream, work, code=STAGE_CODE["finetune"])

    def _teacher(self, config: Any) -> tuple[Any, list[str]]:
        """``config`` with ``distill_from`` naming a stage ('behaviour', or a baseline's model name) replaced by that
        stage's folder, and the stage's key (for the upstream list); a folder is kept as given."""
        if not config.distill_weight:
            return config, []
        name = config.distill_from or "behaviour"
        behaviour = name in ("behaviour", self.configs.behaviour[0].model)
        stage = self.result.stages.get("behaviour" if behaviour else f"baseline/{name}")
        if stage is None:
            if not Path(name).is_dir():
                baselines = [c[0].model for c in self.configs.baselines]
                raise ConfigError(f"finetune.distill_from: {name!r} is not 'behaviour', a baseline of this experiment "
                                  f"({baselines}) or a collab run folder")
            return config, []
        return dataclasses.replace(config, distill_from=str(stage.out)), [stage.key]

    def _prefer(self) -> None:
        if self.configs.prefer is None:
            return
        from alignrec.prefer.recipe import prefer

        finetune_stage = self.result.stages["finetune"]
        config = self.configs.prefer
        if self.config.threads and not config.torch_threads:
            config = dataclasses.replace(config, torch_threads=self.config.threads)
        upstream = [self.result.stages["prepare"].key, finetune_stage.key]

        def work(out: Path, resume: bool) -> None:
            prefer(config, finetune_stage.out, out, data=self.dataset_dir, resume=resume, overwrite=not resume)

        self.stage("prefer", FOLDERS["prefer"], to_dict(config), upstream, work, code=STAGE_CODE["prefer"])

    def _model_stage(self) -> StageResult:
        """The stage whose model is evaluated and cached: the preference stage's when it ran, else fine-tuning's."""
        return self.result.stages.get("prefer") or self.result.stages["finetune"]

    def _evaluate(self) -> None:
        from alignrec.evaluate.recipe import evaluate

        finetune_stage = self._model_stage()
        config = self.configs.evaluate
        upstream = [self.result.stages["prepare"].key, finetune_stage.key]

        def work(out: Path, resume: bool) -> None:
            # an interrupted evaluation continues from its last finished shard; shards of other
            # settings cannot be current (the stage key decided these are), so they are replaced
            evaluate(config, finetune_stage.out, data=self.dataset_dir, out=out, resume=resume, on_mismatch="restart")

        self.stage("evaluate", FOLDERS["evaluate"], to_dict(config), upstream, work, code=STAGE_CODE["evaluate"])

    def _precache(self) -> None:
        if self.configs.precache is None or self.layout != "run":
            return
        from alignrec.serve.precache import precache

        config = self.configs.precache
        finetune_stage = self._model_stage()
        upstream = [self.result.stages["prepare"].key, finetune_stage.key]
        cache_dir = self.root / "cache"

        def work(out: Path, resume: bool) -> None:
            precache(
                config, finetune_stage.out, cache=str(out / "cache.sqlite"), data=self.dataset_dir,
                items_registry=out / "items_registry.json",
            )

        # Incremental by itself: it recomputes only users whose history or model changed.
        self.stage("precache", FOLDERS["precache"], to_dict(config), upstream, work, always=True, code=STAGE_CODE["precache"])
        assert self.result.stages["precache"].out == cache_dir

    def _report(self) -> None:
        if self.layout != "run":
            return
        from alignrec.pipeline.report import write_report

        self.result.seconds = round(time.perf_counter() - self._started, 1)
        write_report(self.result, self.root / "report")


def run_experiment(config: ExperimentConfig, until: str | None = None) -> ExperimentResult:
    return ExperimentRunner(config).run(until)

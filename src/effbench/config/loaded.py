"""The loaded config: validated once (defaults filled), every grid expanded (its :class:`Plan`).

Not to be confused with :mod:`effbench.plan`, the memory planners."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigError
from .finetune import FinetuneCell, finetune_cells
from ..plan.fit import Verdict
from .hub_cache import hub_dir, missing_files, offline_by
from .memory import check_memory, memory_verdicts
from .paths import missing_paths, tokenizer_is_path
from .pretrain import PretrainCell, export_cells, parallel_layout, pretrain_cells
from .schema import validate
from .serving import ServeCells, serve_cells
from .yaml_strict import Locations


@dataclass(frozen=True)
class Plan:
    config: dict[str, Any]  # validated, with the schema's defaults filled
    config_hash: str  # of the config as given (records carry it)
    pretrain: list[PretrainCell]
    exported: list[PretrainCell]
    finetune: list[FinetuneCell]
    serve: ServeCells
    memory: list[Verdict]  # predicted peak per GPU of each pretraining cell (cluster.gpu_memory_gb)

    @property
    def layout(self) -> dict[str, int]:
        """The parallel layout of every pretraining job."""
        return parallel_layout(self.config)

    @property
    def missing(self) -> list[tuple[str, str]]:
        """(config key, path) of the inputs that do not exist on this machine."""
        return missing_paths(self.config)

    def threads(self, stage: str) -> int:
        """The Snakemake ``threads:`` of a stage's jobs (1 for a stage the config does not have)."""
        c = self.config
        section = {"pretrain": c["pretrain"]["training"], "finetune": (c.get("finetune") or {}).get("training"),
                   "quantize": c.get("quantize"), "eval": c.get("eval"), "inference": c.get("inference")}[stage]
        return section["threads"] if section else 1

    def names(self, kind: str) -> list[str]:
        """The names a wildcard may take: size, technique, model (fine-tuning and serving), method,
        task, precision."""
        c, ft, q = self.config, self.config.get("finetune") or {}, self.config.get("quantize") or {}
        return sorted({
            "size": set(c["pretrain"]["sizes"]),
            "technique": set(c["pretrain"]["techniques"]),
            "model": set(ft.get("models", {})) | set(q.get("models", {})),
            "method": set(ft.get("methods", {})),
            "task": set(ft.get("tasks", {})),
            "precision": set(q.get("precisions", [])) | set((q.get("beyond_paper") or {}).get("precisions", [])),
        }[kind])


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def plan(config: dict[str, Any], where: Locations | None = None, *, refuse_unfit: bool = True,
         refuse_uncached: bool = True) -> Plan:
    """Validate the whole config and expand every grid; ConfigError names the bad key and,
    given where the config files write each key (``yaml_strict.load_files``), its file:line.
    ``refuse_unfit=False`` reports cells predicted not to fit memory instead of refusing them,
    ``refuse_uncached=False`` Hugging Face ids missing from the cache while offline (preflight
    lists every problem at once)."""
    try:
        p = _plan(config, check_memory if refuse_unfit else memory_verdicts)
        if refuse_uncached:
            check_cached(p)
        return p
    except ConfigError as e:
        if where is None:
            raise
        raise ConfigError(where.annotate(str(e))) from None


def _plan(config: dict[str, Any], memory: Callable[[dict[str, Any], list[PretrainCell]], list[Verdict]]) -> Plan:
    valid = validate(config)
    cells = pretrain_cells(valid)
    exported = export_cells(valid, cells)
    serve = serve_cells(valid, exported)
    ft = finetune_cells(valid, exported)
    return Plan(valid, config_hash(config), cells, exported, ft, serve, memory(valid, cells))


def hub_ids(p: Plan) -> list[tuple[str, str, bool]]:
    """(config key, Hugging Face id, whether its weights are loaded) of every id a cell loads."""
    out = {f"finetune.models.{c.model}.hf": (c.source.ref, True) for c in p.finetune if c.source.kind == "hf"}
    out.update({f"quantize.models.{c.model}.hf": (c.source.ref, True) for c in p.serve.quantize
                if c.source and c.source.kind == "hf"})
    d = p.config["data"]["pretrain"]
    if p.pretrain and d["source"] == "shards" and not tokenizer_is_path(d["shards"]["tokenizer"]):
        out["data.pretrain.shards.tokenizer"] = (d["shards"]["tokenizer"], False)
    return [(k, ref, weights) for k, (ref, weights) in out.items()]


def check_cached(p: Plan) -> None:
    """Offline (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set), every Hugging Face id a cell loads
    must be in the local cache with the files its stage reads: nothing would download it, and its
    job would fail hours into the run. ConfigError naming each key and id."""
    var = offline_by()
    if var is None:
        return
    lines = [f"config key `{key}`: {ref} is not in the local Hugging Face cache ({hub_dir()}: missing "
             f"{', '.join(missing)}) and {var} is set, so no job can download it; put it there first "
             f"(hf download {ref}) or unset {var}"
             for key, ref, weights in hub_ids(p) if (missing := missing_files(ref, weights))]
    if lines:
        raise ConfigError("\n".join(lines))

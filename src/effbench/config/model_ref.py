"""The one resolver of a model reference (``$defs/model_ref`` in the schema): exactly one of
``pretrained: <size>/<technique>`` (this pipeline's own Hugging Face export), ``hf: <id>``
or ``path: <dir>``. Fine-tuning and quantization models are both resolved here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..quantize.families import export_hf_config, linear_inputs  # pure: no torch
from .errors import ConfigError
from .hub_cache import local_config
from .pretrain import PretrainCell

KINDS = ("pretrained", "hf", "path")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # one of KINDS
    ref: str
    export: PretrainCell | None = None  # the exported pretraining cell of a `pretrained` reference

    @property
    def reference(self) -> dict[str, str]:
        """The reference as the config spells it (a fine-tuning cell's ``model_source``)."""
        return {self.kind: self.ref}

    @property
    def max_positions(self) -> int | None:
        """The context the model was trained for, where the pipeline knows it."""
        return self.export.settings["model"]["seq_length"] if self.export else None

    @property
    def described(self) -> str:
        """Where the model comes from, in words (for messages)."""
        return f"pretrain cell {self.ref}" if self.kind == "pretrained" else self.ref

    def hf_config(self) -> dict[str, Any] | None:
        """The model's Hugging Face config (the shape of the pipeline's export from its settings, a
        Hugging Face id's or a path's config.json); None where this machine does not have it."""
        if self.export:
            return export_hf_config(self.export.settings["model"])
        return local_config(self.kind, self.ref)

    def linear_inputs(self, ignore: tuple[str, ...] = ()) -> dict[str, int] | None:
        """The input size of each kind of linear layer int4 quantizes (what its groups split), by
        the name of the setting that makes it, for every family the pipeline exports (dense,
        MLA, MoE: :mod:`effbench.quantize.families`); None where the config is not here."""
        c = self.hf_config()
        return linear_inputs(c, ignore) if c else None

    def settings(self) -> dict[str, Any]:
        """The source as a quantize cell's settings record it (with the shape of a pipeline export)."""
        out: dict[str, Any] = {"kind": self.kind, "ref": self.ref}
        if self.export:
            m = self.export.settings["model"]
            out["linear_in_features"] = sorted(set((self.linear_inputs() or {}).values()))
            out["max_positions"] = m["seq_length"]
        return out


def resolve_model_ref(key: str, ref: dict[str, str], exported: list[PretrainCell]) -> ModelSource:
    """The source of the model at config key ``key``; a ``pretrained`` reference must name a
    pretraining cell the pipeline exports to Hugging Face format."""
    ((kind, value),) = ref.items()  # the schema allows exactly one key
    if kind != "pretrained":
        return ModelSource(kind, value)
    cells = {c.name: c for c in exported}
    if value not in cells:
        raise ConfigError(
            f"config key `{key}.pretrained`: {value!r} is not a pretraining cell exported to Hugging Face format "
            f"(pretrain.grid and pretrain.export_hf); exported: {sorted(cells)}"
        )
    return ModelSource(kind, value, cells[value])


def model_reference(model: dict[str, Any]) -> dict[str, str]:
    """The reference keys of a model entry (a fine-tuning model also has template, training ...)."""
    return {k: model[k] for k in KINDS if k in model}

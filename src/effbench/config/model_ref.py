"""The one resolver of a model reference (``$defs/model_ref`` in the schema): exactly one of
``pretrained: <size>/<technique>`` (this pipeline's own Hugging Face export), ``hf: <id>``
or ``path: <dir>``. Fine-tuning and quantization models are both resolved here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
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

    def settings(self) -> dict[str, Any]:
        """The source as a quantize cell's settings record it (with the shape of a pipeline export)."""
        out: dict[str, Any] = {"kind": self.kind, "ref": self.ref}
        if self.export:
            m = self.export.settings["model"]
            out["linear_in_features"] = sorted({m["hidden_size"], m["ffn_hidden_size"]})
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

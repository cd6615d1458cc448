"""The fine-tuning memory planner against the model LlamaFactory builds, on the CPU.

For LoRA, DoRA, freeze and full, LlamaFactory's own loader (``load_model`` with the arguments
the stage passes) builds the tiny Llama of the fixtures; one training step with torch AdamW
follows. The planner, given only the model's config.json and the method, must predict exactly:
parameters (total and trainable), the bytes of the weights, the gradients and AdamW's moments.
Activations (bytes autograd keeps at the end of the forward pass, under LlamaFactory's gradient
checkpointing) are compared with ACTIVATION_TOLERANCE: docs/memory-planner.md gives the ratios.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from stage import LORA, settings

from effbench.finetune.args import llamafactory_args
from effbench.plan.finetune import Cell, Zero, activation_bytes, backward_reach, estimate
from effbench.plan.ft_shape import Shape, trainable_params

METHODS = {"lora": LORA, "dora": {**LORA, "use_dora": True},
           "freeze": {"finetuning_type": "freeze", "freeze_trainable_layers": 1}, "full": {"finetuning_type": "full"}}
# Measured / predicted activations saved at the end of the forward pass (docs/memory-planner.md).
ACTIVATION_TOLERANCE = 0.05


def _storage_bytes(tensors: Any) -> int:
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(seen.values())


def _llamafactory_model(tmp_path, model_dir, task_dir, method: dict) -> tuple[Any, dict]:
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model, load_tokenizer

    s = settings("m", method)
    meta = json.loads((task_dir / "task.json").read_text())
    args = llamafactory_args(s, model_path=str(model_dir), dataset_dir=task_dir, datasets=meta["datasets"],
                             output_dir=tmp_path / "out", device="cpu")
    model_args, _, _, finetuning_args, _ = get_train_args(args)
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    return load_model(tokenizer, model_args, finetuning_args, is_trainable=True), s


@pytest.mark.parametrize("name", list(METHODS))
def test_prediction_matches_llamafactorys_model_and_one_step(tmp_path, tiny_model, task_dir, name):
    method = METHODS[name]
    model, s = _llamafactory_model(tmp_path, tiny_model, task_dir, method)
    shape = Shape.from_config(json.loads((tiny_model / "config.json").read_text()))
    t = s["training"]
    cell = Cell(shape=shape, trainable=trainable_params(shape, method), adapter=method["finetuning_type"] == "lora",
                precision="fp32", gpus=1, zero=Zero(), micro_batch=t["per_device_train_batch_size"],
                tokens_per_sample=t["cutoff_len"], checkpointing=True, **backward_reach(shape, method))
    est = estimate(cell)
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    assert sum(p.numel() for p in params) == est.params == cell.params
    assert sum(p.numel() for p in trainable) == cell.trainable
    assert _storage_bytes(params) == est.gpu["weights"]

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, shape.vocab, (t["per_device_train_batch_size"], t["cutoff_len"]), generator=g)
    frozen = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(x: torch.Tensor) -> torch.Tensor:
        st = x.untyped_storage()
        if st.data_ptr() not in frozen:
            saved[st.data_ptr()] = st.nbytes()
        return x

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = model(input_ids=ids, labels=ids).loss
    ratio = sum(saved.values()) / activation_bytes(cell).saved
    print(f"{name}: measured/predicted activations {ratio:.3f}")
    assert abs(ratio - 1) <= ACTIVATION_TOLERANCE, f"{name}: measured/predicted activations {ratio:.3f}"
    loss.backward()
    assert _storage_bytes(p.grad for p in trainable) == est.gpu["grads"]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    opt.step()
    moments = [st[k] for st in opt.state.values() for k in ("exp_avg", "exp_avg_sq")]
    assert _storage_bytes(moments) == est.gpu["optimizer"]

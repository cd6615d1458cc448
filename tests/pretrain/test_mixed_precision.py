"""bf16 parameters with fp32 master weights step exactly like fp32 AdamW on the masters."""

import copy

import torch

from effbench.pretrain.mixed_precision import MasterWeightAdamW


def test_master_weights_follow_fp32_adamw_and_round_back_to_bf16():
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))
    model = copy.deepcopy(ref).to(torch.bfloat16)
    with torch.no_grad():  # start both from the same (bf16-representable) weights
        for r, p in zip(ref.parameters(), model.parameters()):
            r.copy_(p.float())
    groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    opt = MasterWeightAdamW(groups, lr=1e-2, betas=(0.9, 0.95), fused=False, clip_grad=0.5)
    ref_groups = [{"params": [p for p in ref.parameters() if p.dim() >= 2], "weight_decay": 0.1},
                  {"params": [p for p in ref.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    ref_opt = torch.optim.AdamW(ref_groups, lr=1e-2, betas=(0.9, 0.95))
    for step in range(5):
        g = torch.Generator().manual_seed(step)
        for r, p in zip(ref.parameters(), model.parameters()):
            grad = (torch.randn(p.shape, generator=g) * 3).to(torch.bfloat16)
            p.grad = grad
            r.grad = grad.float()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        ref_opt.step()
        opt.step()
        opt.zero_grad()
        assert all(p.grad is None for p in model.parameters())
    ref_in_group_order = [p for g in ref_groups for p in g["params"]]
    for r, m, p in zip(ref_in_group_order, opt.master_params, opt.model_params):
        torch.testing.assert_close(m, r.detach(), rtol=1e-6, atol=1e-6)
        assert p.dtype == torch.bfloat16 and torch.equal(p.detach(), m.detach().to(torch.bfloat16))
    full = opt.master_state_dict(model)
    assert all(v.dtype == torch.float32 for v in full.values())
    torch.testing.assert_close(full["0.weight"], ref[0].weight.detach())


def test_state_dict_round_trip_restores_masters_and_model():
    model = torch.nn.Linear(8, 8).to(torch.bfloat16)
    opt = MasterWeightAdamW([{"params": list(model.parameters()), "weight_decay": 0.0}], lr=0.1,
                            betas=(0.9, 0.95), fused=False, clip_grad=0.0)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    before = [m.clone() for m in opt.master_params]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    opt.load_state_dict(saved)
    for m, b, p in zip(opt.master_params, before, model.parameters()):
        assert torch.equal(m, b) and torch.equal(p.detach(), b.to(torch.bfloat16))

"""Training loop: loss, intermediate supervision, strategies, resume, divergence, AMP options."""
from __future__ import annotations

import math
import os

import pytest
import torch

from cpm_lab.callbacks import Callback
from cpm_lab.data import SyntheticPoses
from cpm_lab.models.cpm import CPM, CPMConfig
from cpm_lab.train import (
    TrainConfig,
    Trainer,
    TrainingDiverged,
    cpm_loss,
    load_model,
    plan_phases,
    read_checkpoint,
    stage_losses,
)

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = dict(input_size=32, sigma=2.0, center_sigma=4.0, trunk_channels=6, feature_channels=4,
             stage1_channels=8, stage_channels=6, stage_kernel=3)


def toy_model(seed: int = 0, **kw) -> CPM:
    torch.manual_seed(seed)
    return CPM.from_preset("tiny", **{**SMALL, **kw})


def toy_data(n: int = 8, seed: int = 0) -> SyntheticPoses:
    return SyntheticPoses(n, 32, "easy", seed=seed)


def cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=2, progress=False, lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def owner(model: CPM, buffers: bool = False) -> dict[str, int]:
    """parameter (and optionally buffer, e.g. BatchNorm running stats) name -> stage that owns it."""
    named = dict(model.named_parameters())
    if buffers:
        named.update(model.named_buffers())
    names = {id(p): n for n, p in named.items()}
    return {names[id(p)]: t for t in range(1, model.config.num_stages + 1) for m in model.stage_modules(t)
            for p in list(m.parameters()) + (list(m.buffers()) if buffers else [])}


# ------------------------------------------------------------------------------------------------ loss
def test_loss_matches_hand_computation():
    # N=2 samples, P=2 parts + background, 1x2 maps, two stages.
    targets = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.5]], [[0.0, 0.5]]],
                            [[[0.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]]]])
    w = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])  # sample 2: part 0 invisible
    b1 = torch.zeros_like(targets)
    b2 = torch.full_like(targets, 0.5)
    # stage 1: sample 1: 1 + 0.25 + 0.25 = 1.5; sample 2 (part 0 masked): 1 + 1 = 2 -> (1.5 + 2) / 2
    # stage 2: sample 1: .25+.25 + .25+0 + .25+0 = 1.0; sample 2: (.25+.25) + (.25+.25) = 1 -> 1.0
    per = stage_losses([b1, b2], targets, w)
    assert torch.allclose(per, torch.tensor([1.75, 1.0]))
    total, _ = cpm_loss([b1, b2], targets, w, stage_weights=[2.0, 1.0])
    assert math.isclose(total.item(), 2 * 1.75 + 1.0)
    total, _ = cpm_loss([b1, b2], targets, w, intermediate_supervision=False)
    assert math.isclose(total.item(), 1.0)


def test_intermediate_supervision_controls_which_stages_get_direct_gradients():
    targets = torch.rand(2, 15, 4, 4)
    w = torch.ones(2, 15)
    for supervised, expect in ((True, [True, True, True]), (False, [False, False, True])):
        beliefs = [torch.rand(2, 15, 4, 4, requires_grad=True) for _ in range(3)]
        total, _ = cpm_loss(beliefs, targets, w, intermediate_supervision=supervised)
        grads = torch.autograd.grad(total, beliefs)
        assert [bool(g.abs().sum() > 0) for g in grads] == expect

    # Through a real model: without intermediate supervision stage 1's head is trained only via the
    # final stage, i.e. its gradient equals that of the final-stage loss alone.
    model = toy_model()
    images, cm = torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32)
    targets, w = torch.rand(2, 15, 4, 4), torch.ones(2, 15)
    head = model.stage1[-1].weight

    def grad(fn):
        model.zero_grad()
        fn(model(images, cm)).backward()
        return head.grad.clone()

    g_off = grad(lambda b: cpm_loss(b, targets, w, intermediate_supervision=False)[0])
    g_final = grad(lambda b: stage_losses(b, targets, w)[-1])
    g_on = grad(lambda b: cpm_loss(b, targets, w)[0])
    assert torch.allclose(g_off, g_final)
    assert not torch.allclose(g_on, g_off)


def test_no_intermediate_strategy_logs_all_stages_but_optimises_final():
    model = toy_model()
    h = Trainer(model, toy_data(), cfg(steps=2, strategy="no_intermediate")).fit()
    assert list(h["phase"]) == ["no_intermediate"] * 2
    assert (h["loss"] == h["loss_stage3"]).all()
    assert (h["loss_stage1"] > 0).all()


def test_caffe_loss_scale_is_half_the_mean():
    torch.manual_seed(0)
    targets, w = torch.rand(3, 15, 4, 4), (torch.rand(3, 15) > 0.3).float()
    beliefs = [torch.rand(3, 15, 4, 4) for _ in range(2)]
    mean, caffe = stage_losses(beliefs, targets, w), stage_losses(beliefs, targets, w, scale="caffe")
    assert torch.equal(caffe, mean / 2)
    assert torch.equal(cpm_loss(beliefs, targets, w, scale="caffe")[0], cpm_loss(beliefs, targets, w)[0] / 2)
    with pytest.raises(ValueError, match="scale must be one of"):
        stage_losses(beliefs, targets, w, scale="sum")
    # the trainer passes the config's choice: same init and batch, first-step losses halve
    h_mean = Trainer(toy_model(), toy_data(), cfg(steps=1)).fit()
    h_caffe = Trainer(toy_model(), toy_data(), cfg(steps=1, loss_scale="caffe")).fit()
    assert h_caffe["loss"].item() == h_mean["loss"].item() / 2 > 0


# ------------------------------------------------------------------------------------------------ strategies
def test_plan_phases_share_one_budget():
    e2e = plan_phases("end_to_end", 3, 10)
    assert [(p.steps, p.loss_stages) for p in e2e] == [(10, (1, 2, 3))]
    sw = plan_phases("stagewise", 3, 10)
    assert [(p.name, p.start, p.steps, p.train_stages, p.loss_stages, p.run_stages) for p in sw] == [
        ("stage1", 0, 4, (1,), (1,), 1), ("stage2", 4, 3, (2,), (2,), 2), ("stage3", 7, 3, (3,), (3,), 3)]
    ft = plan_phases("stagewise_finetune", 3, 10, finetune_fraction=0.5)
    assert [(p.name, p.steps) for p in ft] == [("stage1", 2), ("stage2", 2), ("stage3", 1), ("finetune", 5)]
    assert ft[-1].train_stages == (1, 2, 3) and ft[-1].loss_stages == (1, 2, 3)
    for plan in (e2e, sw, ft, plan_phases("no_intermediate", 3, 10)):
        assert sum(p.steps for p in plan) == 10
    with pytest.raises(ValueError, match="at least one step per stage"):
        plan_phases("stagewise", 3, 2)


class Watch(Callback):
    """Records, per step, which parameters require grad / have a gradient / changed."""

    def __init__(self):
        self.rows = []

    def on_train_start(self, trainer):
        self.prev = weights(trainer.model)

    def on_after_backward(self, trainer, step):
        self.cur = {n for n, p in trainer.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        self.req = {n for n, p in trainer.model.named_parameters() if p.requires_grad}

    def on_step_end(self, trainer, step, record):
        now = weights(trainer.model)
        changed = {n for n in self.req | set(now) if n in self.prev and not torch.equal(now[n], self.prev[n])}
        self.rows.append((record["phase"], self.req, self.cur, changed))
        self.prev = now


@pytest.mark.parametrize("strategy", ["end_to_end", "no_intermediate", "stagewise", "stagewise_finetune"])
def test_each_strategy_trains_exactly_its_stages(strategy):
    model = toy_model()
    assert model.config.batch_norm  # frozen stages must also keep their BatchNorm statistics
    own, own_all = owner(model), owner(model, buffers=True)
    watch = Watch()
    steps = 6 if strategy == "stagewise_finetune" else 3
    Trainer(model, toy_data(), cfg(steps=steps, strategy=strategy, finetune_fraction=0.5),
            callbacks=[watch]).fit()
    phases = [r[0] for r in watch.rows]
    expected = {"end_to_end": ["end_to_end"] * 3, "no_intermediate": ["no_intermediate"] * 3,
                "stagewise": ["stage1", "stage2", "stage3"],
                "stagewise_finetune": ["stage1", "stage2", "stage3", "finetune", "finetune", "finetune"]}[strategy]
    assert phases == expected
    for phase, req, has_grad, changed in watch.rows:
        stages = {int(phase[-1])} if phase.startswith("stage") else {1, 2, 3}
        trainable = {n for n, t in own.items() if t in stages}
        assert req == trainable, phase                      # frozen = requires_grad False
        assert has_grad <= trainable, phase
        assert changed <= {n for n, t in own_all.items() if t in stages}, phase  # nothing frozen moves
        for t in stages:  # every trained stage actually moves
            assert any(own.get(n) == t for n in changed), (phase, t)
    # after fit everything is trainable again
    assert all(p.requires_grad for p in model.parameters())


def test_stagewise_loss_is_on_the_stage_being_trained():
    h = Trainer(toy_model(), toy_data(), cfg(steps=3, strategy="stagewise")).fit()
    assert h.loc[0, "loss"] == h.loc[0, "loss_stage1"] and math.isnan(h.loc[0, "loss_stage2"])
    assert h.loc[1, "loss"] == h.loc[1, "loss_stage2"] and math.isnan(h.loc[1, "loss_stage3"])
    assert h.loc[2, "loss"] == h.loc[2, "loss_stage3"]


# ------------------------------------------------------------------------------------------------ schedules
def test_learning_rate_schedules_and_optimizer_defaults():
    data = toy_data()
    t = Trainer(toy_model(), data, cfg(steps=9, schedule="step", lr=1.0, lr_step=3, lr_gamma=0.5))
    assert [t.lr_at(s) for s in range(1, 10)] == [1, 1, 1, .5, .5, .5, .25, .25, .25]
    t = Trainer(toy_model(), data, cfg(steps=5, schedule="cosine", lr=1.0, min_lr_ratio=0.0))
    assert t.lr_at(1) == 1.0 and math.isclose(t.lr_at(3), 0.5) and t.lr_at(5) == 0.0
    t = Trainer(toy_model(), data, cfg(steps=4, schedule="constant", lr=0.1, warmup_steps=2))
    assert [t.lr_at(s) for s in range(1, 5)] == [0.05, 0.1, 0.1, 0.1]
    # per-phase schedule restarts in each stagewise phase
    t = Trainer(toy_model(), data, cfg(steps=6, strategy="stagewise", schedule="cosine", lr=1.0))
    assert t.lr_at(1) == t.lr_at(3) == t.lr_at(5) == 1.0
    # "auto": paper's SGD for the paper preset, Adam for the small ones
    paper_like = CPM(CPMConfig(name="paper", num_stages=2, **SMALL))
    t = Trainer(paper_like, data, TrainConfig(steps=2, batch_size=2))
    assert (t.opt_name, t.base_lr, t.weight_decay, t.schedule) == ("sgd", 8e-5, 5e-4, "step")
    t._enter_phase(0)
    assert isinstance(t.optimizer, torch.optim.SGD) and t.optimizer.defaults["momentum"] == 0.9
    t = Trainer(toy_model(), data, TrainConfig(steps=2, batch_size=2))
    assert t.opt_name == "adam" and t.base_lr == 5e-3 and t.channels_last  # tiny's preset defaults on CPU
    assert not Trainer(paper_like, data, TrainConfig(steps=2, batch_size=2)).channels_last
    tiny = TrainConfig.for_preset("tiny", steps=5)
    assert tiny.steps == 5 and tiny.batch_size == 8 and tiny.lr == 5e-3
    with pytest.raises(ValueError, match="no training defaults for preset 'huge'"):
        TrainConfig.for_preset("huge")


def test_lr_multipliers_and_bias_decay_become_param_groups():
    paper_like = CPM(CPMConfig(name="paper", num_stages=3, **SMALL))
    official = dict(optimizer="sgd", lr=1e-3, weight_decay=5e-4, stage1_lr_mult=5.0, bias_lr_mult=2.0,
                    bias_decay=False, schedule="constant")
    t = Trainer(paper_like, toy_data(), cfg(steps=2, **official))
    t.fit(until=1)
    group = {id(p): g for g in t.optimizer.param_groups for p in g["params"]}
    stage1 = {id(p) for p in paper_like.stage1.parameters()}
    for name, p in paper_like.named_parameters():
        bias = name.endswith(".bias")
        mult = (5.0 if id(p) in stage1 else 1.0) * (2.0 if bias else 1.0)  # stage-1 biases: 10x
        assert group[id(p)]["lr"] == pytest.approx(1e-3 * mult), name
        assert group[id(p)]["weight_decay"] == (0.0 if bias else 5e-4), name
    assert sorted(g["lr_mult"] for g in t.optimizer.param_groups) == [1.0, 2.0, 5.0, 10.0]
    # stagewise: the groups hold exactly the trainable parameters of the phase (here stage 2)
    t = Trainer(toy_model(), toy_data(), cfg(steps=4, strategy="stagewise", **official))
    t.fit(until=3)
    in_groups = [p for g in t.optimizer.param_groups for p in g["params"]]
    stage2 = [p for m in t.model.stage_modules(2) for p in m.parameters()]
    assert {id(p) for p in in_groups} == {id(p) for p in stage2} and len(in_groups) == len(stage2)
    assert all(p.requires_grad for p in in_groups)
    assert sorted(g["lr_mult"] for g in t.optimizer.param_groups) == [1.0, 2.0]  # no stage-1 parameter
    # defaults: one group with multiplier 1, as before these options existed
    t = Trainer(toy_model(), toy_data(), cfg(steps=2))
    t._enter_phase(0)
    assert [g["lr_mult"] for g in t.optimizer.param_groups] == [1.0]
    with pytest.raises(ValueError, match="stage1_lr_mult must be a positive number"):
        cfg(stage1_lr_mult=0)


def test_paper_preset_train_config_follows_the_official_solver():
    c = TrainConfig.for_preset("paper")
    assert (c.optimizer, c.batch_size, c.lr_gamma, c.momentum) == ("sgd", 16, 0.333, 0.9)
    assert (c.loss_scale, c.stage1_lr_mult, c.bias_lr_mult, c.bias_decay) == ("caffe", 5.0, 2.0, False)
    t = TrainConfig.for_preset("tiny")
    assert (t.loss_scale, t.stage1_lr_mult, t.bias_lr_mult, t.bias_decay) == ("mean", 1.0, 1.0, True)
    with pytest.raises(ValueError, match="unknown loss_scale"):
        TrainConfig(loss_scale="sum")


def test_gradient_clipping_bounds_the_norm():
    class Norm(Callback):
        def on_after_backward(self, trainer, step):
            self.before = torch.norm(torch.stack([p.grad.norm() for p in trainer.model.parameters()
                                                  if p.grad is not None]))

    model = toy_model()
    n = Norm()
    trainer = Trainer(model, toy_data(), cfg(steps=1, grad_clip=1e-3, optimizer="sgd", momentum=0.0,
                                              weight_decay=0.0, lr=1.0, schedule="constant"), callbacks=[n])
    before = weights(model)
    trainer.fit()
    delta = torch.norm(torch.stack([(model.state_dict()[k] - before[k]).norm() for k, _ in model.named_parameters()]))
    assert n.before > 1e-2  # the raw gradient is far larger than the clip ...
    assert delta <= 1e-3 * 1.001  # ... and the SGD step (lr 1) is the clipped gradient


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("strategy,steps,half", [("end_to_end", 7, 3), ("stagewise_finetune", 8, 5)])
def test_resume_is_bit_identical(tmp_path, strategy, steps, half):
    data = toy_data(n=10)  # 5 steps per epoch: the runs cross an epoch boundary
    straight = toy_model()
    h_straight = Trainer(straight, data, cfg(steps=steps, strategy=strategy)).fit()

    path = str(tmp_path / "ck.pt")
    first = toy_model()
    Trainer(first, data, cfg(steps=steps, strategy=strategy, checkpoint=path)).fit(until=half)
    assert read_checkpoint(path)["step"] == half
    resumed = toy_model(seed=123)  # different init: everything must come from the checkpoint
    torch.manual_seed(999)  # and a disturbed global RNG
    trainer = Trainer(resumed, data, cfg(steps=steps, strategy=strategy, checkpoint=path))
    h = trainer.fit(resume=path)
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert list(h["step"]) == list(range(1, steps + 1))
    assert h["loss"].tolist() == h_straight["loss"].tolist()
    assert read_checkpoint(path)["step"] == steps


def test_resumes_a_checkpoint_older_than_the_new_config_fields(tmp_path):
    data = toy_data(n=10)
    straight = toy_model()
    Trainer(straight, data, cfg(steps=4)).fit()
    path = str(tmp_path / "ck.pt")
    Trainer(toy_model(), data, cfg(steps=4, checkpoint=path)).fit(until=2)
    ck = torch.load(path, weights_only=True)
    for k in ("init", "init_std", "dropout", "input_convention"):
        del ck["model_config"][k]
    for g in ck["optimizer"]["param_groups"]:
        del g["lr_mult"]
    torch.save(ck, path)
    resumed = toy_model(seed=7)
    Trainer(resumed, data, cfg(steps=4, checkpoint=path)).fit(resume=path)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_request_stop_and_time_limit_end_fit_resumably(tmp_path):
    from cpm_lab.callbacks import TimeLimit

    class StopAt(Callback):
        def on_step_end(self, trainer, step, record):
            if step == 3:
                trainer.request_stop("enough")

    data = toy_data(n=10)
    straight = toy_model()
    Trainer(straight, data, cfg(steps=6)).fit()
    path = str(tmp_path / "ck.pt")
    model = toy_model()
    trainer = Trainer(model, data, cfg(steps=6, checkpoint=path), callbacks=[StopAt()])
    h = trainer.fit()
    assert trainer.step == 3 and list(h["step"]) == [1, 2, 3] and trainer.stop_reason == "enough"
    assert read_checkpoint(path)["step"] == 3  # written as at the end of a run
    resumed = toy_model(seed=5)
    h = Trainer(resumed, data, cfg(steps=6, checkpoint=path)).fit(resume=path)
    assert list(h["step"]) == list(range(1, 7))
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # stopping early lost nothing

    limit = TimeLimit(1e-9)  # expires during the first step
    trainer = Trainer(toy_model(), data, cfg(steps=6), callbacks=[limit])
    trainer.fit()
    assert trainer.step == 1 and limit.stopped_at == 1 and "time limit" in trainer.stop_reason
    with pytest.raises(ValueError, match="seconds"):
        TimeLimit(0)


def test_checkpoint_contents_load_model_and_mismatch(tmp_path):
    path = tmp_path / "ck.pt"
    model = toy_model()
    Trainer(model, toy_data(), cfg(steps=2, checkpoint=str(path))).fit()
    ck = torch.load(path, weights_only=True)  # safe loading works: tensors, dicts, numbers only
    assert ck["step"] == 2 and ck["model_config"]["name"] == "tiny"
    assert set(ck["rng"]) >= {"python", "numpy", "torch"} and ck["data"]["epoch"] == 0
    loaded = load_model(path, device="cpu")
    assert not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]  # atomic write left no temp file

    other = CPM.from_preset("small", **{k: v for k, v in SMALL.items()})
    with pytest.raises(ValueError, match="preset 'tiny' with 14 parts, model is 'small' with 14 parts"):
        Trainer(other, toy_data(), cfg(steps=2)).fit(resume=path)
    wider = toy_model(trunk_channels=8)
    with pytest.raises(ValueError, match="trunk_channels"):
        Trainer(wider, toy_data(), cfg(steps=2)).fit(resume=path)
    with pytest.raises(ValueError, match=r"batch_size=2 \(now 4\); lr=0.001 \(now 0.002\)"):  # every one named
        Trainer(toy_model(), toy_data(), cfg(steps=2, batch_size=4, lr=2e-3)).fit(resume=path)
    with pytest.raises(ValueError, match="cannot be shortened"):  # more steps extend the run; fewer are refused
        Trainer(toy_model(), toy_data(), cfg(steps=1)).fit(resume=path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable cpm_lab checkpoint"):
        load_model(tmp_path / "junk.pt")


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    class Poison(Callback):
        def on_step_end(self, trainer, step, record):
            if step == 3:  # corrupt stage 2's head: stages 2 and 3 (which reads stage 2) blow up
                with torch.no_grad():
                    trainer.model.stages[0][0].weight.fill_(float("nan"))

    path = tmp_path / "ck.pt"
    trainer = Trainer(toy_model(), toy_data(), cfg(steps=6, checkpoint=str(path), checkpoint_every=2),
                      callbacks=[Poison()])
    with pytest.raises(TrainingDiverged, match=r"step 4 in stage\(s\) 2, 3") as info:
        trainer.fit()
    assert info.value.step == 4 and info.value.stages == (2, 3)
    ck = read_checkpoint(path)
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert len(trainer.history) == 3


def test_refuses_to_checkpoint_non_finite_weights(tmp_path):
    path = tmp_path / "ck.pt"
    model = toy_model()
    trainer = Trainer(model, toy_data(), cfg(steps=2, checkpoint=str(path)))
    trainer.fit(until=1)
    before = path.read_bytes()
    with torch.no_grad():
        model.stage1[0].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="not overwriting"):
        trainer.save_checkpoint()
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------------------------ device options
def test_amp_fp16_callbacks_see_unscaled_gradients():
    class Grab(Callback):
        def on_after_backward(self, trainer, step):
            self.norm = trainer.model.stage1[-1].weight.grad.norm().item()

    norms = {}
    for amp in (False, True):
        g = Grab()
        t = Trainer(toy_model(), toy_data(), cfg(steps=1, amp=amp, amp_dtype="float16"), callbacks=[g])
        if amp:  # the default initial scale (2**16) overflows fp16 gradients on step 1
            t.scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
        t.fit()
        norms[amp] = g.norm
        assert t.scaler.is_enabled() == amp
    assert 0.5 < norms[True] / norms[False] < 2.0  # not x65536


def test_bf16_autocast_and_channels_last_on_cpu():
    model = toy_model()
    h = Trainer(model, toy_data(), cfg(steps=2, amp=True, channels_last=True)).fit()
    assert h["loss"].notna().all() and torch.isfinite(torch.tensor(h["loss"].tolist())).all()
    assert model.stage1[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_augment_is_called_on_device_before_encoding():
    calls = []

    def augment(batch, generator):
        calls.append((batch["image"].device, generator.device, tuple(batch["keypoints"].shape)))
        out = dict(batch)
        out["image"] = batch["image"].flip(-1)
        kp = batch["keypoints"].clone()
        kp[..., 0] = 31 - kp[..., 0]
        out["keypoints"] = kp
        return out

    h = Trainer(toy_model(), toy_data(), cfg(steps=2), augment=augment).fit()
    assert len(calls) == 2 and calls[0] == (torch.device("cpu"), torch.device("cpu"), (2, 14, 3))
    assert h["loss"].notna().all()


def test_history_eval_and_user_errors():
    model = toy_model()
    t = Trainer(model, toy_data(), cfg(steps=4, eval_every=2), eval_set=toy_data(4, seed=5))
    h = t.fit()
    assert {"step", "epoch", "phase", "loss", "loss_stage1", "loss_stage3", "lr", "images_per_s"} <= set(h.columns)
    assert h["pck@0.2_stage3"].notna().tolist() == [False, True, False, True]
    assert set(t.evals["step"]) == {2, 4} and set(t.evals["stage"]) == {1, 2, 3}
    with pytest.raises(ValueError, match="stage_weights has 2 entries"):
        Trainer(model, toy_data(), cfg(stage_weights=(1, 1)))
    with pytest.raises(ValueError, match="fewer than batch_size"):
        Trainer(model, toy_data(2), cfg(batch_size=4))
    with pytest.raises(ValueError, match="expects 32x32"):
        Trainer(model, SyntheticPoses(4, 64, "easy"), cfg(steps=1)).fit()
    with pytest.raises(ValueError, match="unknown strategy"):
        TrainConfig(strategy="greedy")
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        TrainConfig(steps=0)

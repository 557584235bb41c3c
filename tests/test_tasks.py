from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

import lightseg.models.backbones as backbones
from lightseg.datamodules import ShapesDataModule
from lightseg.errors import LightsegError
from lightseg.metrics import SegmentationMetrics
from lightseg.optim import PolyLR
from lightseg.tasks import SemanticSegmentationTask


def _task(**kwargs: object) -> SemanticSegmentationTask:
    defaults: dict[str, object] = {"arch": "unet", "backbone": "resnet18", "weights_backbone": None, "num_classes": 4}
    return SemanticSegmentationTask(**{**defaults, **kwargs})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> ShapesDataModule:
    return ShapesDataModule(
        root=str(tmp_path_factory.mktemp("tasks")), num_train=16, num_val=4, num_test=4, image_size=32, batch_size=4
    )


def _trainer(**kwargs: object) -> L.Trainer:
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,  # type: ignore[arg-type]
    )


def test_poly_lr_steps_per_iteration_over_the_whole_run(tiny_shapes: ShapesDataModule) -> None:
    task = _task(
        optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        lr_scheduler=functools.partial(PolyLR, power=0.9),
    )
    lrs: list[float] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = _trainer(max_epochs=2, limit_val_batches=0, callbacks=[Record()])
    trainer.fit(task, tiny_shapes)
    total = 2 * (16 // 4)
    assert trainer.lr_scheduler_configs[0].interval == "step"
    assert trainer.lr_scheduler_configs[0].scheduler.total_iters == total  # type: ignore[attr-defined]
    expected = [0.1 * (1 - i / total) ** 0.9 for i in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_poly_lr_warms_up_linearly_then_decays_over_the_rest() -> None:
    # SegFormer's recipe (MMSegmentation's LinearLR then PolyLR): 1e-6 of the rate rising over the
    # warm-up, then (1 - t / (T - warmup)) ** power; each parameter group keeps its own multiplier
    backbone = torch.nn.Parameter(torch.zeros(1))
    head = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [backbone], "lr": 6e-5}, {"params": [head], "lr": 6e-4}])
    scheduler = PolyLR(optimizer, total_iters=20, power=1.0, warmup_iters=4, warmup_factor=1e-6)
    seen = []
    for _ in range(21):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx([6e-5 * 1e-6, 6e-4 * 1e-6])
    assert seen[2] == pytest.approx([6e-5 * (1e-6 * 0.5 + 0.5), 6e-4 * (1e-6 * 0.5 + 0.5)])
    assert seen[4] == pytest.approx([6e-5, 6e-4])  # the warm-up's end: the base rates
    assert seen[12] == pytest.approx([6e-5 * 0.5, 6e-4 * 0.5])  # half-way through the 16 decaying steps
    assert seen[20] == [0.0, 0.0]
    with pytest.raises(LightsegError, match=r"PolyLR: warmup_iters must be >= 0 and warmup_factor in \[0, 1\]"):
        PolyLR(optimizer, warmup_iters=-1)


def test_epoch_schedulers_and_explicit_interval() -> None:
    task = _task(lr_scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1))
    config = task.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "epoch"
    assert config["lr_scheduler"]["monitor"] == "val_miou"
    stepped = _task(lr_scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1), lr_interval="step")
    assert stepped.configure_optimizers()["lr_scheduler"]["interval"] == "step"
    assert isinstance(_task().configure_optimizers(), torch.optim.AdamW)


def test_frozen_parameters_are_not_given_to_the_optimizer() -> None:
    task = _task(arch="fcn32s", backbone=None)
    optimizer = task.configure_optimizers()
    handed = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(task.model.net.upscore_final.weight) not in handed
    assert id(task.model.net.score_fr.weight) in handed


def test_aux_loss_is_weighted() -> None:
    task = _task(arch="deeplabv3", backbone="resnet50", aux_weight=0.25)
    mask = torch.randint(0, 4, (2, 8, 8))
    out = {"out": torch.randn(2, 4, 8, 8), "aux": torch.randn(2, 4, 8, 8)}
    expected = task.criterion(out["out"], mask) + 0.25 * task.criterion(out["aux"], mask)
    torch.testing.assert_close(task.compute_loss(out, mask), expected)
    without = _task(arch="deeplabv3", backbone="resnet50", aux_weight=0.0)
    assert without.model.net.aux_classifier is None


def test_median_frequency_weights_are_computed_before_training(tiny_shapes: ShapesDataModule) -> None:
    task = _task(class_weights="median_frequency")
    trainer = _trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(task, tiny_shapes)
    weights = task.criterion.class_weights
    assert weights.shape == (4,)
    assert weights[0] < 1.0 < weights[1:].max()  # background, the frequent class, is down-weighted
    # saved with the model, so a resumed or tested run uses the same weights
    assert torch.equal(task.state_dict()["criterion.class_weights"], weights)


def test_task_logs_dataset_level_metrics(tiny_shapes: ShapesDataModule) -> None:
    task = _task()
    trainer = _trainer()
    results = trainer.validate(task, tiny_shapes, verbose=False)[0]
    for key in ("val_loss", "val_miou", "val_pixel_acc", "val_macc", "val_fwiou", "val_mdice", "val_iou_background"):
        assert key in results
    assert 0.0 <= results["val_miou"] <= 1.0
    assert task.stage_metrics("val").confmat.sum() == 0  # reset after logging


def test_smp_offline_weights_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    real_probe = backbones.hub_unreachable
    seen = []

    def offline(*args: object, **kwargs: object) -> torch.nn.Module:
        if kwargs.get("encoder_weights") is None:
            return torch.nn.Module()  # the dry build, on the meta device: no weights, no network
        seen.append(constants.is_offline_mode())
        raise OSError("We couldn't connect to the Hub")

    monkeypatch.setitem(smp.MODEL_ARCHITECTURES_MAPPING, "unet", offline)
    # the hub unreachable: its client reads the cache only (instead of retrying for ~25 s), then says so
    monkeypatch.setattr(backbones, "hub_unreachable", lambda: "huggingface.co cannot be reached")
    with pytest.raises(LightsegError, match=r"smp encoder resnet18.*Hugging Face cache.*weights_backbone: null"):
        _task(weights_backbone="imagenet")
    assert seen == [True] and not constants.is_offline_mode()  # restored
    # reachable (or behind a proxy): the client's own way
    monkeypatch.setattr(backbones, "hub_unreachable", lambda: None)
    with pytest.raises(LightsegError, match=r"smp encoder resnet18"):
        _task(weights_backbone="imagenet")
    assert seen == [True, False]
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # a name that never resolves
    assert "hub.invalid cannot be reached" in str(real_probe(timeout=1.0))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert real_probe(timeout=1.0) is None  # only the proxy knows


def test_fcn8s_from_python(tmp_path: Path) -> None:
    task = SemanticSegmentationTask(arch="fcn8s", num_classes=5, weights_backbone=None)
    # the flat spelling of the network's settings lands in the group (hyperparameters and attribute alike)
    assert task.hparams["network"]["arch"] == "fcn8s" and task.hparams["network"]["backbone"] is None
    assert "arch" not in task.hparams and "weights_backbone" not in task.hparams
    assert task.network.arch == "fcn8s" and task.network.weights_backbone is None
    out = task(torch.rand(1, 3, 45, 61))
    assert out["out"].shape == (1, 5, 45, 61)
    assert np.isclose(float(task.criterion.class_weights.sum()), 5.0)


def test_bf16_mixed_precision_trains_with_float32_losses(tiny_shapes: ShapesDataModule) -> None:
    task = _task(loss="ce+dice")
    losses: list[torch.Tensor] = []

    class Record(L.Callback):
        def on_train_batch_end(
            self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, *args: object
        ) -> None:
            losses.append(outputs["loss"])  # type: ignore[index]

    trainer = _trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, precision="bf16-mixed", callbacks=[Record()]
    )
    trainer.fit(task, tiny_shapes)
    assert len(losses) == 2 and all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in losses)
    assert 0.0 <= float(trainer.callback_metrics["val_miou"]) <= 1.0


@pytest.mark.slow
def test_compiled_model_takes_every_input_size() -> None:
    # torch.compile for real (inductor, ~75 s here): evaluation images differ in size, so the
    # second size recompiles with dynamic shapes; the padding to the size divisor once made that fail
    plain, fast = _task(), _task(compile=True)
    fast.load_state_dict(plain.state_dict())
    fast.configure_model()
    plain.eval(), fast.eval()
    with torch.no_grad():
        for size in ((64, 64), (48, 80), (37, 53)):
            image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
            torch.testing.assert_close(fast(image)["out"], plain(image)["out"], rtol=1e-4, atol=1e-4)


def test_channels_last_and_compile_options(monkeypatch: pytest.MonkeyPatch) -> None:
    plain, fast = _task(), _task(channels_last=True, compile=True)
    fast.load_state_dict(plain.state_dict())
    compiled: list[tuple[torch.nn.Module, object]] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append((self, k.get("mode"))))
    fast.configure_model()
    fast.configure_model()  # idempotent
    assert compiled == [(fast.model, None)]  # true: torch's default mode
    _task(compile="max-autotune").configure_model()
    assert compiled[-1][1] == "max-autotune"
    with pytest.raises(LightsegError, match=r"compile must be true, false or a mode \(default, reduce-overhead"):
        _task(compile="fastest")
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(LightsegError, match=r"compile=True on a CPU needs a C\+\+ compiler.*apt-get install g\+\+"):
        _task(compile=True).configure_model()
    conv = fast.model.net.encoder.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    image = torch.rand(2, 3, 32, 32)
    plain.eval(), fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(image)["out"], plain(image)["out"], rtol=1e-4, atol=1e-4)
    assert list(fast.state_dict()) == list(plain.state_dict())


def test_mixed_size_evaluation_does_not_depend_on_batching() -> None:
    from lightseg.datamodules import pad_collate

    task = _task().eval()
    generator = torch.Generator().manual_seed(0)
    items = [
        {"image": torch.rand(3, h, w, generator=generator), "mask": torch.randint(0, 4, (h, w), generator=generator)}
        for h, w in [(30, 41), (45, 33), (30, 41)]
    ]
    together = pad_collate(items)
    assert together["size"] == [(30, 41), (45, 33), (30, 41)]
    with torch.no_grad():
        losses, scores = task.evaluate(together, "val")  # type: ignore[arg-type]
        for i, item in enumerate(items):
            alone_loss, alone_scores = task.evaluate(pad_collate([item]), "val")  # type: ignore[arg-type]
            h, w = item["mask"].shape
            torch.testing.assert_close(scores[i, :, :h, :w], alone_scores[0])
            torch.testing.assert_close(losses[i], alone_loss[0])
    batched, single = SegmentationMetrics(4), SegmentationMetrics(4)
    batched.update(scores, together["mask"])
    for item in items:
        with torch.no_grad():
            single.update(task.evaluate(pad_collate([item]), "val")[1], item["mask"][None])  # type: ignore[arg-type]
    assert torch.equal(batched.confmat, single.confmat)
    with torch.no_grad():
        prediction = task.predict_step({**together, "path": ["a", "b", "c"]}, 0)
    h, w = items[1]["mask"].shape
    assert torch.equal(prediction["mask"][1, :h, :w], scores[1, :, :h, :w].max(0).indices.to(torch.uint8))


def test_parameter_groups_follow_the_recipe_and_the_schedule_scales_each(tmp_path: Path) -> None:
    from lightseg.cli import build_cli

    config = str(Path(__file__).parents[1] / "configs" / "semantic" / "voc_aug_deeplabv2_resnet101.yaml")
    cli = build_cli(
        ["--config", config, "--model.init_args.weights_backbone=null", "--model.init_args.backbone=resnet50"],
        run=False,
    )
    task = cli.model
    assert task.hparams["head_lr_mult"] == 10.0
    task.lr_scheduler_factory = functools.partial(PolyLR, total_iters=10, power=0.9)  # the recipe's, for 10 steps
    configured = task.configure_optimizers()
    optimizer, poly = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"backbone", "head"}
    assert groups["backbone"]["lr"] == pytest.approx(2.5e-4) and groups["head"]["lr"] == pytest.approx(2.5e-3)
    assert groups["backbone"]["weight_decay"] == groups["head"]["weight_decay"] == 5e-4
    head = {id(p) for p in groups["head"]["params"]}
    assert head == {id(p) for p in task.model.net.aspp.parameters()}  # the classifier, nothing else
    assert len(groups["backbone"]["params"]) + len(head) == sum(1 for p in task.parameters() if p.requires_grad)
    for _ in range(5):
        optimizer.step()
        poly.step()
    factor = (1 - 5 / 10) ** 0.9
    assert groups["backbone"]["lr"] == pytest.approx(2.5e-4 * factor) and groups["head"]["lr"] == pytest.approx(
        2.5e-3 * factor
    )


def test_no_weight_decay_on_norms_and_biases() -> None:
    task = _task(no_weight_decay_on=["norm"], optimizer=functools.partial(torch.optim.SGD, lr=0.1, weight_decay=1e-4))
    groups = {g["name"]: g for g in task.configure_optimizers().param_groups}
    assert set(groups) == {"all", "all_no_decay"}  # head_lr_mult 1: one rate, no need to split by backbone
    norms = {id(p) for m in task.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert {id(p) for p in groups["all_no_decay"]["params"]} == norms
    assert groups["all_no_decay"]["weight_decay"] == 0.0 and groups["all"]["weight_decay"] == 1e-4
    assert groups["all"]["lr"] == groups["all_no_decay"]["lr"] == 0.1
    plain = _task().configure_optimizers().param_groups
    assert len(plain) == 1 and "name" not in plain[0]  # logged as lr-AdamW, as without groups
    biases = _task(no_weight_decay_on=["bias"]).configure_optimizers().param_groups
    no_decay = [p for g in biases if g["name"].endswith("no_decay") for p in g["params"]]
    assert len(no_decay) == sum(1 for name, _ in task.named_parameters() if name.endswith("bias"))
    with pytest.raises(LightsegError, match=r"head_lr_mult must be >= 0"):
        _task(head_lr_mult=-1.0)


def test_class_count_is_checked_against_the_data_at_setup(tiny_shapes: ShapesDataModule) -> None:
    trainer = _trainer(max_epochs=1)
    expected = r"model num_classes=7 disagrees with the data: ShapesDataModule has 4 .*with num_classes=4"
    with pytest.raises(LightsegError, match=expected):
        trainer.fit(_task(num_classes=7), datamodule=tiny_shapes)


def test_the_context_a_task_gives_its_callbacks(tiny_shapes: ShapesDataModule, tmp_path: Path) -> None:
    from lightseg.callbacks.checkpoints import ModelCheckpoint as RunCheckpoint
    from lightseg.callbacks.defaults import monitored_checkpoint
    from lightseg.contract import LightsegTask, SemanticPredictor, task_context
    from lightseg.tasks import InstanceSegmentationTask

    task = _task(boundary_ratio=0.01)
    assert isinstance(task, SemanticPredictor) and task.stage_results("val") is None
    before = task.context()  # before a run: the class indices, the default protocol
    assert (before.kind, before.num_classes, before.ignore_index) == ("semantic", 4, 255)
    assert before.class_names == ("0", "1", "2", "3")
    assert (before.monitor, before.mode) == ("val_miou", "max")
    trainer = _trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(task, tiny_shapes)
    after = task.context()  # set up: the data's names and the protocol the metrics use
    assert after.class_names == ("background", "circle", "square", "triangle")
    assert after.protocol.boundary_ratio == 0.01
    results = task.stage_results("val")
    assert results is not None and float(results["miou"]) == pytest.approx(trainer.callback_metrics["val_miou"])

    rcnn = InstanceSegmentationTask(arch="maskrcnn_resnet50_fpn", num_classes=3, weights_backbone=None,
                                    mask_threshold=0.4)  # fmt: skip
    context = rcnn.context()
    assert (context.kind, context.iou_types, context.mask_threshold) == ("detection", ("bbox", "segm"), 0.4)
    assert (context.monitor, context.mode) == ("val_segm_map", "max")
    assert task_context(torch.nn.Linear(1, 1)) is None and not isinstance(L.LightningModule(), LightsegTask)

    # the trainer's default checkpoint (the last epoch) becomes one on the task's metric ...
    default = L.pytorch.callbacks.ModelCheckpoint()
    configured: list[L.Callback] = [default]
    monitored_checkpoint(configured, task)
    (checkpoint,) = configured
    assert isinstance(checkpoint, RunCheckpoint) and (checkpoint.monitor, checkpoint.mode) == ("val_miou", "max")
    assert checkpoint.save_last and checkpoint.filename == "epoch{epoch:03d}-val_miou{val_miou:.4f}"
    # ... but a monitored checkpoint the user configured, or none at all, is left as it is
    own = [L.pytorch.callbacks.ModelCheckpoint(monitor="val_loss")]
    monitored_checkpoint(own, task)
    assert [cb.monitor for cb in own] == ["val_loss"]  # type: ignore[attr-defined]
    none: list[L.Callback] = []
    monitored_checkpoint(none, task)
    assert none == []

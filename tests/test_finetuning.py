"""Fine-tuning controls: a frozen backbone (whole run or first epochs), layer-wise learning-rate decay."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from lightseg.datamodules import ShapesDataModule
from lightseg.errors import LightsegError
from lightseg.optim import PolyLR
from lightseg.tasks import SemanticSegmentationTask


def _task(**kwargs: Any) -> SemanticSegmentationTask:
    defaults: dict[str, Any] = {"arch": "unet", "backbone": "resnet18", "weights_backbone": None, "num_classes": 4}
    return SemanticSegmentationTask(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> ShapesDataModule:
    return ShapesDataModule(
        root=str(tmp_path_factory.mktemp("finetune")), num_train=8, num_val=4, num_test=4, image_size=32, batch_size=4
    )


def _fit(task: SemanticSegmentationTask, data: ShapesDataModule, epochs: int, callbacks: list[Any]) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks,
    )  # fmt: skip
    trainer.fit(task, data)
    return trainer


def _encoder_state(task: SemanticSegmentationTask) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in task.model.net.encoder.state_dict().items()}


class Snapshots(L.Callback):
    """The encoder's weights and statistics, and the optimizer's state of its parameters, after each epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.optimizer_state: list[int] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        task: Any = pl_module
        self.states.append(_encoder_state(task))
        encoder = {id(p) for p in task.model.net.encoder.parameters()}
        self.optimizer_state.append(sum(1 for p in trainer.optimizers[0].state if id(p) in encoder))


def test_a_frozen_backbone_gets_no_gradient_no_optimizer_state_and_keeps_its_statistics(
    tiny_shapes: ShapesDataModule,
) -> None:
    task = _task(freeze_backbone=True)
    before = _encoder_state(task)
    decoder_before = {k: v.clone() for k, v in task.model.net.decoder.state_dict().items()}
    snapshots = Snapshots()
    trainer = _fit(task, tiny_shapes, 1, [snapshots])
    after = snapshots.states[0]
    assert all(torch.equal(before[k], after[k]) for k in before), "weights and BatchNorm statistics are kept"
    assert any(not torch.equal(v, task.model.net.decoder.state_dict()[k]) for k, v in decoder_before.items())
    assert snapshots.optimizer_state == [0]
    encoder = {id(p) for p in task.model.net.encoder.parameters()}
    grouped = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not encoder & grouped and grouped  # the encoder is in no group: no decay, no state, ever
    assert all(p.grad is None for p in task.model.net.encoder.parameters())


def test_a_backbone_frozen_for_the_first_epochs_then_trains(tiny_shapes: ShapesDataModule) -> None:
    task = _task(freeze_backbone=1, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01))
    before = _encoder_state(task)
    snapshots = Snapshots()
    _fit(task, tiny_shapes, 2, [snapshots])
    first, second = snapshots.states
    assert all(torch.equal(before[k], first[k]) for k in before)  # epoch 0: frozen (weight decay included)
    weights = [k for k in before if k.endswith("weight") and "bn" not in k]
    assert all(not torch.equal(first[k], second[k]) for k in weights)  # epoch 1: every layer trains
    running = [k for k in before if k.endswith("running_mean")]
    assert any(not torch.equal(first[k], second[k]) for k in running)  # its statistics too
    encoder_parameters = len(list(task.model.net.encoder.parameters()))
    assert snapshots.optimizer_state == [0, encoder_parameters]  # no state while frozen, every one after


@pytest.mark.parametrize(
    ("arch", "backbone", "first", "last"),
    [
        # DINOv2-S under DPT (timm's whole ViT): patch embedding, 12 blocks, the final norm
        ("dpt", "tu-vit_small_patch14_dinov2", "model.patch_embed.proj.weight", "model.norm.weight"),
        # ConvNeXt under UPerNet (timm's features_only wrapper, stages_0 for stages.0)
        ("upernet", "tu-convnext_atto", "model.stem_0.weight", "model.stages_3.blocks.1.mlp.fc2.weight"),
    ],
)
def test_layer_decay_gives_each_backbone_layer_its_rate(arch: str, backbone: str, first: str, last: str) -> None:
    task = _task(arch=arch, backbone=backbone, layer_decay=0.75, head_lr_mult=10.0,
                 optimizer=functools.partial(torch.optim.AdamW, lr=1e-4))  # fmt: skip
    task.lr_scheduler_factory = functools.partial(PolyLR, total_iters=10, power=1.0)
    configured = task.configure_optimizers()
    optimizer, poly = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    encoder = dict(task.model.net.encoder.named_parameters())
    layers = task.backbone_layers()
    deepest = max(layers.values())
    assert deepest >= 4
    prefix = "model.net.encoder."
    assert layers[prefix + first] == 0 and layers[prefix + last] == deepest
    for name, param in encoder.items():
        assert rate[id(param)] == pytest.approx(1e-4 * 0.75 ** (deepest - layers[prefix + name])), name
    assert rate[id(encoder[first])] == pytest.approx(1e-4 * 0.75**deepest)
    head = [p for n, p in task.named_parameters() if ".encoder." not in n]
    assert all(rate[id(p)] == pytest.approx(1e-3) for p in head)
    assert len(rate) == sum(1 for p in task.parameters() if p.requires_grad)  # every parameter, once
    for _ in range(5):
        optimizer.step()
        poly.step()
    moved = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert moved[id(encoder[first])] == pytest.approx(0.5 * 1e-4 * 0.75**deepest)  # the schedule scales each
    assert moved[id(head[0])] == pytest.approx(0.5 * 1e-3)


def test_fine_tuning_options_that_cannot_apply_are_one_line() -> None:
    with pytest.raises(LightsegError, match=r"layer_decay needs a timm backbone.*'resnet18' is not one"):
        _task(layer_decay=0.9).configure_optimizers()
    with pytest.raises(LightsegError, match=r"layer_decay must be in \(0, 1\]"):
        _task(layer_decay=1.5)
    with pytest.raises(LightsegError, match=r"freeze_backbone must be true, false or a number of epochs >= 0"):
        _task(freeze_backbone=-2)


def test_ema_weights_are_the_ones_validated_and_saved(tiny_shapes: ShapesDataModule, tmp_path: Path) -> None:
    # Lightning's EMAWeightAveraging in a lightseg run (trainer.callbacks in YAML): validation runs the
    # average of the weights after each step, the checkpoint holds it, and so does the model after fit
    from lightning.pytorch.callbacks import EMAWeightAveraging

    def weight(task: Any) -> torch.Tensor:
        return task.model.net.decoder.blocks[0].conv1[0].weight.detach().clone()

    class Watch(L.Callback):
        def __init__(self) -> None:
            self.ema: torch.Tensor | None = None  # computed here, by hand: 0.5 * average + 0.5 * weights
            self.validated: list[tuple[torch.Tensor, torch.Tensor]] = []

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
            current = weight(pl_module)
            self.ema = current if self.ema is None else 0.5 * self.ema + 0.5 * current

        def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
            assert self.ema is not None
            self.validated.append((weight(pl_module), self.ema.clone()))

    watch = Watch()
    task = _task(optimizer=functools.partial(torch.optim.AdamW, lr=1e-2))
    trainer = L.Trainer(
        max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[EMAWeightAveraging(decay=0.5), watch], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(task, tiny_shapes)
    assert len(watch.validated) == 2
    for validated, by_hand in watch.validated:
        torch.testing.assert_close(validated, by_hand)
    last = weight(task)  # after fit: the average, as test, predict and export see it
    assert watch.ema is not None
    torch.testing.assert_close(last, watch.ema)
    trainer.save_checkpoint(tmp_path / "ema.ckpt")
    saved = torch.load(tmp_path / "ema.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(saved["model.net.decoder.blocks.0.conv1.0.weight"], watch.ema)


def test_lora_trains_only_the_adapters_and_the_head_and_exports_merged(
    tiny_shapes: ShapesDataModule, tmp_path: Path
) -> None:
    pytest.importorskip("peft")
    from lightseg.export import ExportSettings, export_task

    task = _task(arch="dpt", backbone="tu-vit_small_patch14_dinov2", lora={"rank": 4, "alpha": 8, "targets": ["qkv"]},
                 optimizer=functools.partial(torch.optim.AdamW, lr=1e-2))  # fmt: skip
    assert task.hparams["lora"] == {"rank": 4, "alpha": 8, "dropout": 0.0, "targets": ["qkv"]}
    encoder = task.model.net.encoder
    adapters = {n for n, p in encoder.named_parameters() if "lora_" in n}
    assert len(adapters) == 2 * 12  # A and B on each of the 12 blocks' qkv
    assert {n for n, p in encoder.named_parameters() if p.requires_grad} == adapters
    before = {k: v.clone() for k, v in task.state_dict().items()}
    _fit(task, tiny_shapes, 1, [])
    after = task.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    backbone_changed = {k for k in changed if ".encoder." in k}
    assert backbone_changed and all("lora_" in k for k in backbone_changed)  # only the adapters in the backbone
    assert any(".decoder." in k for k in changed)  # the head trains whole

    image = torch.rand(1, 3, 70, 84)
    with torch.no_grad():
        expected = task.eval()(image)["out"]
    settings = ExportSettings("torchscript", str(tmp_path / "m.pt"), "logits", verify_sizes=[(56, 84), (45, 61)])
    assert all(f["ok"] for f in export_task(task, None, settings).verification)
    exported = torch.jit.load(str(tmp_path / "m.pt"))
    assert not any("lora" in n for n, _ in exported.named_parameters())  # merged: the plain network
    with torch.no_grad():  # merging reorders float sums: the export verification's own tolerance
        got = exported(image)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 + 1e-3 * float(expected.abs().max()))
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.999
    assert any("lora_" in n for n, _ in task.named_parameters())  # the task keeps its adapters


def test_lora_options_that_cannot_apply_are_one_line() -> None:
    pytest.importorskip("peft")
    none = r"lora targets \['qkv'\] match no linear layer of the backbone \(it has none"
    with pytest.raises(LightsegError, match=none):
        _task(lora={"rank": 4})  # a ResNet: convolutions only
    unknown = r"unknown lora setting\(s\) \['r'\]; known: \['rank', 'alpha', 'dropout', 'targets'\]"
    with pytest.raises(LightsegError, match=unknown):
        _task(arch="dpt", backbone="tu-vit_small_patch14_dinov2", lora={"r": 4})
    with pytest.raises(LightsegError, match=r"lora targets \['attn'\] match no linear layer .*\(fc1, fc2, .*qkv"):
        _task(arch="dpt", backbone="tu-vit_small_patch14_dinov2", lora={"targets": ["attn"]})

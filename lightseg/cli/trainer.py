"""Lightning's Trainer as lightseg's subcommands describe it: fit, validate, test, predict, export."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from lightseg.callbacks.defaults import add_missing, default_callbacks, monitored_checkpoint
from lightseg.cli.adapter import evaluate_on_every_process, resume_at_the_saved_batch
from lightseg.export import ExportResult, ExportSettings, describe, export_task


class LightsegTrainer(Trainer):
    """Training loop: devices, precision, epochs and steps, logger, callbacks (Lightning's Trainer options).

    Lightning's Trainer, with :meth:`export` and its subcommands described in lightseg's terms.
    The methods are Lightning's own; each docstring's first line is what ``lightseg --help``
    says of the subcommand, and its ``ckpt_path`` text is the ``--ckpt_path`` help. Each
    run first adds the callbacks of :func:`~lightseg.callbacks.defaults.default_callbacks`
    that the user did not configure (the dashboard where a logger can show it, per-image
    test scores) and checkpoints on the task's monitored metric unless told otherwise.
    """

    #: set by the CLI from ``--export.*``
    export_settings: ExportSettings | None = None
    #: the resolved config, recorded in the export's metadata
    export_config: dict[str, Any] | None = None

    def fit(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | Path | None = None,
        weights_only: bool | None = None,
    ) -> None:
        """Train the model on the data's train split, validating on its val split; checkpoints go into the run folder.

        Args:
            model: the task.
            train_dataloaders: training loaders (the CLI uses the data module's).
            val_dataloaders: validation loaders (the CLI uses the data module's).
            datamodule: the data.
            ckpt_path: resume a run: ``last`` (the newest ``last.ckpt`` of this config's runs; a first
                run starts from scratch) or a ``last.ckpt`` file; to start from other weights use
                ``--model.init_args.init_from``.
            weights_only: load the checkpoint with ``torch.load(weights_only=True)`` (``None``: Lightning's choice).
        """
        self.add_default_callbacks(model, "fit")
        resume_at_the_saved_batch(self)
        evaluate_on_every_process(self)
        super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, weights_only)

    def validate(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | Path | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
        weights_only: bool | None = None,
    ) -> list[Mapping[str, float]]:
        """Score a checkpoint on the validation split: per-class table, metrics beside the checkpoint.

        Args:
            model: the task.
            dataloaders: validation loaders (the CLI uses the data module's).
            ckpt_path: The checkpoint to score: ``best`` (the best-scoring checkpoint of all runs of
                this config, printed with its run and score), ``last`` (the newest ``last.ckpt``)
                or a ``.ckpt`` file.
            verbose: print Lightning's metric table too.
            datamodule: the data.
            weights_only: load the checkpoint with ``torch.load(weights_only=True)`` (``None``: Lightning's choice).
        """
        self.add_default_callbacks(model, "validate")
        evaluate_on_every_process(self)
        return super().validate(model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    def test(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | Path | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
        weights_only: bool | None = None,
    ) -> list[Mapping[str, float]]:
        """Score a checkpoint on the test split: per-class table, per-image scores, metrics beside the checkpoint.

        Args:
            model: the task.
            dataloaders: test loaders (the CLI uses the data module's).
            ckpt_path: The checkpoint to score: ``best`` (the best-scoring checkpoint of all runs of
                this config, printed with its run and score), ``last`` (the newest ``last.ckpt``)
                or a ``.ckpt`` file.
            verbose: print Lightning's metric table too.
            datamodule: the data.
            weights_only: load the checkpoint with ``torch.load(weights_only=True)`` (``None``: Lightning's choice).
        """
        self.add_default_callbacks(model, "test")
        evaluate_on_every_process(self)
        return super().test(model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    def predict(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | Path | None = None,
        weights_only: bool | None = None,
    ) -> Any:
        """Segment your images (--data.predict_dir) with a checkpoint: masks and overlays in --prediction.output_dir.

        Args:
            model: the task.
            dataloaders: prediction loaders (the CLI uses the data module's ``predict_dir``).
            datamodule: the data.
            return_predictions: keep every prediction in memory and return them; ``None``: not where a
                prediction writer (``--prediction``) writes them (memory would grow with the image count).
            ckpt_path: The checkpoint to predict with: ``best`` (the best-scoring checkpoint of all
                runs of this config), ``last`` (the newest ``last.ckpt``) or a ``.ckpt`` file.
            weights_only: load the checkpoint with ``torch.load(weights_only=True)`` (``None``: Lightning's choice).
        """
        self.add_default_callbacks(model, "predict")
        evaluate_on_every_process(self)
        writes = any(isinstance(c, BasePredictionWriter) for c in cast(Any, self).callbacks)
        if return_predictions is None and writes:
            return_predictions = False
        return super().predict(model, dataloaders, datamodule, return_predictions, ckpt_path, weights_only)

    def add_default_callbacks(self, model: LightningModule | None, fn: str) -> None:
        """Add the default callbacks of a ``fn`` run of ``model`` that are not configured.

        Lightning's default checkpoint (the last epoch) becomes one on the task's monitored metric
        where the user configured no monitored checkpoint.
        """
        task = model if model is not None else self.strategy.lightning_module
        callbacks = cast(Any, self).callbacks
        monitored_checkpoint(callbacks, task)
        add_missing(callbacks, default_callbacks(task, fn, logging=bool(self.loggers)))

    def export(
        self, model: LightningModule, datamodule: LightningDataModule | None = None, ckpt_path: str | None = None
    ) -> ExportResult:
        """Export a checkpoint as ONNX, TorchScript or torch.export (--export.*), verified against PyTorch.

        Args:
            model: the task.
            datamodule: the data module (class names, colours and category ids for the metadata).
            ckpt_path: The checkpoint whose weights are exported: ``best`` (the best-scoring
                checkpoint of all runs of the config), ``last`` or a ``.ckpt`` file.
        """
        result = export_task(model, datamodule, self.export_settings or ExportSettings(), ckpt_path, self.export_config)
        print(describe(result))
        return result

"""transformers' segmentation models behind lightseg's model contract.

Imported only when a transformers architecture is built (transformers is an extra). Each wrapper
takes normalised images padded by :class:`~lightseg.models.semantic.SegmentationModel` and
returns per-pixel scores; the query-based models (Mask2Former, EoMT) also return their query
predictions, which :meth:`QuerySegmenter.set_loss` scores with the model's own Hungarian-matched
loss (class cross-entropy, point-sampled mask binary cross-entropy and Dice, as published).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import EomtForUniversalSegmentation
from transformers.models.eomt.modeling_eomt import EomtEmbeddings

#: the keys a query-based model adds to ``{"out": ...}``, batch first: ``[B, L, Q, ...]`` (L = the decoder
#: layers whose predictions are supervised, the last one last)
QUERY_KEYS = ("class_queries", "mask_queries")


def encoder_layers(coarse: bool = True) -> dict[str, Any]:
    """A timm-style ``group_matcher`` of a transformers encoder (``layer_decay``): embeddings, then stages / blocks.

    The first numbered ``stages`` / ``layers`` / ``layer`` level of a name is its depth (a ConvNeXt's
    or Swin's stage, a ViT's block, as timm's coarse matcher groups them); what neither matches
    (a final norm) is deepest.
    """
    return {"stem": r"^hf\.(?:.*?\.)?embeddings", "blocks": r"^hf\.(?:.*?\.)?(?:stages|layers|layer)\.(\d+)"}


class PixelSegmenter(nn.Module):
    """A transformers model that classifies pixels (SegFormer, UperNet, DPT): ``{"out"[, "aux"]}`` logits.

    UperNet and DPT run their parts here: their ``forward`` computes the auxiliary head's logits for
    their own loss only, and DPT's reshapes the ViT's tokens to a square grid (any aspect ratio runs
    here: the patch grid is given to its neck).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.hf = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of normalised images (at a fraction of their size where the model decodes coarser)."""
        hf: Any = self.hf
        if hasattr(hf, "decode_head") and hasattr(hf, "backbone"):  # UperNet
            features = hf.backbone.forward_with_filtered_kwargs(x).feature_maps
            return self._with_aux(hf.decode_head(features), features)
        if hasattr(hf, "neck") and hasattr(hf, "dpt"):
            hidden = hf.dpt(pixel_values=x, output_hidden_states=True).hidden_states[1:]
            chosen = [state for i, state in enumerate(hidden) if i in hf.config.backbone_out_indices]
            patch = hf.config.patch_size
            features = hf.neck(chosen, x.shape[-2] // patch, x.shape[-1] // patch)
            return self._with_aux(hf.head(features), features[-1])
        return {"out": hf(pixel_values=x).logits}

    def _with_aux(self, logits: torch.Tensor, features: Any) -> dict[str, torch.Tensor]:
        head = getattr(self.hf, "auxiliary_head", None)
        return {"out": logits} if head is None else {"out": logits, "aux": head(features)}

    def group_matcher(self, coarse: bool = True) -> dict[str, Any]:
        """The encoder's layers, as timm's models name theirs (see :func:`encoder_layers`)."""
        return encoder_layers(coarse)

    def is_backbone(self, name: str) -> bool:
        """Whether parameter ``name`` (relative to this module) is in the pretrainable encoder."""
        # SegFormer's Mix Transformer, UperNet's ConvNeXt / Swin, DPT's ViT
        parts = name.split(".")
        return len(parts) > 1 and parts[1] in ("segformer", "backbone", "dpt")


class QuerySegmenter(nn.Module):
    """A mask-classification model (Mask2Former, EoMT) as a per-pixel classifier.

    ``out`` is the logarithm of the semantic scores ``sum_q p_q(c) * sigmoid(m_q)`` (the published
    semantic inference; their softmax is the scores normalised over classes, their argmax the
    published prediction), at the input size; ``class_queries`` ``[B, L, Q, C+1]`` and
    ``mask_queries`` ``[B, L, Q, h, w]`` are the predictions of every supervised decoder layer.
    """

    #: score the last layer before the others (Mask2Former's order; EoMT's is the layers' order), so that
    #: the loss's random point sampling draws as transformers' own training does
    final_first = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.hf = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Semantic log-scores and the query predictions of normalised images."""
        classes, masks = self._layers(x)
        probs = classes[:, -1].float().softmax(-1)[..., :-1]  # the no-object class dropped
        semantic = torch.einsum("bqc,bqhw->bchw", probs, masks[:, -1].float().sigmoid())
        semantic = F.interpolate(semantic, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": semantic.clamp_min(1e-8).log(), "class_queries": classes, "mask_queries": masks}

    def _layers(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.hf(pixel_values=x, output_auxiliary_logits=True)
        layers = [*(output.auxiliary_logits or []), output]
        classes = torch.stack([_get(layer, "class_queries_logits") for layer in layers], dim=1)
        return classes, torch.stack([_get(layer, "masks_queries_logits") for layer in layers], dim=1)

    def set_loss(self, outputs: dict[str, torch.Tensor], target: torch.Tensor, ignore_index: int) -> torch.Tensor:
        """The model's set-prediction loss of ``outputs`` against a semantic ``target`` ``[B,H,W]``.

        Each class present in an image is one target mask (ignored pixels belong to none, as in the
        published semantic training); every supervised layer is matched and scored, with the
        config's ``class_weight``, ``mask_weight``, ``dice_weight`` and ``no_object_weight``.
        """
        mask_labels, class_labels = [], []
        for image in target:
            present = image.unique()
            present = present[present != ignore_index]
            mask_labels.append((image[None] == present[:, None, None]).float())
            class_labels.append(present.long())
        return self.matched_loss(outputs, mask_labels, class_labels)

    def matched_loss(
        self, outputs: dict[str, torch.Tensor], mask_labels: list[torch.Tensor], class_labels: list[torch.Tensor]
    ) -> torch.Tensor:
        """The set-prediction loss against each image's target masks and their class labels.

        ``mask_labels``: per image ``[N, H, W]`` (0/1, at the padded input's size); ``class_labels``:
        per image ``[N]``. Every supervised layer is matched and scored.
        """
        classes, masks = outputs["class_queries"].float(), outputs["mask_queries"].float()
        loss = classes.new_zeros(())
        layers = list(range(classes.shape[1]))
        for layer in layers[-1:] + layers[:-1] if self.final_first else layers:
            terms = cast(Any, self.hf).get_loss_dict(
                masks_queries_logits=masks[:, layer],
                class_queries_logits=classes[:, layer],
                mask_labels=mask_labels,
                class_labels=class_labels,
                auxiliary_predictions=None,
            )
            loss = loss + sum(terms.values())
        return loss

    def group_matcher(self, coarse: bool = True) -> dict[str, Any]:
        """The encoder's layers, as timm's models name theirs (see :func:`encoder_layers`)."""
        return encoder_layers(coarse)

    def is_backbone(self, name: str) -> bool:
        """Whether parameter ``name`` (relative to this module) is in the pretrainable encoder."""
        parts = name.split(".")
        if parts[2:4] == ["pixel_level_module", "encoder"]:
            return True  # Mask2Former's Swin / ResNet (its pixel decoder has an "encoder" too)
        return len(parts) > 1 and parts[1] in ("embeddings", "layers")  # EoMT's ViT


def _get(layer: Any, key: str) -> torch.Tensor:
    return layer[key] if isinstance(layer, dict) else getattr(layer, key)


class AnySizeEomtEmbeddings(EomtEmbeddings):
    """EoMT's embeddings with the position embedding resized to each input's patch grid.

    transformers' EoMT takes only its configured image size; the published EoMT runs its ViT at any
    size (timm's dynamic image size), resizing the learned grid bicubically, as DINOv2 does.
    """

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tokens (class, registers, patches) of ``pixel_values`` of any multiple of the patch size."""
        batch, patch = pixel_values.shape[0], cast(int, self.patch_size)
        patches = self.patch_embeddings(pixel_values)
        trained = self.patch_embeddings.image_size
        grid = trained[0] // patch, trained[1] // patch
        size = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
        position = self.position_embeddings.weight
        if size != grid:
            position = position.reshape(1, *grid, -1).permute(0, 3, 1, 2)
            position = F.interpolate(position, size=size, mode="bicubic", align_corners=False)
            position = position.permute(0, 2, 3, 1).reshape(-1, position.shape[1])
        tokens = patches + position.to(patches.dtype)
        prefix = [self.cls_token.expand(batch, -1, -1), self.register_tokens.expand(batch, -1, -1)]
        return self.dropout(torch.cat([*prefix, tokens], dim=1))


class AnySizeEomt(EomtForUniversalSegmentation):
    """transformers' EoMT at any input size (a multiple of its patch), every layer's prediction kept."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        # the same parameters (as initialised), another forward: checkpoints of transformers' EoMT load unchanged;
        # built on a forked random stream, so that the stream after the model is the plain EoMT's
        with torch.random.fork_rng(devices=[]):
            embeddings = AnySizeEomtEmbeddings(config)
        embeddings.load_state_dict(self.embeddings.state_dict())
        self.embeddings = embeddings
        self.layer_predictions: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        """The transformers forward, on this input's patch grid."""
        patch = cast(int, self.config.patch_size)
        self.grid_size = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        self.layer_predictions = []
        return super().forward(pixel_values, **kwargs)

    def predict(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks and classes from one layer's tokens, recorded for the loss of every supervised layer."""
        prediction = super().predict(logits)
        self.layer_predictions.append(prediction)
        return prediction


class EomtSegmenter(QuerySegmenter):
    """EoMT with the published mask annealing: each block's masked attention fades out in turn.

    Block ``i`` of ``n`` keeps its mask with probability 1 until ``(i+1)/(n+2)`` of training, then
    ``(1 - t)^0.9`` over the next ``1/(n+2)``, then never (the published schedule: 14,782-step
    intervals of an 88,700-step run for 4 blocks), so that inference needs no masks.
    """

    hf: AnySizeEomt
    final_first = False

    def _layers(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.hf(pixel_values=x)
        masks, classes = zip(*self.hf.layer_predictions, strict=True)
        return torch.stack(classes, dim=1), torch.stack(masks, dim=1)

    def anneal(self, progress: float) -> None:
        """Set each block's probability of masked attention for ``progress`` (0 to 1) through training."""
        blocks = self.hf.attn_mask_probs.numel()
        for i in range(blocks):
            t = (progress * (blocks + 2) - (i + 1)) if progress < 1 else 1.0
            self.hf.attn_mask_probs[i] = 1.0 if t <= 0 else max(0.0, 1.0 - min(t, 1.0)) ** 0.9

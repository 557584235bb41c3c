"""Segment images with a model from `lightseg export` (ONNX): numpy, onnxruntime and Pillow only, no torch.

    python examples/onnx_predict.py model.onnx image.jpg [more.jpg ...] [--out masks/]

Writes <out>/<image name>.png: a palette PNG of class indices, as `lightseg predict` writes
into its masks/ folder. The model's metadata (class names, palette, input convention) is
read from the ONNX file itself. A model exported for one input size (`--export.input_size`)
gets each image resized to that size, and its scores (or labels) resized back to the image's.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image, ImageOps


def main() -> None:
    """Write one palette PNG per image."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--out", default="masks")
    args = parser.parse_args()
    session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["lightseg"])
    if meta["task"] != "SemanticSegmentationTask":
        raise SystemExit(f"{args.model} is a {meta['task']}; this example writes semantic masks")
    output = meta["outputs"][0]  # labels, probs or logits
    palette = np.array(meta["palette"], dtype=np.uint8).ravel().tolist()
    size = meta["input"].get("size")  # [H, W] for a graph of one input size, else "any"
    fixed = tuple(size) if isinstance(size, list) else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.images:
        img = ImageOps.exif_transpose(Image.open(name))  # turned as shown, as lightseg reads it
        if img.mode.startswith("I;16"):  # 16-bit grey: its full range, as lightseg reads it
            rgb = np.repeat(np.asarray(img, dtype=np.float32)[..., None] / 65535, 3, axis=2)
        else:
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255  # RGB in [0, 1]
        shown = img.size
        if fixed is not None:  # resized channel by channel in float, so 16-bit images keep their precision
            channels = [Image.fromarray(rgb[..., c], mode="F").resize((fixed[1], fixed[0]), Image.Resampling.BILINEAR)
                        for c in range(3)]  # fmt: skip
            rgb = np.stack([np.asarray(c) for c in channels], axis=2)
        image = rgb.transpose(2, 0, 1)[None]  # [1, 3, H, W]; the model normalises it itself
        result = session.run(None, {"image": image})[0][0]
        if fixed is not None and output != "labels":  # scores resized back before the arg-max
            result = np.stack([np.asarray(Image.fromarray(c, mode="F").resize(shown, Image.Resampling.BILINEAR))
                               for c in result.astype(np.float32)])  # fmt: skip
        labels = result if output == "labels" else result.argmax(0)
        mask = Image.fromarray(labels.astype(np.uint8), mode="P")
        if mask.size != shown:  # labels of a graph of one input size
            mask = mask.resize(shown, Image.Resampling.NEAREST)
        mask.putpalette(palette)
        mask.save(out / f"{Path(name).stem}.png")
        found = [meta["class_names"][k] for k in np.unique(labels) if k < len(meta["class_names"])]
        print(f"{name}: {', '.join(found)} -> {out / (Path(name).stem + '.png')}")


if __name__ == "__main__":
    main()

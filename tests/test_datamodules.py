from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from PIL import Image

from lightseg.datamodules import ImageFolderDataset, ShapesDataModule, pad_collate
from lightseg.datamodules.io import image_header, orientation_hint, read_image, read_mask
from lightseg.datamodules.shapes import generate_scene
from lightseg.datamodules.transforms import RandomScale, train_transforms
from lightseg.errors import LightsegError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> ShapesDataModule:
    dm = ShapesDataModule(
        root=str(tmp_path_factory.mktemp("dm")),
        num_train=12,
        num_val=4,
        num_test=4,
        image_size=40,
        batch_size=4,
    )
    dm.prepare_data()
    return dm


def test_shapes_written_in_voc_layout_with_void_borders(shapes: ShapesDataModule) -> None:
    root = shapes.data_dir
    for split, count in [("train", 12), ("val", 4), ("test", 4)]:
        ids = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        assert len(ids) == count and len(set(ids)) == count
    ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    labels = []
    for image_id in ids:
        png = Image.open(root / "SegmentationClass" / f"{image_id}.png")
        assert png.mode == "P" and png.getpalette()[3:6] == [128, 0, 0]  # VOC palette
        jpg = Image.open(root / "JPEGImages" / f"{image_id}.jpg")
        assert jpg.mode == "RGB" and jpg.size == png.size == (40, 40)
        labels.append(np.asarray(png))
    values = set(np.unique(np.stack(labels)).tolist())
    assert values <= {0, 1, 2, 3, 255} and {0, 255} <= values and len(values - {0, 255}) >= 2
    # the void band surrounds every object: no object pixel touches background directly
    for label in labels:
        obj = (label > 0) & (label < 255)
        bg = label == 0
        touching = obj[:, 1:] & bg[:, :-1] | obj[:, :-1] & bg[:, 1:]
        assert not touching.any()


def test_scene_generation_is_deterministic() -> None:
    a = generate_scene(np.random.default_rng(5), 48)
    b = generate_scene(np.random.default_rng(5), 48)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert 1 <= len(a.instances) <= 3
    for inst in a.instances:
        assert inst.mask.shape == (48, 48) and inst.mask.any()


def test_data_contract(shapes: ShapesDataModule) -> None:
    shapes.setup("fit")
    assert shapes.train_dataset is not None and shapes.val_dataset is not None
    item = shapes.val_dataset[0]
    assert set(item) == {"image", "mask", "id"} and item["id"] == shapes.val_dataset.ids[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 40, 40)
    assert item["image"].min() >= 0.0 and item["image"].max() <= 1.0
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (40, 40)
    assert type(item["image"]) is torch.Tensor  # plain tensors, not tv_tensors
    batch = next(iter(shapes.train_dataloader()))
    assert batch["image"].shape == (4, 3, 40, 40) and batch["mask"].shape == (4, 40, 40)
    assert shapes.num_classes == 4 and shapes.class_names[0] == "background"
    assert len(shapes.train_dataset) == 12 and shapes.train_dataset.ids[0] == "train_00000"  # type: ignore[attr-defined]


def test_val_items_are_unaugmented_and_native(shapes: ShapesDataModule) -> None:
    shapes.setup("validate")
    assert shapes.val_dataset is not None
    first = shapes.val_dataset[0]
    again = shapes.val_dataset[0]
    torch.testing.assert_close(first["image"], again["image"])
    on_disk = np.asarray(Image.open(shapes.data_dir / "SegmentationClass" / "val_00000.png"))
    np.testing.assert_array_equal(first["mask"].numpy(), on_disk)


def test_pad_collate_pads_image_with_zero_and_mask_with_ignore() -> None:
    items = [
        {"image": torch.ones(3, 4, 5), "mask": torch.zeros(4, 5, dtype=torch.long)},
        {"image": torch.ones(3, 6, 3), "mask": torch.ones(6, 3, dtype=torch.long)},
    ]
    batch = pad_collate(items)
    assert batch["image"].shape == (2, 3, 6, 5) and batch["mask"].shape == (2, 6, 5)
    assert batch["image"][0, :, 4:].abs().sum() == 0 and (batch["mask"][0, 4:] == 255).all()
    assert (batch["mask"][1, :, 3:] == 255).all() and (batch["mask"][1, :, :3] == 1).all()


def test_train_transforms_move_image_and_mask_together() -> None:
    from torchvision import tv_tensors

    torch.manual_seed(0)
    image = torch.zeros(3, 20, 30)
    image[:, 5:10, 5:15] = 1.0
    mask = torch.zeros(20, 30, dtype=torch.long)
    mask[5:10, 5:15] = 1
    pipeline = train_transforms(crop_size=24, scale_range=(0.5, 2.0), hflip=True, vflip=True)
    for _ in range(10):
        img, msk = pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert img.shape == (3, 24, 24) and msk.shape == (24, 24)
        assert set(msk.unique().tolist()) <= {0, 1, 255}
        inside = msk == 1
        if inside.sum() > 4:  # the object's pixels are still bright after the joint transform
            assert img[0][inside].mean() > 0.6
        assert (img[:, msk == 255] == 0).all()  # padding: image 0, mask 255


def test_random_scale_range() -> None:
    from torchvision import tv_tensors

    torch.manual_seed(0)
    sizes = {RandomScale((0.5, 2.0))(tv_tensors.Mask(torch.zeros(100, 80))).shape for _ in range(30)}
    heights = [s[0] for s in sizes]
    assert min(heights) >= 50 and max(heights) <= 200 and len(sizes) > 5


def test_read_mask_maps_rgb_masks_through_the_voc_palette(peer: Path) -> None:
    # datumaro writes VOC masks as RGB; all (0,128,0) = class 2 (bicycle)
    mask = read_mask(peer / "datumaro" / "voc_dataset1" / "SegmentationClass" / "2007_000001.png", num_classes=21)
    assert mask.shape == (10, 20) and set(np.unique(mask).tolist()) == {2}


def test_palette_masks_are_read_as_indices_whatever_the_palette(peer: Path) -> None:
    # mmsegmentation's pseudo masks use a different palette in every file
    for k in range(3):
        mask = read_mask(peer / "mmsegmentation" / "pseudo_dataset" / "gts" / f"0000{k}_gt.png", num_classes=3)
        assert set(np.unique(mask).tolist()) <= {0, 1, 2}


def test_mask_errors_name_file_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    Image.fromarray(np.array([[0, 7], [255, 1]], dtype=np.uint8), mode="L").save(path)
    with pytest.raises(LightsegError, match=r"bad.png holds label value\(s\) \[7\] but the data set has 4 classes"):
        read_mask(path, num_classes=4)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.full((2, 2, 3), (1, 2, 3), dtype=np.uint8)).save(rgb)
    with pytest.raises(LightsegError, match=r"rgb.png has colour \(1, 2, 3\)"):
        read_mask(rgb, num_classes=21)
    assert read_mask(path, num_classes=8)[0, 1] == 7


def test_images_are_converted_to_rgb_and_unreadable_ones_named(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((3, 4), 255, dtype=np.uint8), mode="L").save(grey)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.zeros((3, 4, 4), dtype=np.uint8), mode="RGBA").save(rgba)
    assert read_image(grey).shape == (3, 3, 4) and read_image(grey).min() == 1.0
    assert read_image(rgba).shape == (3, 3, 4)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(LightsegError, match="cannot read image .*broken.jpg"):
        read_image(broken)


def _tagged(path: Path, pixels: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes())
    return path


def test_photos_are_read_turned_as_their_exif_orientation_shows_them(tmp_path: Path) -> None:
    stored = np.zeros((4, 6, 3), dtype=np.uint8)
    stored[0, 0] = 255  # a white corner pixel: stored top left
    for orientation, corner in ((6, (0, 3)), (8, (5, 0)), (3, (3, 5)), (1, (0, 0))):
        for suffix in (".png", ".jpg"):
            path = _tagged(tmp_path / f"o{orientation}{suffix}", stored, orientation)
            image = read_image(path)
            turned = orientation in (6, 8)
            assert image.shape == ((3, 6, 4) if turned else (3, 4, 6)), (orientation, suffix)
            assert image_header(path)[0] == image.shape[1:]  # the header's size is the size read
            assert image_header(path, displayed=False)[0] == (4, 6)
            if suffix == ".png":  # lossless: the white pixel is exactly where a viewer shows it
                bright = (image[0] == 1).nonzero().tolist()
                assert bright == [list(corner)], (orientation, bright)
    shown = (6, 4)
    hint = orientation_hint(tmp_path / "o6.png", (4, 6))
    assert "stored as 4x6 pixels with EXIF orientation 6 (turned 90 degrees clockwise when shown)" in hint
    assert "exiftran -ai" in hint
    assert orientation_hint(tmp_path / "o6.png", shown) == "" and orientation_hint(tmp_path / "o1.png", (4, 6)) == ""


def test_16_bit_grey_images_keep_their_range_and_others_are_refused_by_name(tmp_path: Path) -> None:
    ramp = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    image = read_image(tmp_path / "g16.png")
    torch.testing.assert_close(image[:, 0], torch.tensor([0.0, 1 / 255, 32896 / 65535, 1.0]).expand(3, 4))
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F").save(tmp_path / "unit.tif")
    torch.testing.assert_close(read_image(tmp_path / "unit.tif")[1, 0], torch.tensor([0.0, 0.5, 1.0]))
    Image.fromarray(np.array([[0.0, 3.5]], dtype=np.float32), mode="F").save(tmp_path / "float.tif")
    with pytest.raises(LightsegError, match=r"float.tif is a floating-point image with values 0..3.5, not in \[0, 1\]"):
        read_image(tmp_path / "float.tif")
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32), mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(LightsegError, match=r"wide.tif is a 32-bit integer image with values 0..70000"):
        read_image(tmp_path / "wide.tif")


def test_image_folder_for_predict(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.zeros((5, 7, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(np.zeros((9, 4), dtype=np.uint8)).save(tmp_path / "sub" / "b.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path)
    assert [ds[i]["path"] for i in range(len(ds))] == ["a.jpg", "sub/b.png"]
    assert ds[1]["size"] == (9, 4) and ds[1]["image"].shape == (3, 9, 4)
    with pytest.raises(LightsegError, match="holds no image"):
        ImageFolderDataset(_empty(tmp_path))


def test_predict_batches_have_their_own_size(tmp_path: Path) -> None:
    for name in "abcde":
        Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    default = ShapesDataModule(root=str(tmp_path / "cache"), batch_size=16, predict_dir=str(tmp_path))
    assert default.predict_dataloader().batch_size == 1  # not the training batch: one image at a time
    module = ShapesDataModule(root=str(tmp_path / "cache"), predict_dir=str(tmp_path), predict_batch_size=3)
    assert [len(batch["path"]) for batch in module.predict_dataloader()] == [3, 2]
    with pytest.raises(LightsegError, match="predict_batch_size must be >= 1, got 0"):
        ShapesDataModule(root=str(tmp_path / "cache"), predict_batch_size=0)


def _empty(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_median_frequency_statistics_from_training_masks(shapes: ShapesDataModule) -> None:
    shapes.setup("fit")
    class_pixels, image_pixels = shapes.class_pixel_statistics()
    assert class_pixels.shape == (4,) and (class_pixels > 0).all()
    assert image_pixels[0] == 12 * 40 * 40  # background occurs in every image
    assert (image_pixels[1:] <= image_pixels[0]).all()


def test_evaluation_shards_give_every_sample_to_one_process_and_may_give_a_process_none() -> None:
    from lightseg.datamodules.sampling import EvaluationShardSampler

    for samples, processes in ((1, 2), (1, 3), (2, 3), (5, 2), (5, 3), (9, 2)):
        shards = []
        for rank in range(processes):
            sampler = EvaluationShardSampler(range(samples), num_replicas=processes, rank=rank)  # type: ignore[arg-type]
            shards.append(list(sampler))
            assert len(sampler) == len(shards[-1])
        assert sorted(i for shard in shards for i in shard) == list(range(samples)), (samples, processes)
        assert [len(shard) for shard in shards] == [len(range(r, samples, processes)) for r in range(processes)]


def test_training_batches_are_a_function_of_seed_and_epoch_whatever_the_workers(
    shapes: ShapesDataModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightseg.datamodules.sampling import TrainingOrder

    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    shapes.setup("fit")

    def epoch(workers: int, number: int) -> list[torch.Tensor]:
        monkeypatch.setattr(shapes, "num_workers", workers)
        loader = shapes.train_dataloader()
        cast(TrainingOrder, loader.sampler).set_epoch(number)
        torch.manual_seed(number + workers)  # the global stream plays no part
        return [batch["image"] for batch in loader]

    first = epoch(0, 0)
    assert len(first) == 3  # 12 images in batches of 4
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(2, 0), strict=True))  # workers: the same batches
    assert not torch.equal(torch.cat(first), torch.cat(epoch(0, 1)))  # another epoch: another order
    # a resumed epoch skips the batches its checkpoint had trained, and goes on with the same ones
    loader = shapes.train_dataloader()
    restarting = [True]  # what the trainer's restored progress says (batches_done_in_epoch)
    cast(TrainingOrder, loader.sampler).batches_done = lambda: 2 if restarting[0] else 0
    resumed = [batch["image"] for batch in loader]
    assert len(resumed) == 1 and torch.equal(resumed[0], first[2])
    # made again while the fit loop restarts (as it is once the checkpoint is restored): the same skip
    assert len(list(loader)) == 1
    restarting[0] = False  # the resumed epoch is over: the next epoch is whole
    assert len(list(loader)) == 3

"""A step's images through the tower together (engine.train.image_window): the gradients equal one
image a micro-batch's, the tower runs once a group, a frozen tower is left alone; and what the window
holds is in the memory estimate, the tower's FLOPs in MFU once an image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ModelError
from engine.model.config import PRESETS, ModelConfig
from engine.model.info import IMAGES_AT_ONCE, memory_estimate, train_flops, vision_activation_bytes
from engine.model.multimodal import VisionLanguageModel, expand_image_tokens
from engine.model.transfer import to_device
from engine.train.image_window import ImageWindow
from engine.train.images import pixels
from engine.train.trainer import token_losses

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = ModelConfig(
    dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=200, max_seq_len=64,
    vision_layers=2, vision_width=24, vision_heads=4, vision_mlp_dim=48, image_size=12, patch_size=4,
)
IMAGE_ID = 7


def micro_batches(has_image: list[bool], seed: int) -> tuple[list[torch.Tensor], list]:
    """Two-row micro-batches of 30 tokens; one with an image holds its positions in the first row."""
    g = torch.Generator().manual_seed(seed)
    tokens, images = [], []
    for i, with_image in enumerate(has_image):
        rows = []
        for r in range(2):
            text = [int(t) for t in torch.randint(10, SMALL.vocab_size, (30,), generator=g)]
            if with_image and r == 0:
                text = expand_image_tokens(text[:4] + [IMAGE_ID] + text[4:], IMAGE_ID, SMALL.image_tokens)[:30]
            rows.append(text)
        tokens.append(torch.tensor(rows))
        image = torch.randint(0, 256, (SMALL.image_size, SMALL.image_size, 3), generator=g, dtype=torch.uint8)
        images.append(image.numpy() if with_image else None)
    return tokens, images


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def one_a_micro_batch(model, tokens, images) -> dict[str, torch.Tensor]:
    for x, image in zip(tokens, images):
        (token_losses(model, x, pixels(image, "cpu")).mean() / len(tokens)).backward()
    return gradients(model)


def windowed(model, tokens, images, at_once: int) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The trainer's loop with a window; also the batch sizes the tower saw."""
    sizes: list[int] = []
    whole = type(model).image_embeddings.__get__(model)

    def counted(batch):
        sizes.append(batch.shape[0])
        return whole(batch)

    model.image_embeddings = counted
    try:
        window = ImageWindow(model, images, torch.device("cpu"), at_once)
        for micro, x in enumerate(tokens):
            (token_losses(model, x, None, None, window.embeddings(micro)).mean() / len(tokens)).backward()
            window.backward(micro)
        assert window.feats is None and not window.leaves  # nothing held past the step
    finally:
        del model.image_embeddings
    return gradients(model), sizes


@settings(max_examples=12, deadline=None)
@given(has_image=st.lists(st.booleans(), min_size=1, max_size=6), at_once=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_a_window_gives_one_image_a_micro_batchs_gradients(has_image, at_once, seed):
    torch.manual_seed(seed)
    model = VisionLanguageModel(SMALL, IMAGE_ID)
    tokens, images = micro_batches(has_image, seed)
    expected = one_a_micro_batch(model, tokens, images)
    got, sizes = windowed(model, tokens, images, at_once)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    n = sum(has_image)
    assert len(sizes) == math.ceil(n / at_once) and sum(sizes) == n and all(s <= at_once for s in sizes)


def test_images_or_their_embeddings_but_not_both():
    model = VisionLanguageModel(SMALL, IMAGE_ID)
    tokens, images = micro_batches([True], 2)
    embeds = model.image_embeddings(pixels(images[0], "cpu"))
    torch.testing.assert_close(model(tokens[0], image_embeds=embeds), model(tokens[0], pixels(images[0], "cpu")))
    with pytest.raises(ModelError, match=r"^images and image_embeds: expected one of them, got both$"):
        model(tokens[0], pixels(images[0], "cpu"), image_embeds=embeds)


def test_host_arrays_reach_the_device_whole():
    rows = np.arange(12, dtype=np.int64).reshape(3, 4)
    moved = to_device(rows, "cpu")
    assert moved.dtype == torch.int64 and moved.tolist() == rows.tolist()
    image = np.full((2, 2, 3), 200, dtype=np.uint8)
    assert to_device(image, torch.device("cpu")).dtype == torch.uint8


def test_a_frozen_tower_and_projector_take_no_backward():
    torch.manual_seed(0)
    model = VisionLanguageModel(SMALL, IMAGE_ID)
    for p in [*model.vision.parameters(), *model.projector.parameters()]:
        p.requires_grad_(False)
    tokens, images = micro_batches([True, False, True], 1)
    expected = one_a_micro_batch(model, tokens, images)
    got, sizes = windowed(model, tokens, images, 16)
    assert sizes == [2] and not any(n.startswith(("vision.", "projector.")) for n in got)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_the_estimate_holds_a_steps_images_up_to_the_group():
    fc450 = PRESETS["fc450"].with_vocab(50000)
    one_image = vision_activation_bytes(fc450, 1, "bf16")

    def acts(**kw):
        return memory_estimate(fc450, 2048, 1, True, "bf16", "cuda", include_vision=True, **kw)

    assert acts(grad_accum=48)["images"] == IMAGES_AT_ONCE
    assert acts(grad_accum=48)["activations"] - acts()["activations"] == (IMAGES_AT_ONCE - 1) * one_image
    assert acts(grad_accum=3)["activations"] - acts()["activations"] == 2 * one_image
    # Under DDP each micro-batch's image goes through on its own.
    assert acts(grad_accum=48, devices=2)["activations"] == acts(devices=2)["activations"]
    assert memory_estimate(fc450, 2048, 1, True, "bf16", "cuda", grad_accum=48)["images"] == 0


def test_train_flops_count_the_decoder_per_token_and_the_tower_per_image():
    shuffled = ModelConfig(**{**SMALL.__dict__, "pixel_shuffle": 2, "image_size": 16})
    for cfg in (SMALL, PRESETS["fc450"].with_vocab(50000), shuffled):
        with torch.device("meta"):
            model = VisionLanguageModel(cfg, IMAGE_ID)
        matmuls = [m.weight.numel() for m in model.layers.modules() if isinstance(m, torch.nn.Linear)]
        head = model.embed.weight.numel()  # tied or not, the head is a vocab x dim matmul
        per_token, per_image = train_flops(cfg, 128)
        assert per_token == 6 * (sum(matmuls) + head) + 12 * cfg.n_layers * cfg.dim * 128
        patches = (cfg.image_size // cfg.patch_size) ** 2
        tower = sum(m.weight.numel() for m in model.vision.modules() if isinstance(m, (torch.nn.Linear,
                                                                                       torch.nn.Conv2d)))
        projector = sum(m.weight.numel() for m in model.projector.modules() if isinstance(m, torch.nn.Linear))
        attention = 12 * cfg.vision_layers * cfg.vision_width * patches * patches
        assert per_image == 6 * tower * patches + attention + 6 * projector * cfg.image_tokens
        # Frozen, the tower runs forward only; a frozen projector still passes a trained tower its gradients.
        forward = 2 * tower * patches + attention // 3, 2 * projector * cfg.image_tokens
        assert train_flops(cfg, 128, tower_trained=False, projector_trained=False)[1] == sum(forward)
        assert train_flops(cfg, 128, tower_trained=False)[1] == forward[0] + 3 * forward[1]
        assert train_flops(cfg, 128, projector_trained=False)[1] == 3 * forward[0] + 2 * forward[1]
    assert train_flops(PRESETS["stage0"].with_vocab(50000), 2048)[1] == 0  # no tower

"""The vision half: the SigLIP-layout tower against transformers' SiglipVisionModel, the whole
model against LlavaForConditionalGeneration (logits within 1e-4 on an image+text prompt), the
parameter accounting, the splice of image embeddings and the loss that skips image positions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ModelError
from engine.model.config import PRESETS, ModelConfig
from engine.model.hf_names import (
    llava_config_dict,
    llava_to_state_dict,
    siglip_vision_config_dict,
    state_dict_to_llava,
)
from engine.model.info import memory_estimate, param_breakdown
from engine.model.multimodal import VisionLanguageModel, expand_image_tokens, pixel_shuffle, splice_images
from engine.model.vision import VisionTower, to_pixels

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = ModelConfig(
    dim=64, n_layers=2, n_heads=8, n_kv_heads=2, ffn_dim=160, vocab_size=300, max_seq_len=64,
    vision_layers=2, vision_width=48, vision_heads=4, vision_mlp_dim=96, image_size=24, patch_size=6,
)
IMAGE_ID = 7


def spread(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random norms and biases too, so a swapped norm or a dropped bias shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def images(n: int, size: int, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)


def prompt(cfg: ModelConfig, seed: int = 5) -> torch.Tensor:
    """Two rows: text, one image's positions, text (the second row's image further on)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for before in (3, 9):
        text = [int(t) for t in torch.randint(10, cfg.vocab_size, (20,), generator=g)]
        rows.append(expand_image_tokens(text[:before] + [IMAGE_ID] + text[before:], IMAGE_ID, cfg.image_tokens))
    return torch.tensor(rows)


def test_tower_equals_transformers_siglip_vision_model():
    torch.manual_seed(0)
    ours = spread(VisionTower(SMALL), 1)
    theirs = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**siglip_vision_config_dict(SMALL))).eval()
    # Our tower's names are SiglipVisionModel's; in LLaVA they sit under model.vision_tower.
    llava = state_dict_to_llava({"vision." + k: v for k, v in ours.state_dict().items()})
    assert set(llava) == {"model.vision_tower." + k for k in theirs.state_dict()}
    result = theirs.load_state_dict(ours.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    pixels = to_pixels(images(2, SMALL.image_size))
    with torch.no_grad():
        out = theirs(pixel_values=pixels, output_hidden_states=True)
        assert (ours(pixels) - out.last_hidden_state).abs().max().item() < 1e-5
        assert (ours.features(pixels) - out.hidden_states[-1]).abs().max().item() < 1e-5


def test_multimodal_logits_equal_llava_and_names_round_trip():
    torch.manual_seed(0)
    ours = spread(VisionLanguageModel(SMALL, IMAGE_ID), 2)
    config = transformers.LlavaConfig(**llava_config_dict(SMALL, IMAGE_ID))
    theirs = transformers.LlavaForConditionalGeneration(config).eval()
    result = theirs.load_state_dict(state_dict_to_llava(ours.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ids, pixels = prompt(SMALL), to_pixels(images(2, SMALL.image_size))
    with torch.no_grad():
        a = ours(ids, pixels)
        b = theirs(input_ids=ids, pixel_values=pixels).logits
        assert (a - b).abs().max().item() < 1e-4
        # The images change the logits after them, not before.
        c = ours(ids, to_pixels(images(2, SMALL.image_size, seed=9)))
    assert torch.equal(a[0, :3], c[0, :3]) and not torch.allclose(a[0, 3 + SMALL.image_tokens:],
                                                                   c[0, 3 + SMALL.image_tokens:])
    back = VisionLanguageModel(SMALL, IMAGE_ID)
    back.load_state_dict(llava_to_state_dict(theirs.state_dict()), strict=True)
    with torch.no_grad():
        assert torch.equal(back.eval()(ids, pixels), a)


def test_params_count_the_real_tower_and_projector():
    for cfg in (SMALL, PRESETS["tiny"].with_vocab(8000), ModelConfig(**{**SMALL.__dict__, "pixel_shuffle": 2})):
        with torch.device("meta"):
            model = VisionLanguageModel(cfg, IMAGE_ID)
        counts = param_breakdown(cfg)
        assert counts["vision_tower"] == sum(p.numel() for p in model.vision.parameters())
        assert counts["projector"] == sum(p.numel() for p in model.projector.parameters())
        assert counts["total"] == sum(p.numel() for p in model.parameters())
    fc450 = PRESETS["fc450"].with_vocab(50000)
    assert abs(param_breakdown(fc450)["total"] / 450e6 - 1) < 0.03
    text = memory_estimate(fc450, 2048, 1, True, "bf16", "cuda")
    both = memory_estimate(fc450, 2048, 1, True, "bf16", "cuda", include_vision=True)
    assert both["params"] == param_breakdown(fc450)["total"] and both["activations"] > text["activations"]


def test_image_positions_take_no_loss_and_a_wrong_count_is_refused():
    torch.manual_seed(0)
    model = VisionLanguageModel(SMALL, IMAGE_ID).eval()
    ids, pixels = prompt(SMALL), to_pixels(images(2, SMALL.image_size))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    per_token = model.loss(inputs, targets, "none", images=pixels)
    assert torch.all(per_token[targets == IMAGE_ID] == 0) and torch.all(per_token[targets != IMAGE_ID] > 0)
    mean = model.loss(inputs, targets, images=pixels)
    assert torch.allclose(mean, per_token.sum() / (targets != IMAGE_ID).sum())
    with pytest.raises(ModelError, match=r"tokens: 32 <image> positions for 1 image\(s\) of 16 embeddings each"):
        model(ids, pixels[:1])
    with pytest.raises(ModelError, match=r"images: expected \[N, 3, 24, 24\] pixel values"):
        model(ids, to_pixels(images(2, 32)))


def test_tower_and_projector_learn_and_post_norm_is_left_out():
    torch.manual_seed(0)
    model = VisionLanguageModel(SMALL, IMAGE_ID)
    model.set_activation_checkpointing(True)
    ids, pixels = prompt(SMALL), to_pixels(images(2, SMALL.image_size))
    model.loss(ids[:, :-1], ids[:, 1:], images=pixels).backward()
    parts = model.parts()
    assert all(p.grad is not None for p in parts["vision"] + parts["projector"] + parts["decoder"])
    assert model.vision.post_layernorm.weight.grad is None and not model.vision.post_layernorm.weight.requires_grad


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12).flatmap(lambda width: st.lists(st.lists(st.booleans(), min_size=width, max_size=width),
                                                        min_size=1, max_size=3)),
       st.integers(1, 3), st.integers(0, 2**16))
def test_splicing_images_in_equals_masked_scatter_and_its_gradients(rows, per_image, seed):
    """The sync-free splice puts the same rows in the same places as masked_scatter, gradients included."""
    mask = torch.tensor(rows)
    count = int(mask.sum())
    if count % per_image:  # the sampler places whole images: round the mask's count down to them
        flat = mask.flatten()
        flat[flat.nonzero()[-(count % per_image):]] = False
        mask, count = flat.view(mask.shape), count - count % per_image
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(*mask.shape, 3, generator=gen, requires_grad=True)
    feats = torch.randn(count // per_image, per_image, 3, generator=gen, requires_grad=True)
    ours, theirs = splice_images(h, mask, feats), h.masked_scatter(mask[..., None], feats)
    assert torch.equal(ours, theirs)
    grad = torch.randn(ours.shape, generator=gen)
    for x, a, b in zip((h, feats), torch.autograd.grad(ours, (h, feats), grad, allow_unused=True),
                       torch.autograd.grad(theirs, (h, feats), grad, allow_unused=True)):
        zero = torch.zeros_like(x)  # without images the features take no part, and have no gradient
        assert torch.equal(zero if a is None else a, zero if b is None else b)


def test_pixel_shuffle_and_placeholder_expansion():
    x = torch.arange(16.0).view(1, 16, 1)  # a 4 x 4 grid of one-wide patches
    assert pixel_shuffle(x, 2)[0, :, :].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert expand_image_tokens([1, 7, 2], 7, 3) == [1, 7, 7, 7, 2]
    assert ModelConfig(**{**SMALL.__dict__, "pixel_shuffle": 2}).image_tokens == 4
    bad = ModelConfig(**{**SMALL.__dict__, "pixel_shuffle": 3})
    assert bad.check() == ["pixel_shuffle: expected a divisor of the patch grid's side (4), got 3"]
    with pytest.raises(ModelError, match="pixel_shuffle: LLaVA feeds every patch"):
        llava_config_dict(ModelConfig(**{**SMALL.__dict__, "pixel_shuffle": 2}), IMAGE_ID)


def test_tower_starts_from_a_local_siglip_checkpoint(tmp_path):
    from engine.train.images import load_siglip

    theirs = spread(transformers.SiglipVisionModel(
        transformers.SiglipVisionConfig(**siglip_vision_config_dict(SMALL))), 5)
    theirs.save_pretrained(tmp_path / "siglip")
    model = VisionLanguageModel(SMALL, IMAGE_ID)
    assert load_siglip(str(tmp_path / "siglip"), model) == len(model.vision.state_dict())
    pixels = to_pixels(images(1, SMALL.image_size))
    with torch.no_grad():
        assert (model.vision(pixels) - theirs(pixel_values=pixels).last_hidden_state).abs().max() < 1e-5
    other = ModelConfig(**{**SMALL.__dict__, "vision_width": 32})
    with pytest.raises(ModelError, match=r"siglip: embeddings\.patch_embedding\.\w+: shape \[48.*\] does not "
                                         r"match the model's \[32"):
        load_siglip(str(tmp_path / "siglip"), VisionLanguageModel(other, IMAGE_ID))
    with pytest.raises(ModelError, match="expected a folder with SigLIP"):
        load_siglip(str(tmp_path / "nothing"), model)

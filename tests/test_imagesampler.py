"""The image-text sampler: every micro-batch a pure function of (seed, step's mix, first index), so a
resumed run sees the same images and tokens; at most one image; the caption after the placeholders
with no loss on them; the rest of the window packed from the text stream or masked padding."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.imagedata import open_pairs
from engine.data.imagesampler import ImageTextSampler, image_row
from engine.data.imageshards import ImageShardWriter
from engine.data.sampler import MixSchedule
from engine.data.shards import open_shard, write_shard
from engine.errors import DataError

HASH = hashlib.sha256(b"tok").hexdigest()
VOCAB, EOS, IMG = 100, 2, 7
SEQ = 24


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two image-text domains (5 and 3 images, some with two captions) and two text domains."""
    root = tmp_path_factory.mktemp("imgsampler")
    rng = np.random.default_rng(0)
    pairs = {}
    for dom, n in (("caption", 5), ("diagram", 3)):
        captions = []
        with ImageShardWriter(root / dom, 4) as w:
            for k in range(n):
                w.add_image(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
                for _ in range(1 + k % 2):
                    cap = rng.integers(10, VOCAB, int(rng.integers(1, 30))).tolist()
                    w.add_pair(k, len(cap))
                    captions.append(cap)
        write_shard(root / f"{dom}.cap", captions, VOCAB, HASH, EOS)
        pairs[dom] = open_pairs(root / dom, dom, 4, HASH, VOCAB)
    text = {}
    for dom in ("code", "science"):
        write_shard(root / dom, [rng.integers(10, VOCAB, 50).tolist() for _ in range(6)], VOCAB, HASH, EOS)
        text[dom] = open_shard(root / dom)
    return pairs, text


MIX = {"code": 0.5, "science": 0.2, "caption": 0.2, "diagram": 0.1}


def _sampler(data, mix=MIX, seed=5, text=True, image_tokens=3):
    pairs, shards = data
    return ImageTextSampler(pairs, shards if text else None, SEQ, seed, MixSchedule.constant(mix), IMG, EOS, image_tokens)


def _same(a, b) -> bool:
    return (np.array_equal(a.tokens, b.tokens) and np.array_equal(a.loss_mask, b.loss_mask)
            and np.array_equal(a.domain_ids, b.domain_ids) and a.pair == b.pair and a.domain == b.domain
            and (a.image is None) == (b.image is None) and (a.image is None or np.array_equal(a.image, b.image)))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**63), step=st.integers(0, 10**6), first=st.integers(0, 2**40),
       count=st.integers(1, 4), image_tokens=st.integers(1, 5))
def test_a_micro_batch_is_a_pure_function_of_seed_step_and_index(data, seed, step, first, count, image_tokens):
    a = _sampler(data, seed=seed, image_tokens=image_tokens)
    b = _sampler(data, seed=seed, image_tokens=image_tokens)  # a resumed run: a fresh sampler
    b.micro_batch(step, first + count, 3)  # other batches drawn first change nothing
    mb = a.micro_batch(step, first, count)
    assert _same(mb, b.micro_batch(step, first, count))
    assert mb.tokens.shape == (count, SEQ + 1) and mb.loss_mask.shape == (count, SEQ)
    assert (mb.tokens == IMG).sum() == (image_tokens if mb.image is not None else 0)  # at most one image
    if mb.image is None:
        text_rows, _ = a.text.batch(step, first, count)
        assert np.array_equal(mb.tokens, text_rows) and mb.loss_mask.all()
        return
    pairs = data[0][mb.domain]
    caption = pairs.caption(mb.pair).tolist()
    row = mb.tokens[0].tolist()
    assert row[:image_tokens] == [IMG] * image_tokens
    assert row[image_tokens:image_tokens + len(caption)] == caption[:SEQ + 1 - image_tokens]
    assert not mb.loss_mask[0, :image_tokens - 1].any() and mb.loss_mask[0, image_tokens - 1:].all()
    assert np.array_equal(mb.image, pairs.image(mb.pair))
    assert a.domains[mb.domain_ids[0]] == mb.domain
    assert mb.caption_mask()[0].sum() == mb.caption_len == min(len(caption) + 1, SEQ + 1 - image_tokens)
    end = image_tokens + mb.caption_len
    text_rows, _ = a.text.batch(step, first, count)
    assert row[end:] == text_rows[0, : SEQ + 1 - end].tolist()  # packed with the text stream
    assert np.array_equal(mb.tokens[1:], text_rows[1:])


def test_image_share_follows_the_mix_and_a_change_acts_at_its_step(data):
    s = _sampler(data)
    images = [s.micro_batch(0, i * 4, 4) for i in range(600)]
    with_image = [mb for mb in images if mb.image is not None]
    assert 0.2 < len(with_image) / 600 < 0.4  # 0.3 of the mix
    by_domain = sum(mb.domain == "caption" for mb in with_image) / len(with_image)
    assert 0.55 < by_domain < 0.8  # caption 0.2 against diagram 0.1
    s.schedule.add(10, {"code": 1.0, "caption": 3.0})
    assert s.image_share(10) == 0.75 and s.image_share(9) == pytest.approx(0.3)
    assert all(s.micro_batch(10, i, 1).domain in ("", "caption") for i in range(200))
    assert s.text_schedule.weights_at(10) == {"code": 1.0}
    s.schedule.add(20, {"code": 1.0, "caption": 0.0, "diagram": 0.0})
    assert all(s.micro_batch(20, i, 2).image is None for i in range(100))


def test_image_only_stage_pads_and_masks_and_needs_one_row(data):
    s = _sampler(data, mix={"caption": 1.0}, text=False)
    for i in range(20):
        mb = s.micro_batch(0, i, 1)
        end = mb.image_tokens + mb.caption_len
        assert mb.image is not None and mb.n_loss_tokens == mb.caption_len
        assert (mb.tokens[0, end:] == EOS).all() and not mb.loss_mask[0, end - 1:].any()
    with pytest.raises(DataError, match="micro_batch = 1"):
        s.micro_batch(0, 0, 2)
    with pytest.raises(DataError, match="'code' has weight 1 but no data"):
        _sampler(data, mix={"caption": 1.0, "code": 1.0}, text=False)


def test_held_out_rows_and_a_caption_longer_than_the_window(data):
    pairs = data[0]["caption"]
    longest = max(range(pairs.n_pairs), key=lambda p: pairs.caption(p).size)
    row, mask, n = image_row(pairs, longest, 8, IMG, 2, EOS)
    assert row.tolist() == [IMG, IMG] + pairs.caption(longest)[:7].tolist() and n == 7 and mask[1:].all()
    with pytest.raises(DataError, match="image_tokens 8"):
        image_row(pairs, 0, 8, IMG, 8, EOS)


def test_passes_per_domain(data):
    s = _sampler(data, image_tokens=3)
    pairs = data[0]["caption"]
    per_pass = pairs.captions.n_tokens + 3 * pairs.n_pairs
    got = s.epochs({"caption": per_pass * 2, "code": data[1]["code"].n_tokens})
    assert got == {"caption": 2.0, "code": 1.0}

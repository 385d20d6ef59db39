"""Exports loaded by the real clients: transformers (hf and GGUF), mlx-lm, llama.cpp where installed;
their logits against ours in float32, their tokenizers' ids against ours, and the refusals."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.errors import FcError, ModelError, TokenizerError
from engine.export import export_run
from engine.export.common import ExportError
from tests.conftest import REPO
from tests.eval_fixtures import clone_run, load_run_model, make_lora_run, write_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STRINGS = [
    "def mean(xs):\n    if not xs:\n        return 0.0\n\treturn sum(xs) / len(xs)\n",
    "class A:\n" + " " * 16 + "x = 1\n" + " " * 37 + "# deep\n",
    "digits 1234567890 and 3.14159, 2^10 = 1024",
    "naïve café ünïcode: 日本語, Ελληνικά, emoji 🙂 and a NUL-free tab\tend",
    "<|system|>\nYou are helpful.<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\nhello<|end|>",
    "1. e4 e5 2. Nf3 Nc6 3. Bb5 a6 {Ruy Lopez} 1/2-1/2",
]


@pytest.fixture(scope="module")
def lora_run(eval_workspace, tmp_path_factory) -> Path:
    """A LoRA run on eval_workspace.run's checkpoint: exports merge its adapters."""
    return make_lora_run(eval_workspace.run, tmp_path_factory.mktemp("lora") / "lora-run")


def run_of(eval_workspace, request, which: str) -> Path:
    return request.getfixturevalue("lora_run") if which == "lora_run" else getattr(eval_workspace, which)


def fixed_ids(vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(3, vocab, (2, 40), generator=g)


def our_logits(run_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return load_run_model(run_dir)(ids)


def our_ids(tokenizer_path: Path, text: str) -> list[int]:
    from engine.data.tokenizer import Tokenizer

    return Tokenizer.load(tokenizer_path).encode(text)


def heldout_texts(ew, n: int = 2) -> list[str]:
    raw = ew.ws.raw_dir("evalfx") / "heldout"
    out = []
    for path in sorted(raw.glob("*.jsonl")):
        out += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()[:n]]
    return out


# -- Hugging Face ------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["run", "tied_run", "lora_run"])
def test_hf_export_loads_in_transformers_with_equal_logits_and_ids(eval_workspace, tmp_path, which, request):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = run_of(eval_workspace, request, which)
    res = export_run(run_dir, "hf", "f32", out=tmp_path / "hf")
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.model", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json", "fcwork-export.json"} <= set(res.files)
    model = AutoModelForCausalLM.from_pretrained(res.path, local_files_only=True).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    ids = fixed_ids(model.config.vocab_size)
    with torch.no_grad():
        theirs = model(ids).logits
    ours = our_logits(run_dir, ids)
    assert ours.abs().max() > 1.0  # weights spread enough that the comparison means something
    assert (theirs - ours).abs().max().item() < 1e-5
    tok = AutoTokenizer.from_pretrained(res.path, local_files_only=True)
    for text in STRINGS + heldout_texts(eval_workspace):
        assert tok(text)["input_ids"] == our_ids(eval_workspace.tokenizer_path, text), text[:60]
        assert tok.decode(tok(text)["input_ids"]) == text


def test_hf_export_half_precision_and_q8_refused(eval_workspace, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    res = export_run(eval_workspace.run, "hf", "bf16", out=tmp_path / "bf16")
    with safe_open(str(res.path / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert json.loads((res.path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(res.path, local_files_only=True, dtype=torch.float32).eval()
    ids = fixed_ids(model.config.vocab_size)
    with torch.no_grad():
        diff = (model(ids).logits - our_logits(eval_workspace.run, ids)).abs()
    assert diff.max() / our_logits(eval_workspace.run, ids).abs().max() < 0.05
    with pytest.raises(ExportError, match=r"^--dtype q8: the hf format stores f32, f16 or bf16"):
        export_run(eval_workspace.run, "hf", "q8", out=tmp_path / "q8")
    assert not (tmp_path / "q8").exists()
    again = export_run(eval_workspace.run, "hf", "f16", out=res.path)  # an earlier export is replaced whole
    assert json.loads((again.path / "fcwork-export.json").read_text())["dtype"] == "f16"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match=r"exists and is not an earlier fcwork export"):
        export_run(eval_workspace.run, "hf", "f32", out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# -- GGUF ------------------------------------------------------------------------------------------

needs_accelerate = pytest.mark.skipif(importlib.util.find_spec("accelerate") is None,
                                      reason="transformers' GGUF reader needs accelerate (pip install accelerate)")


def _gguf_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file="model.gguf", local_files_only=True,
                                                 dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


@needs_accelerate
@pytest.mark.parametrize("which", ["run", "tied_run", "lora_run"])
def test_gguf_export_loads_in_transformers_gguf_reader(eval_workspace, tmp_path, which, request):
    import gguf

    run_dir = run_of(eval_workspace, request, which)
    res = export_run(run_dir, "gguf", "f32", out=tmp_path / "gguf")
    reader = gguf.GGUFReader(str(res.path / "model.gguf"))
    field = lambda k: reader.fields[k].contents()  # noqa: E731
    assert field("general.architecture") == "llama"
    assert field("tokenizer.ggml.model") == "llama"
    assert field("tokenizer.ggml.add_bos_token") is False and field("tokenizer.ggml.add_space_prefix") is False
    assert (field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")) == (1, 2)
    from engine.export.spm_model import read_spm_model

    pieces = read_spm_model(eval_workspace.tokenizer_path).pieces
    tokens = field("tokenizer.ggml.tokens")
    end = [p.text for p in pieces].index("<|end|>")
    assert field("tokenizer.ggml.eot_token_id") == end  # the end of a chat turn: a control token
    assert len(tokens) == len(pieces) and field("tokenizer.ggml.token_type") == [
        3 if i == end else p.type for i, p in enumerate(pieces)]
    assert all(t == p.text or (set(p.text) == {"\u2581"} and t == " " * len(p.text)) for t, p in zip(tokens, pieces))
    assert ("output.weight" in {t.name for t in reader.tensors}) == (which != "tied_run")
    assert field("tokenizer.chat_template").startswith("{% for message in messages %}")

    ids = fixed_ids(len(pieces))
    assert (_gguf_logits(res.path, ids) - our_logits(run_dir, ids)).abs().max().item() < 1e-5


def test_gguf_tokenizer_in_transformers_matches_ours_after_a_space(eval_workspace, tmp_path):
    """transformers' GGUF reader builds a LlamaTokenizer that ignores tokenizer.ggml.add_space_prefix (it prepends
    a space to text that does not start with one) and, before 5.2x, our user-defined pieces (whitespace runs,
    tab, role symbols); on single-spaced text after a space its ids are ours. llama.cpp is the GGUF tokenizer
    that matters: test_gguf_export_in_llama_cpp checks it on every string."""
    from transformers import AutoTokenizer

    res = export_run(eval_workspace.run, "gguf", "f32", out=tmp_path / "gguf")
    tok = AutoTokenizer.from_pretrained(res.path, gguf_file="model.gguf", local_files_only=True)
    for text in ("digits 1234567890 and 3.14159, 2^10 = 1024", "naïve café ünïcode: 日本語, Ελληνικά, emoji 🙂",
                 "1. e4 e5 2. Nf3 Nc6 3. Bb5 a6 {Ruy Lopez} 1/2-1/2"):
        text = " " + text
        assert tok(text, add_special_tokens=False)["input_ids"] == our_ids(eval_workspace.tokenizer_path, text)


@needs_accelerate
def test_wrong_qk_permutation_is_caught(eval_workspace, tmp_path):
    """Without llama.cpp's Q/K row order, transformers' reader (which un-permutes) gets other logits."""
    res = export_run(eval_workspace.run, "gguf", "f32", out=tmp_path / "nope", permute_qk=False)
    ids = fixed_ids(600)
    assert (_gguf_logits(res.path, ids) - our_logits(eval_workspace.run, ids)).abs().max().item() > 0.1


def test_interleave_rope_rows_is_llama_cpp_order():
    from engine.export.gguf import interleave_rope_rows

    w = torch.arange(2 * 8, dtype=torch.float32).reshape(2 * 8, 1).numpy()  # 2 heads of size 8
    out = interleave_rope_rows(w, 2)[:, 0].tolist()
    assert out == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]


@needs_accelerate
def test_gguf_q8_holds_q8_0_tensors_and_loads(eval_workspace, tmp_path):
    import gguf

    res = export_run(eval_workspace.run, "gguf", "q8", out=tmp_path / "q8")
    reader = gguf.GGUFReader(str(res.path / "model.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    ids = fixed_ids(600)
    theirs, ours = _gguf_logits(res.path, ids), our_logits(eval_workspace.run, ids)
    assert torch.corrcoef(torch.stack([theirs.flatten(), ours.flatten()]))[0, 1] > 0.999


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="llama-cpp-python is not installed (pip install llama-cpp-python builds llama.cpp, ~10 min)")
@pytest.mark.parametrize("which", ["run", "lora_run"])
def test_gguf_export_in_llama_cpp(eval_workspace, tmp_path, which, request):
    run_dir = run_of(eval_workspace, request, which)
    import numpy as np
    from llama_cpp import GGML_TYPE_F32, Llama, llama_vocab_is_eog

    res = export_run(run_dir, "gguf", "f32", out=tmp_path / "gguf")
    vocab = Llama(str(res.path / "model.gguf"), vocab_only=True, verbose=False)
    end = vocab.tokenize(b"<|end|>", add_bos=False, special=True)
    assert end == our_ids(eval_workspace.tokenizer_path, "<|end|>") and vocab.token_eos() == 2
    assert vocab._model.token_eot() == end[0] and llama_vocab_is_eog(vocab._model.vocab, end[0])  # stops there
    for text in STRINGS + heldout_texts(eval_workspace):
        ours = our_ids(eval_workspace.tokenizer_path, text)
        # <|end|> is a control token (the end of a turn) that llama.cpp reads from text only with
        # special=True, as its chat path does; the other user-defined pieces match in both modes.
        assert vocab.tokenize(text.encode(), add_bos=False, special=True) == ours, text
        if "<|end|>" not in text:
            assert vocab.tokenize(text.encode(), add_bos=False, special=False) == ours, text
    llm = Llama(str(res.path / "model.gguf"), n_ctx=256, logits_all=True, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32,
                n_threads=1, verbose=False)
    ids = fixed_ids(600)[0]
    llm.eval(ids.tolist())
    theirs = torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))
    assert (theirs - our_logits(run_dir, ids[None])[0]).abs().max().item() < 1e-4


# -- MLX -------------------------------------------------------------------------------------------

needs_mlx = pytest.mark.skipif(importlib.util.find_spec("mlx_lm") is None,
                               reason='mlx-lm is not installed (pip install "mlx[cpu]" mlx-lm)')


def _mlx_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load

    model, tokenizer = load(str(folder))
    out = model(mx.array(ids.numpy()))
    return torch.from_numpy(np.array(out.astype(mx.float32))), tokenizer


@needs_mlx
@pytest.mark.parametrize("which", ["run", "lora_run"])
def test_mlx_export_loads_in_mlx_lm(eval_workspace, tmp_path, which, request):
    run_dir = run_of(eval_workspace, request, which)
    res = export_run(run_dir, "mlx", "f32", out=tmp_path / "mlx")
    ids = fixed_ids(600)
    theirs, tokenizer = _mlx_logits(res.path, ids)
    assert (theirs - our_logits(run_dir, ids)).abs().max().item() < 1e-4
    for text in STRINGS:
        assert tokenizer.encode(text) == our_ids(eval_workspace.tokenizer_path, text)


@needs_mlx
def test_mlx_q8_through_mlx_lm_converter(eval_workspace, tmp_path):
    res = export_run(eval_workspace.run, "mlx", "q8", out=tmp_path / "mlxq8")
    config = json.loads((res.path / "config.json").read_text())
    assert config["quantization"]["bits"] == 8
    ids = fixed_ids(600)
    theirs, _ = _mlx_logits(res.path, ids)
    ours = our_logits(eval_workspace.run, ids)
    assert torch.corrcoef(torch.stack([theirs.flatten(), ours.flatten()]))[0, 1] > 0.999


# -- refusals, vision tower, CLI ---------------------------------------------------------------------

def test_changed_tokenizer_is_refused(eval_workspace, tmp_path):
    changed = tmp_path / "tok.model"
    changed.write_bytes(eval_workspace.tokenizer_path.read_bytes() + b"\0")
    run = clone_run(eval_workspace.run, tmp_path / "run", tokenizer=changed)
    with pytest.raises(TokenizerError, match=r"tok\.model: changed since run .* trained \(sha256 .*\); restore"):
        export_run(run, "hf", "f32")
    assert not (run / "exports").exists()


def test_not_a_plain_llama_decoder_is_refused(eval_workspace, tmp_path):
    run = clone_run(eval_workspace.run, tmp_path / "run")
    write_checkpoint(run, 30, extra={"layers.0.attn.q_proj.bias": torch.zeros(64)})
    with pytest.raises(ModelError, match=r"layers\.0\.attn\.q_proj\.bias: not a tensor of a plain Llama decoder"):
        export_run(run, "gguf", "f32")
    with pytest.raises(FcError, match=r"no checkpoint at step 7 \(have steps 10, 20, 30\)"):
        export_run(run, "hf", "f32", step=7)


VISION = {"vision_layers": 2, "vision_width": 32, "vision_heads": 2, "vision_mlp_dim": 64, "image_size": 16,
          "patch_size": 4}


def vision_run(eval_workspace, dest: Path) -> tuple[Path, int]:
    """A copy of the base run whose model has a small tower, with a checkpoint at step 30 holding it
    (weights spread, biases and norms random) and the tokenizer's <image> id."""
    import tomli_w

    from engine.compat import tomllib
    from engine.data.tokenizer import Tokenizer
    from engine.eval.run_model import image_token_id
    from engine.jobs.rundir import RunDir
    from engine.model.projector import Projector
    from engine.model.vision import VisionTower

    run = clone_run(eval_workspace.run, dest)
    doc = tomllib.loads((run / "stage.toml").read_text(encoding="utf-8"))
    doc["stage"]["model"].update(VISION)
    (run / "stage.toml").write_text(tomli_w.dumps(doc), encoding="utf-8")
    cfg = RunDir(run).spec().model
    torch.manual_seed(4)
    parts = {"vision.": VisionTower(cfg), "projector.": Projector(cfg)}
    extra = {}
    for prefix, part in parts.items():
        for name, t in part.state_dict().items():
            extra[prefix + name] = t + 0.2 * torch.randn_like(t) if name.endswith("bias") or "norm" in name else t * 3
    write_checkpoint(run, 30, extra=extra)
    return run, image_token_id(Tokenizer.load(eval_workspace.tokenizer_path))


def test_hf_export_of_a_vision_run_is_llava_with_equal_logits(eval_workspace, tmp_path):
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from engine.model.multimodal import expand_image_tokens
    from engine.model.vision import to_pixels

    run, image_id = vision_run(eval_workspace, tmp_path / "run")
    res = export_run(run, "hf", "f32")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "processor_config.json",
            "tokenizer.json"} <= set(res.files) and "vision.safetensors" not in res.files
    model = LlavaForConditionalGeneration.from_pretrained(res.path, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(res.path, local_files_only=True)
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (1, 16, 16, 3), generator=g, dtype=torch.uint8)
    text = "A board:<image>\nwhite to move, 1. e4 e5"
    inputs = processor(text=text, images=Image.fromarray(pixels[0].numpy()), return_tensors="pt")
    ids = expand_image_tokens(our_ids(eval_workspace.tokenizer_path, text), image_id, 16)
    assert inputs["input_ids"][0].tolist() == ids
    assert (inputs["pixel_values"] - to_pixels(pixels)).abs().max() < 1e-6
    ours_model = load_run_model(run)
    with torch.no_grad():
        theirs = model(**inputs).logits
        ours = ours_model(torch.tensor([ids]), to_pixels(pixels))
    assert type(ours_model).__name__ == "VisionLanguageModel" and ours.abs().max() > 1.0
    assert (theirs - ours).abs().max().item() < 1e-4


def _mmproj_features(reader, pixels: torch.Tensor, layers: int, heads: int, eps: float) -> torch.Tensor:
    """What llama.cpp's LLaVA graph (clip.cpp, "mlp" projector) computes from an mmproj's tensors:
    patch conv + positions, pre-norm blocks up to the feature layer, no post_ln, mm.0 -> GELU -> mm.2."""
    import torch.nn.functional as F

    t = {x.name: torch.from_numpy(x.data.copy()).float() for x in reader.tensors}

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], t[name + ".weight"], t[name + ".bias"], eps)

    def lin(x, name):
        return x @ t[name + ".weight"].T + t[name + ".bias"]

    x = F.conv2d(pixels, t["v.patch_embd.weight"], t["v.patch_embd.bias"], stride=t["v.patch_embd.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2) + t["v.position_embd.weight"]
    for i in range(layers):
        b = f"v.blk.{i}"
        h = norm(x, f"{b}.ln1")
        q, k, v = (lin(h, f"{b}.attn_{n}").unflatten(-1, (heads, -1)).transpose(1, 2) for n in "qkv")
        x = x + lin(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2), f"{b}.attn_out")
        x = x + lin(F.gelu(lin(norm(x, f"{b}.ln2"), f"{b}.ffn_up"), approximate="tanh"), f"{b}.ffn_down")
    return lin(F.gelu(lin(x, "mm.0"), approximate="tanh"), "mm.2")


def test_gguf_export_of_a_vision_run_writes_a_llama_cpp_mmproj(eval_workspace, tmp_path):
    from gguf import GGUFReader

    from engine.model.vision import to_pixels

    run, _ = vision_run(eval_workspace, tmp_path / "run")
    res = export_run(run, "gguf", "f32")
    assert {"model.gguf", "mmproj.gguf"} <= set(res.files) and "vision.safetensors" not in res.files
    reader = GGUFReader(str(res.path / "mmproj.gguf"))

    def field(key):
        f = reader.fields[key]
        values = [f.parts[i] for i in f.data]
        return bytes(values[0]).decode() if f.types[0].name == "STRING" else [v.tolist()[0] for v in values]

    cfg = load_run_model(run).cfg
    assert field("general.architecture") == "clip" and field("clip.projector_type") == "mlp"
    assert field("clip.vision.feature_layer") == [cfg.vision_layers]
    assert field("clip.vision.projection_dim") == [cfg.dim] and field("clip.vision.image_size") == [cfg.image_size]
    names = {x.name for x in reader.tensors}
    assert "v.post_ln.weight" not in names and {"mm.0.weight", "mm.2.bias", "v.blk.1.ffn_up.weight"} <= names
    g = torch.Generator().manual_seed(2)
    pixels = to_pixels(torch.randint(0, 256, (1, 16, 16, 3), generator=g, dtype=torch.uint8))
    ours = load_run_model(run)
    with torch.no_grad():
        want = ours.image_embeddings(pixels)
        got = _mmproj_features(reader, pixels, cfg.vision_layers, cfg.vision_heads, cfg.vision_norm_eps)
    assert want.abs().max() > 0.5
    assert (got - want).abs().max().item() < 2e-3  # the projector's GELU: llama.cpp's tanh form, our exact one


def test_vision_tensors_of_another_shape_are_refused(eval_workspace, tmp_path):
    run = clone_run(eval_workspace.run, tmp_path / "run")
    write_checkpoint(run, 30, extra={"vision.patch_embed.weight": torch.ones(8, 3, 4, 4)})
    with pytest.raises(ModelError, match=r"vision\.patch_embed\.weight: the run's model has no vision tower"):
        export_run(run, "hf", "f32")


def _fcwork(ws_root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fcwork.cli", *args, "--workspace", str(ws_root)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_cli_export_writes_the_folder_and_errors_are_one_line(eval_workspace, tmp_path):
    run = clone_run(eval_workspace.run, eval_workspace.ws.runs_dir / "cli-export-run")
    done = _fcwork(eval_workspace.ws.root, "export", run.name, "--format", "gguf", "--dtype", "f16", "--step", "10")
    assert done.returncode == 0, done.stderr
    assert (run / "exports" / "gguf-f16-step10" / "model.gguf").exists()
    manifest = json.loads((run / "exports" / "gguf-f16-step10" / "fcwork-export.json").read_text())
    assert manifest["step"] == 10 and manifest["qk_permuted"] is True
    bad = _fcwork(eval_workspace.ws.root, "export", run.name, "--format", "hf", "--dtype", "q8")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "q8" in bad.stderr
    missing = _fcwork(eval_workspace.ws.root, "export", "no-such-run", "--format", "hf")
    assert missing.returncode == 2 and "no run 'no-such-run'" in missing.stderr

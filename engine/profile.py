"""Training-campaign profiles: load a TOML file into validated dataclasses, and write it back.

Every error is one line: `FILE: key.path: expected ..., got ...`.
"""

from __future__ import annotations

import math
import re
from engine.compat import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Union, get_args, get_origin, get_type_hints

import tomli_w

from engine.atomic import atomic_write_text
from engine.errors import MixError, ProfileError, describe_value
from engine.mix import check_mix, normalise
from engine.model.config import PRESETS, ModelConfig
from engine.templates import TemplateError, parse_template

SOURCE_FORMATS = ("text", "jsonl", "parquet", "webdataset", "pgn")
RECORD_FORMATS = ("jsonl", "parquet")  # formats whose documents come from records: template, where
PGN_KEYS = ("min_elo", "time_control", "results", "headers", "comments", "validate_moves")
TIME_CONTROL_CLASSES = ("ultrabullet", "bullet", "blitz", "rapid", "classical", "correspondence")
PGN_RESULTS = ("1-0", "0-1", "1/2-1/2", "*")
BUILTIN_PREFIX = "builtin:"
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")  # the decoder's projections a LoRA stage may adapt
SPECIAL_SYMBOLS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<image>")
IMAGE_FORMATS = ("webdataset", "parquet")  # file formats that may carry images (`image` key)
IMAGE_BUILTINS = ("chess-diagrams", "charts")  # built-ins of image-text pairs (engine.data.builtin)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


def _fraction(v: Any) -> bool:
    return 0 < v < 1


def _name(v: Any) -> bool:
    return bool(_NAME_RE.match(v))


def _choice(*options: str) -> Callable[[Any], bool]:
    return lambda v: v in options


def spec(default: Any = MISSING, check: Callable[[Any], bool] | None = None, expect: str = "", **kw: Any) -> Any:
    """A dataclass field with a validity check and the phrase used when it fails (`kw`: default_factory)."""
    return field(default=default, metadata={"check": check, "expect": expect}, **kw)


@dataclass
class ProfileMeta:
    """The `[profile]` table."""

    name: str = spec(check=_name, expect="a name of letters, digits, '_', '-' or '.'")
    description: str = ""
    seed: int = spec(1234, _non_negative, "a non-negative integer")


@dataclass
class DataConfig:
    """The `[data]` table: how big the corpus is and how it is split."""

    target_tokens: int = spec(2_000_000, _positive, "a positive integer")
    heldout_fraction: float = spec(0.02, lambda v: 0 < v < 0.5, "a number between 0 and 0.5")
    chars_per_token: float = spec(3.6, _positive, "a positive number")
    max_doc_chars: int = spec(200_000, _positive, "a positive integer")
    min_doc_chars: int = spec(16, _non_negative, "a non-negative integer")
    # Each domain's share of target_tokens, normalised; a domain left out gets none. Empty: equal
    # shares over the [mix] domains that have sources. The mix decides sampling, these the corpus.
    shares: dict[str, float] = spec(default_factory=dict)
    # `fcwork queue add` warns when a stage would pass over a domain's tokens more often than this.
    warn_epochs: float = spec(4.0, _positive, "a positive number")
    # Image-text sources: the square side images are resized to once (a stage's tower may ask for
    # another size, built on demand), and the largest image decoded (more pixels: a decompression bomb).
    image_size: int = spec(64, lambda v: 8 <= v <= 4096, "an integer from 8 to 4096")
    max_image_pixels: int = spec(40_000_000, _positive, "a positive integer")


@dataclass
class SourceConfig:
    """One `[[sources]]` entry of the manifest."""

    name: str = spec(check=_name, expect="a name of letters, digits, '_', '-' or '.'")
    domain: str = spec(check=_name, expect="a domain name")
    format: str = spec(
        check=lambda v: v in SOURCE_FORMATS or (v.startswith(BUILTIN_PREFIX) and len(v) > len(BUILTIN_PREFIX)),
        expect="one of text, jsonl, parquet, webdataset, pgn or builtin:NAME",
    )
    path: str = ""  # a local glob, or an fsspec URL (s3://, https://, hf://datasets/ORG/NAME/...)
    field: str = spec("text", lambda v: bool(v), "a non-empty field name")  # dotted for nested fields
    template: str = ""  # instead of field: "{title}\n\n{abstract}" (records: jsonl, parquet)
    where: dict[str, Union[str, int, float, bool, list]] = spec(default_factory=dict)  # keep rows equal to these
    split: str = spec("file", _choice("file", "paragraph"), "'file' or 'paragraph'")
    weight: float = spec(1.0, _positive, "a positive number")  # share of the domain's characters
    fallback: bool = False  # only fills what the domain's other sources cannot
    max_docs: int = spec(0, _non_negative, "a non-negative integer (0: no limit)")
    max_chars: int = spec(0, _non_negative, "a non-negative integer (0: no limit)")
    optional: bool = False  # true: a glob matching no files is a warning, and `data build` goes on without it
    # format = "pgn": one game a document, filtered on ratings, time control and result.
    min_elo: int = spec(0, _non_negative, "a non-negative integer (0: no rating filter)")
    time_control: list[str] = spec(default_factory=list)  # classes (blitz, ...) or exact "180+2"
    results: list[str] = spec(default_factory=list)  # of 1-0, 0-1, 1/2-1/2, *
    headers: bool = True  # keep the tag pairs ([White "..."]) above the moves
    comments: bool = True  # keep {comments} such as Lichess's [%clk] and [%eval]
    validate_moves: bool = False  # parse every move (~100 games/s): skip illegal games, rewrite the moves
    # Image-text pairs: the image member suffixes of a webdataset ("jpg;png", or "auto": jpg, jpeg,
    # png, webp) or the image column of a parquet file; `field` then names the caption.
    image: str = ""

    @property
    def builtin(self) -> str | None:
        """The built-in generator's name, or None for a file source."""
        return self.format[len(BUILTIN_PREFIX):] if self.format.startswith(BUILTIN_PREFIX) else None

    @property
    def is_image(self) -> bool:
        """An image-text source: built into image shards (engine.data.imagedata), not the text corpus."""
        return bool(self.image) or self.builtin in IMAGE_BUILTINS


@dataclass
class TokenizerConfig:
    """The `[tokenizer]` table: SentencePiece training settings."""

    name: str = spec("", lambda v: v == "" or _name(v), "a tokenizer name (empty: the profile's name)")
    vocab_size: int = spec(8000, lambda v: v >= 300, "an integer of at least 300")
    model_type: str = spec("bpe", _choice("bpe", "unigram"), "'bpe' or 'unigram'")
    sample_chars: int = spec(4_000_000, _positive, "a positive integer")
    character_coverage: float = spec(0.9995, lambda v: 0 < v <= 1, "a number in (0, 1]")
    user_symbols: list[str] = spec(default_factory=lambda: list(SPECIAL_SYMBOLS))
    threads: int = spec(0, _non_negative, "a non-negative integer (0: all cores)")


@dataclass
class EvalConfig:
    """The `[eval]` table: the profile's own benchmark suites for `fcwork eval RUN --suite NAME`."""

    # suite name -> lm-eval task or group names (a name here wins over a built-in suite of engine.lmeval)
    suites: dict[str, list[str]] = spec(default_factory=dict, expect='a table of NAME = ["task", ...]')
    # folders of lm-eval YAML task configs (relative to the profile's folder), searched before lm-eval's own
    task_paths: list[str] = spec(default_factory=list)


@dataclass
class StageConfig:
    """One `[[stages]]` entry: a training stage."""

    name: str = spec(check=_name, expect="a name of letters, digits, '_', '-' or '.'")
    model: Union[str, dict] = "tiny"
    seq_len: int = spec(256, _positive, "a positive integer")
    micro_batch: int = spec(8, _positive, "a positive integer")
    grad_accum: int = spec(1, _positive, "a positive integer")
    max_steps: int = spec(200, _positive, "a positive integer")
    lr: float = spec(1e-3, _positive, "a positive number")
    # Per-part learning rates of a model with a vision tower (nanoVLM's way): the peak lr of the
    # decoder, the tower and the projector, each following the stage's schedule; 0 freezes the part,
    # -1 takes `lr`. An align stage: lr_decoder = 0; a joint stage: all of them trained.
    lr_decoder: float = spec(-1.0, lambda v: v == -1 or v >= 0, "a non-negative number (0 freezes the part) or -1 (lr)")
    lr_vision: float = spec(-1.0, lambda v: v == -1 or v >= 0, "a non-negative number (0 freezes the part) or -1 (lr)")
    lr_projector: float = spec(-1.0, lambda v: v == -1 or v >= 0,
                               "a non-negative number (0 freezes the part) or -1 (lr)")
    min_lr_ratio: float = spec(0.1, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    warmup_steps: int = spec(20, _non_negative, "a non-negative integer")
    schedule: str = spec("cosine", _choice("cosine", "wsd", "constant"), "'cosine', 'wsd' or 'constant'")
    decay_fraction: float = spec(0.2, lambda v: 0 < v <= 1, "a number in (0, 1]")
    weight_decay: float = spec(0.1, _non_negative, "a non-negative number")
    beta1: float = spec(0.9, _fraction, "a number between 0 and 1")
    beta2: float = spec(0.95, _fraction, "a number between 0 and 1")
    grad_clip: float = spec(1.0, _non_negative, "a non-negative number (0: off)")
    device: str = spec("auto", _choice("auto", "cpu", "cuda", "mps"), "'auto', 'cpu', 'cuda' or 'mps'")
    # fp8: bf16 autocast with the decoder's linears in float8 (torchao; CUDA GPUs of capability 8.9+).
    precision: str = spec("auto", _choice("auto", "fp32", "bf16", "fp8"), "'auto', 'fp32', 'bf16' or 'fp8'")
    fp8_recipe: str = spec("tensorwise", _choice("tensorwise", "rowwise"), "'tensorwise' or 'rowwise'")
    # Past one device: processes per node (torchrun's --nproc-per-node), nodes, and how the model is
    # spread over them. grad_accum stays per device: a step trains micro_batch x grad_accum x devices
    # x nodes sequences.
    devices: int = spec(1, _positive, "a positive integer")
    nodes: int = spec(1, _positive, "a positive integer")
    strategy: str = spec("ddp", _choice("ddp", "fsdp"), "'ddp' or 'fsdp'")
    compile: str = spec("auto", _choice("auto", "on", "off"), "'auto', 'on' or 'off'")
    activation_checkpointing: bool = False
    checkpoint_every: int = spec(100, _positive, "a positive integer")
    keep_checkpoints: int = spec(2, _positive, "a positive integer")
    eval_every: int = spec(50, _non_negative, "a non-negative integer (0: off)")
    eval_batches: int = spec(4, _positive, "a positive integer")
    eval_probes: bool = True  # each eval also runs the domain probes and one sample per domain
    log_every: int = spec(1, _positive, "a positive integer")
    init_from: str = ""
    # A local SigLIP checkpoint folder (*.safetensors of a SiglipVisionModel, SiglipModel or LLaVA) to
    # start the vision tower from, instead of from scratch; its shape must be the model's tower.
    vision_init: str = ""
    seed: int = spec(0, _non_negative, "a non-negative integer")
    max_restarts: int = spec(2, _non_negative, "a non-negative integer")
    mix: dict[str, float] = spec(default_factory=dict)
    # Mix suggestions from the per-domain held-out loss (engine/train/suggest.py), made at evals:
    # "fixed" none, "suggest" proposes (a `suggestion` event the owner may accept), "auto" applies them.
    mix_policy: str = spec("fixed", _choice("fixed", "suggest", "auto"), "'fixed', 'suggest' or 'auto'")
    suggest_every: int = spec(0, _non_negative, "a non-negative integer (0: at every eval)")
    mix_min: float = spec(0.02, lambda v: 0 <= v < 1, "a number in [0, 1)")  # a suggestion's floor per domain
    mix_max: float = spec(0.6, lambda v: 0 < v <= 1, "a number in (0, 1]")  # and its ceiling
    mix_max_change: float = spec(0.1, lambda v: 0 < v <= 1, "a number in (0, 1]")  # per domain, per suggestion
    # Passes over a domain's training tokens past which a suggestion never raises it (0: data.warn_epochs).
    mix_max_epochs: float = spec(0.0, _non_negative, "a non-negative number (0: data.warn_epochs)")
    # Chat SFT: rows packed from whole documents, loss on assistant turns (and their <|end|>) only.
    sft: bool = False
    # LoRA on the frozen weights of init_from (0: off, every weight trains): rank, alpha (the update is
    # scaled by alpha / rank), dropout on the adapters' input, and which projections get adapters.
    lora_rank: int = spec(0, _non_negative, "a non-negative integer (0: no LoRA)")
    lora_alpha: float = spec(16.0, _positive, "a positive number")
    lora_dropout: float = spec(0.0, lambda v: 0 <= v < 1, "a number in [0, 1)")
    lora_targets: list[str] = spec(default_factory=lambda: list(LORA_TARGETS))

    def model_config(self, vocab_size: int = 0) -> ModelConfig:
        """The model shape this stage trains, with the tokenizer's vocabulary filled in."""
        cfg = PRESETS[self.model] if isinstance(self.model, str) else ModelConfig(**self.model)
        return cfg.with_vocab(vocab_size) if vocab_size else cfg

    def part_lr(self, part: str) -> float:
        """The peak learning rate of a part (decoder, vision, projector): its own, else `lr`."""
        own = {"decoder": self.lr_decoder, "vision": self.lr_vision, "projector": self.lr_projector}[part]
        return self.lr if own < 0 else own

    @property
    def world_size(self) -> int:
        """The trainer's processes, one per device: devices x nodes (1: no process group)."""
        return self.devices * self.nodes


@dataclass
class Profile:
    """A whole training campaign: sources, mix, tokenizer, stages."""

    profile: ProfileMeta
    mix: dict[str, float]
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    sources: list[SourceConfig] = field(default_factory=list)
    stages: list[StageConfig] = field(default_factory=list)
    eval: EvalConfig = field(default_factory=EvalConfig)
    path: Path | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name or self.profile.name

    @property
    def domains(self) -> list[str]:
        """Domains with a positive mix weight, in the profile's order."""
        return [d for d, w in self.mix.items() if w > 0]

    @property
    def image_domains(self) -> list[str]:
        """Domains of image-text sources, in the profile's order (their mix weight is the share of
        micro-batches that carry an image); the text corpus leaves them out."""
        return list(dict.fromkeys(s.domain for s in self.sources if s.is_image))

    def stage(self, name: str) -> StageConfig:
        for st in self.stages:
            if st.name == name:
                return st
        known = ", ".join(s.name for s in self.stages) or "none"
        raise ProfileError(f"{self.path or self.name}: stages: no stage named {name!r} (known: {known})")

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain TOML-ready data (inverse of `parse_profile`), an all-default [eval] left out."""
        out = {k: v for k, v in asdict(self).items() if k != "path"}
        if self.eval == EvalConfig():
            del out["eval"]
        return out


def normalise_mix(mix: dict[str, float]) -> dict[str, float]:
    """The mix scaled to sum to 1 (engine.mix.normalise); a bad one is a ProfileError."""
    try:
        return normalise(mix)
    except MixError as exc:
        raise ProfileError(str(exc)) from None


def _type_ok(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is list:
        return isinstance(value, list)
    if origin is Union:
        return any(_type_ok(value, h) for h in get_args(hint))
    if origin is list:
        (inner,) = get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if origin is dict or hint is dict:
        args = get_args(hint)
        return isinstance(value, dict) and (not args or all(_type_ok(v, args[1]) for v in value.values()))
    return False


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table",
               list: "a list"}


def _type_word(hint: Any) -> str:
    if hint in _TYPE_WORDS:
        return _TYPE_WORDS[hint]
    origin = get_origin(hint)
    if origin is Union:
        return " or ".join(_type_word(h) for h in get_args(hint))
    if origin is list:
        return f"a list of {_type_word(get_args(hint)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return f"a table of {_type_word(get_args(hint)[1]).removeprefix('a ').removeprefix('an ')}s"
    return str(hint)


def _build(cls: type, table: Any, where: str, fail: Callable[[str], ProfileError]) -> Any:
    """Check `table` against dataclass `cls` (unknown keys, missing keys, types, ranges)."""
    if not isinstance(table, dict):
        raise fail(f"{where}: expected a table, got {describe_value(table)}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in known:
            raise fail(f"{where}.{key}: unknown key (expected one of {', '.join(known)})")
    values = {}
    for name, f in known.items():
        path = f"{where}.{name}"
        if name not in table:
            if f.default is MISSING and f.default_factory is MISSING:
                raise fail(f"{path}: missing (expected {f.metadata.get('expect') or _type_word(hints[name])})")
            continue
        value = table[name]
        if not _type_ok(value, hints[name]):
            want = f.metadata.get("expect") or _type_word(hints[name])
            raise fail(f"{path}: expected {want}, got {describe_value(value)}")
        check = f.metadata.get("check")
        if check is not None and not check(value):
            raise fail(f"{path}: expected {f.metadata['expect']}, got {describe_value(value)}")
        if hints[name] is float:
            value = float(value)
        values[name] = value
    return cls(**values)


def parse_profile(data: dict[str, Any], origin: str = "<profile>") -> Profile:
    """Validate a profile already parsed from TOML; `origin` prefixes every error."""

    def fail(msg: str) -> ProfileError:
        return ProfileError(f"{origin}: {msg}")

    top = {"profile", "mix", "data", "tokenizer", "sources", "stages", "eval"}
    for key in data:
        if key not in top:
            raise fail(f"{key}: unknown key (expected one of {', '.join(sorted(top))})")
    if "profile" not in data:
        raise fail("profile: missing (expected a [profile] table with a name)")
    meta = _build(ProfileMeta, data["profile"], "profile", fail)

    try:
        mix = check_mix(data.get("mix"))
    except MixError as exc:
        raise fail(str(exc)) from None

    dcfg = _build(DataConfig, data.get("data", {}), "data", fail)
    tcfg = _build(TokenizerConfig, data.get("tokenizer", {}), "tokenizer", fail)

    raw_sources = data.get("sources", [])
    if not isinstance(raw_sources, list):
        raise fail(f"sources: expected an array of tables ([[sources]]), got {describe_value(raw_sources)}")
    sources = [_build(SourceConfig, s, f"sources[{i}]", fail) for i, s in enumerate(raw_sources)]
    seen: set[str] = set()
    for i, src in enumerate(sources):
        if src.name in seen:
            raise fail(f"sources[{i}].name: expected a unique name, got duplicate {describe_value(src.name)}")
        seen.add(src.name)
        if src.domain not in mix:
            raise fail(
                f"sources[{i}].domain: expected a domain with a weight in [mix] "
                f"({', '.join(mix)}), got {describe_value(src.domain)}"
            )
        if src.builtin is None and not src.path:
            raise fail(f"sources[{i}].path: expected a path or glob for format {describe_value(src.format)}, got nothing")
        _check_source(src, raw_sources[i], f"sources[{i}]", fail)
    image_domains = {s.domain for s in sources if s.is_image}
    for i, src in enumerate(sources):
        if not src.is_image and src.domain in image_domains:
            raise fail(f"sources[{i}].domain: expected a domain without image-text sources (text and image-text "
                       f"sources need domains of their own), got {describe_value(src.domain)}")

    for domain, share in dcfg.shares.items():
        if domain not in mix:
            raise fail(f"data.shares.{domain}: expected a domain of [mix] ({', '.join(mix)})")
        if share < 0:
            raise fail(f"data.shares.{domain}: expected a non-negative number, got {describe_value(share)}")
    if dcfg.shares and sum(dcfg.shares.values()) <= 0:
        raise fail("data.shares: expected at least one positive share, got all zero")

    raw_stages = data.get("stages", [])
    if not isinstance(raw_stages, list):
        raise fail(f"stages: expected an array of tables ([[stages]]), got {describe_value(raw_stages)}")
    stages: list[StageConfig] = []
    for i, raw in enumerate(raw_stages):
        stages.append(parse_stage(raw, f"stages[{i}]", fail, mix, [s.name for s in stages]))
    ecfg = _build(EvalConfig, data.get("eval", {}), "eval", fail)
    for name, tasks in ecfg.suites.items():
        if not _name(name):
            raise fail(f"eval.suites.{name}: expected a suite name of letters, digits, '_', '-' or '.'")
        if not tasks or not all(t.strip() for t in tasks):
            raise fail(f"eval.suites.{name}: expected a non-empty list of lm-eval task names, "
                       f"got {describe_value(tasks)}")
    return Profile(profile=meta, mix=mix, data=dcfg, tokenizer=tcfg, sources=sources, stages=stages, eval=ecfg)


def _check_source(src: SourceConfig, raw: dict, where: str, fail: Callable[[str], ProfileError]) -> None:
    """Keys that only make sense for some formats, templates that do not parse, filters of the wrong shape."""
    if src.template and raw.get("field", "text") != "text":
        raise fail(f"{where}.template: expected either field or template, not both")
    if (src.template or src.where) and src.format not in RECORD_FORMATS:
        key = "template" if src.template else "where"
        raise fail(f"{where}.{key}: only for record formats ({', '.join(RECORD_FORMATS)}), got format {describe_value(src.format)}")
    if src.template:
        try:
            parse_template(src.template)
        except TemplateError as exc:
            raise fail(f"{where}.template: {exc}, got {describe_value(src.template)}") from None
    for column, value in src.where.items():
        values = value if isinstance(value, list) else [value]
        if not values or any(isinstance(v, (list, dict)) for v in values):
            raise fail(f"{where}.where.{column}: expected a value or a list of values, got {describe_value(value)}")
    if src.image and src.format not in IMAGE_FORMATS:
        raise fail(f"{where}.image: only for formats {', '.join(IMAGE_FORMATS)}, got format {describe_value(src.format)}")
    if src.image and (src.template or src.where):
        raise fail(f"{where}.{'template' if src.template else 'where'}: not for image-text sources (`field` names the caption)")
    if src.format != "pgn":
        defaults = SourceConfig(name="x", domain="x", format="text")
        for key in PGN_KEYS:
            if key in raw and raw[key] != getattr(defaults, key):
                raise fail(f"{where}.{key}: only for format \"pgn\", got format {describe_value(src.format)}")
    for tc in src.time_control:
        if tc not in TIME_CONTROL_CLASSES and tc != "-" and not re.fullmatch(r"\d+(\+\d+)?", tc):
            raise fail(f"{where}.time_control: expected {', '.join(TIME_CONTROL_CLASSES)} or BASE+INCREMENT "
                       f"such as \"180+2\", got {describe_value(tc)}")
    for result in src.results:
        if result not in PGN_RESULTS:
            raise fail(f"{where}.results: expected results among {', '.join(PGN_RESULTS)}, got {describe_value(result)}")


def parse_stage(raw: Any, where: str, fail: Callable[[str], Exception], mix: dict,
                earlier: list[str] | None = None) -> StageConfig:
    """One stage table, checked against the profile's `mix` domains; errors name `where` (its key
    path). `earlier` are the stage names before it, which `init_from` may name; None for a frozen
    stage, whose `init_from` was resolved to a checkpoint when its run was made."""
    st = _build(StageConfig, raw, where, fail)
    _check_stage(st, where, earlier, mix, fail)
    return st


def _check_stage(st: StageConfig, where: str, earlier: list[str] | None, mix: dict,
                 fail: Callable[[str], ProfileError]) -> None:
    if earlier is not None and st.name in earlier:
        raise fail(f"{where}.name: expected a unique stage name, got duplicate {describe_value(st.name)}")
    if isinstance(st.model, str):
        if st.model not in PRESETS:
            raise fail(f"{where}.model: expected a preset ({', '.join(PRESETS)}) or an inline table, got {describe_value(st.model)}")
    else:
        cfg = _build(ModelConfig, st.model, f"{where}.model", fail)
        problems = cfg.check()
        if problems:
            raise fail(f"{where}.model.{problems[0]}")
    if st.device == "mps" and st.devices > 1:
        raise fail(f"{where}.devices: expected 1 on device \"mps\" (a Mac has one GPU), got {st.devices}")
    model = st.model_config()
    if st.seq_len > model.max_seq_len:
        raise fail(f"{where}.seq_len: expected at most the model's max_seq_len ({model.max_seq_len}), got {st.seq_len}")
    if earlier is not None and st.init_from and st.init_from not in earlier:
        known = ", ".join(earlier) or "none"
        raise fail(f"{where}.init_from: expected the name of an earlier stage ({known}), got {describe_value(st.init_from)}")
    if st.warmup_steps >= st.max_steps and st.max_steps > 1:
        raise fail(f"{where}.warmup_steps: expected fewer than max_steps ({st.max_steps}), got {st.warmup_steps}")
    if st.mix_policy != "fixed":
        if not st.eval_every:
            raise fail(f"{where}.mix_policy: expected \"fixed\" when eval_every = 0 (suggestions come from the "
                       f"held-out loss), got {describe_value(st.mix_policy)}")
        if st.suggest_every % st.eval_every:
            raise fail(f"{where}.suggest_every: expected a multiple of eval_every ({st.eval_every}), got {st.suggest_every}")
    if st.mix_min > st.mix_max:
        raise fail(f"{where}.mix_min: expected at most mix_max ({st.mix_max:g}), got {st.mix_min:g}")
    for target in st.lora_targets:
        if target not in LORA_TARGETS:
            raise fail(f"{where}.lora_targets: expected names among {', '.join(LORA_TARGETS)}, got {describe_value(target)}")
    if st.lora_rank:
        if not st.lora_targets:
            raise fail(f"{where}.lora_targets: expected at least one of {', '.join(LORA_TARGETS)} when lora_rank > 0")
        if not st.init_from:
            raise fail(f"{where}.init_from: expected an earlier stage whose weights LoRA adapts (lora_rank is {st.lora_rank})")
        if st.strategy == "fsdp" and st.world_size > 1:
            raise fail(f"{where}.strategy: expected \"ddp\" with lora_rank > 0 (the adapters are small; FSDP is for whole models)")
    if st.mix:  # empty: the stage trains on the profile's mix
        try:
            check_mix(st.mix, mix, f"{where}.mix", domains_of="[mix]")
        except MixError as exc:
            raise fail(str(exc)) from None


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile file") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: expected UTF-8 text, got an undecodable byte at offset {exc.start}") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read ({exc.strerror})") from None
    return loads_profile(text, str(path), path)


def loads_profile(text: str, origin: str = "<profile>", path: Path | None = None) -> Profile:
    """Parse and validate profile text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{origin}: invalid TOML: {exc}") from None
    prof = parse_profile(data, origin)
    prof.path = path
    return prof


def dumps_profile(profile: Profile) -> str:
    """The profile as TOML text (loads back to an equal profile)."""
    return tomli_w.dumps(profile.to_dict())


def save_mix(path: str | Path, mix: dict[str, float]) -> Profile:
    """Set the weights of the profile's `[mix]` table at `path` in place: comments, layout, key
    order and the rest of the file (`1_500_000`, `[[sources]]` tables) stay as written; a domain
    of the table not in `mix` is removed, a new one added at its end. The result is checked as
    a profile before it replaces the file (atomically)."""
    import tomlkit  # format-preserving TOML: only the [mix] values change (tomli-w rewrites the whole file)
    from tomlkit.exceptions import TOMLKitError

    path = Path(path)
    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, TOMLKitError) as exc:
        raise ProfileError(f"{path}: cannot update the mix: {exc}") from None
    table = doc.get("mix")
    if not isinstance(table, dict):
        table = tomlkit.table()
        doc["mix"] = table
    for domain in [d for d in table if d not in mix]:
        del table[domain]
    for domain, weight in mix.items():
        weight = float(weight)
        # An integer weight stays an integer (`code = 3`), any other is written as a float.
        keep_int = isinstance(table.get(domain), int) and not isinstance(table.get(domain), bool) and weight.is_integer()
        table[domain] = int(weight) if keep_int else weight
    text = tomlkit.dumps(doc)
    prof = parse_profile(tomllib.loads(text), str(path))
    atomic_write_text(path, text)
    prof.path = path
    return prof

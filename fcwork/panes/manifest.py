"""Manifest pane: the profile's sources with size and token estimates, and the mix as editable numbers.

Enter in a weight checks the whole mix (engine.mix), shows it normalised on the bars (or says on
them why it is invalid), and sends it to the running stage as a control request; the trainer's
`answer` to it is shown as "applied at step N". Beside each weight is the share the running stage
trains with now (its live mix, which run it is and since which step on the line below), so a live
change is never mistaken for lost. ctrl+o writes the typed weights into the profile's [mix] in place.
ctrl+b prepares the profile's data (corpus, tokenizer, shards, image-text pairs, each only when out
of date) in a child process (fcwork.jobs), with its progress shown under the sources. A profile
with image-text sources also gets, under the mix, each image domain's counts (images, pairs, what
was skipped and why) and a sample image drawn in half blocks with its caption.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Label, ProgressBar, Static

from engine.errors import FcError
from engine.jobs.protocol import Answer, Event
from engine.jobs.rundir import RunDir
from engine.mix import describe, normalise, parse_weights
from fcwork.format import fmt_bytes
from fcwork.panes.base import Pane
from fcwork.widgets.bars import Bar
from fcwork.widgets.colors import theme_color
from fcwork.widgets.halfblock import ImagePreview
from fcwork.widgets.row_table import RowTable
from fcwork.widgets.textline import PartsLine


SOURCES_S = 2.0  # how often the shown pane re-checks its sources on disk
REDRAW_S = 1.0  # how often the shown pane redraws the live mix
NARROW = 72  # narrower than this, the sources table leaves out the format column


def fmt_count(n: float) -> str:
    """A count as the sources table shows it: "1.2M", "34.5k", "812"."""
    return next((f"{n / scale:.1f}{unit}" for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)) if n >= scale),
                f"{int(n)}")


@dataclass
class SourceRow:
    """One line of the sources table."""

    name: str
    domain: str
    format: str
    status: str
    size: str
    tokens: str


def describe_sources(ws: Any, profile: Any) -> list[SourceRow]:
    """Source rows for a profile: status and size from disk, tokens from the corpus manifest when built."""
    from engine.data.corpus import read_manifest
    from engine.data.sources import describe_source

    base = profile.path.parent if profile.path else None
    manifest = read_manifest(ws.raw_dir(profile.name)) or {}
    domains = manifest.get("domains", {}) if isinstance(manifest.get("domains"), dict) else {}
    images = _image_manifest(ws, profile).get("domains", {}) if profile.image_domains else {}
    rows = []
    for src in profile.sources:
        info = describe_source(src, base)
        dom = domains.get(src.domain) or {}
        docs_by_source = dom.get("sources") or {}
        est, docs = dom.get("est_tokens"), dom.get("docs")
        tokens = "-"
        if src.is_image:  # image-text sources: the images kept at the last build, not tokens
            kept = ((images.get(src.domain) or {}).get("sources") or {}).get(src.name)
            tokens = f"{fmt_count(kept)} img" if isinstance(kept, int) else "-"
        elif isinstance(est, (int, float)) and isinstance(docs, int) and docs > 0 and src.name in docs_by_source:
            # The domain's built tokens shared out by the documents this source gave.
            tokens = fmt_count(est * docs_by_source[src.name] / max(docs, sum(docs_by_source.values())))
        elif info.files:
            tokens = "~" + fmt_count(info.est_tokens(profile.data.chars_per_token))
        size = fmt_bytes(info.bytes) if info.files else "-"
        rows.append(SourceRow(info.name, info.domain, info.format, info.status, size, tokens))
    return rows


def _image_manifest(ws: Any, profile: Any) -> dict:
    from engine.data.imagedata import read_image_manifest

    return read_image_manifest(ws, profile) or {}


@dataclass
class ImageRow:
    """One image-text domain as the pane shows it: its counts, skips, and where its sample comes from."""

    domain: str
    line: str  # "caption 64 px: 1,154 images, 1,723 pairs (34 held out); skipped 2 corrupt image"
    build_id: str


def describe_images(ws: Any, profile: Any) -> tuple[list[ImageRow], Any, str]:
    """The image-text domains at `data.image_size` (from the image build's manifest), and a sample:
    the first training image of the first built domain (uint8 pixels) with its caption."""
    import json

    from engine.data.imagedata import image_dir
    from engine.data.imageshards import open_images
    from engine.errors import ShardError

    manifest = _image_manifest(ws, profile)
    size = manifest.get("size", profile.data.image_size)
    built = manifest.get("domains") or {}
    rows, pixels, caption = [], None, ""
    for dom in profile.image_domains:
        m = built.get(dom)
        if not isinstance(m, dict):
            rows.append(ImageRow(dom, f"{dom}: not built yet (ctrl+b builds it)", ""))
            continue
        skipped = ", ".join(f"{n:,} {why}" for why, n in (m.get("skipped") or {}).items())
        line = (f"{dom} {size} px: {m.get('images', 0):,} images, {m.get('pairs', 0):,} pairs "
                f"({m.get('heldout_pairs', 0):,} held out)" + (f"; skipped {skipped}" if skipped else "; nothing skipped"))
        if m.get("problems"):
            line += f"; {len(m['problems'])} problem(s): {m['problems'][0]}"
        rows.append(ImageRow(dom, line, str(m.get("build_id", ""))))
        if pixels is None and m.get("images"):
            folder = image_dir(ws, profile, size)
            try:
                shard = open_images(folder / dom)
                pixels = shard.image(0).copy()
                with open(folder / f"{dom}.captions.jsonl", encoding="utf-8") as fh:
                    caption = str(json.loads(fh.readline()).get("text", ""))
            except (ShardError, OSError, ValueError, IndexError):
                pixels, caption = None, ""
    return rows, pixels, caption


class ManifestPane(Pane):
    """Sources and the editable mix of the active profile."""

    TITLE = "Manifest"
    BINDINGS = [
        Binding("ctrl+r", "apply_mix", "Apply", tooltip="apply the typed mix to the running stage (as enter does)"),
        Binding("ctrl+o", "save_mix", "Save", tooltip="save the typed weights into the profile's [mix], in place"),
        Binding("ctrl+l", "reset_mix", "Reset", tooltip="put the profile's weights back in the fields"),
        Binding("ctrl+b", "prepare_data", "Build data",
                tooltip="prepare the profile's data: corpus, tokenizer, shards (each only when out of date)"),
    ]
    HELP_KEYS = (
        ("up / down", "move in the sources table"),
        ("enter", "in a weight field: apply the mix to the running stage"),
        ("0-9 .", "in a weight field: type a weight (the first key replaces the old value)"),
    )

    class MixSent(Message):
        """A control request carrying a mix was written for a run."""

        def __init__(self, run_id: str, request_id: int, mix: dict[str, float]) -> None:
            super().__init__()
            self.run_id, self.request_id, self.mix = run_id, request_id, mix

    class Saved(Message):
        """The mix was written into the profile file."""

        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

    class SourcesLoaded(Message):
        def __init__(self, profile_name: str, rows: list[SourceRow], images: list[ImageRow] | None = None,
                     pixels: Any = None, caption: str = "") -> None:
            super().__init__()
            self.profile_name, self.rows = profile_name, rows
            self.images, self.pixels, self.caption = images or [], pixels, caption

    class DataProgress(Message):
        """A line of the data job's progress (done < 0: the job ended)."""

        def __init__(self, label: str, done: int, total: int) -> None:
            super().__init__()
            self.label, self.done, self.total = label, done, total

    class DataPrepared(Message):
        def __init__(self, profile_name: str, ran: list[str], seconds: float) -> None:
            super().__init__()
            self.profile_name, self.ran, self.seconds = profile_name, ran, seconds

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.preparing = False
        self.data_status = ""  # the last line of the data job: progress, "data ready ..." or the error
        self.domains: list[str] = []  # the domains of the weight rows on screen
        self._want_domains: list[str] = []  # those of the rows being built
        self._narrow = False
        self.running_run: str | None = None
        self.pending: tuple[str, int] | None = None  # (run_id, request_id) waiting for its ack
        self._saving: dict[str, float] | None = None  # the mix being written into the profile by ctrl+o
        self._status = ""
        self._rows: list[SourceRow] | None = None
        self._live: Any = ()  # what the live column shows: (run, step, from step, mix), None: no run; (): not drawn
        self._images: list[ImageRow] | None = None  # the image-text rows on screen

    def compose(self) -> ComposeResult:
        yield Label("Sources", markup=False, id="sources-title", classes="pane-title")
        yield RowTable(id="sources")
        yield Static("", markup=False, id="data-status")
        yield ProgressBar(id="data-progress", show_eta=False)
        yield PartsLine(id="mix-title", classes="pane-title")
        yield Horizontal(Label("domain", classes="mix-domain"), Label("weight", classes="mix-weight"),
                         Label("share of the typed mix", classes="mix-share"), Label("live", classes="mix-live"),
                         id="mix-head", classes="mix-row")
        yield Vertical(id="mix-rows")
        yield Static("", markup=False, id="mix-status")
        with Vertical(id="images"):
            yield Label("Image-text pairs", markup=False, classes="pane-title")
            with Horizontal(id="images-row"):
                yield ImagePreview(id="image-preview")
                yield Static("", markup=False, id="image-info")

    def _set_columns(self) -> None:
        """The sources table's columns: the format (long, and the least needed) only where it fits."""
        table = self.query_one("#sources", DataTable)
        table.clear(columns=True)
        table.add_columns("source", "domain", "status", "size", "tokens", *(() if self._narrow else ("format",)))
        self._rows = None

    def on_resize(self) -> None:
        narrow = self.size.width < NARROW
        if narrow != self._narrow:
            self._narrow = narrow
            self._set_columns()
            if self.profile is not None:
                self.load_sources(self.profile)

    def on_mount(self) -> None:
        self._set_columns()
        self.query_one("#data-status").display = False
        self.query_one("#data-progress").display = False
        self.query_one("#images").display = False
        self.set_interval(SOURCES_S, self._tick)
        self.set_interval(REDRAW_S, self.redraw_shown)

    def _tick(self) -> None:
        """Sources change on disk (files added, the corpus built): look again while shown."""
        if self.active and self.profile is not None:
            self.load_sources(self.profile)

    def focus_main(self) -> None:
        self.query_one("#sources", DataTable).focus()  # tab moves on to the mix weights

    # -- state from the app ---------------------------------------------------------------------

    def set_profile(self, profile: Any) -> None:
        old = self.profile
        super().set_profile(profile)
        self.query_one("#sources-title", Label).update(f"Sources of profile {profile.name}")
        self.load_sources(profile)
        domains = list(profile.mix)
        if domains != self._want_domains:
            self._want_domains = domains
            self.call_later(self._build_rows, dict(profile.mix))
        elif domains == self.domains:
            for i, d in enumerate(domains):
                inp = self.query_one(f"#mix-{i}", Input)
                if old is None or inp.value.strip() == _num(old.mix.get(d)) or inp.value.strip() == "":
                    inp.value = _num(profile.mix[d])
            self._preview()
        if self._saving is not None and profile.mix == self._saving:
            self._saving = None  # our own ctrl+o coming back from disk: the status already says so
        elif old is not None and old.name == profile.name and old.mix != profile.mix:
            self._set_status(f"profile mix changed on disk: {describe(normalise(profile.mix))}")

    def expects_profile(self, profile: Any) -> bool:
        return self._saving is not None and profile.mix == self._saving

    def set_queue(self, entries: list, running_run: str | None, error: str = "") -> None:
        if running_run != self.running_run:
            self.running_run = running_run
            self.redraw()

    def run_notices(self, run_id: str, events: list[dict], replay: bool) -> None:
        if run_id == self.running_run and any(ev.get("type") in (Event.MIX, Event.ANSWER) for ev in events):
            self.redraw()
        if not self.pending or run_id != self.pending[0]:
            return
        for ev in events:
            if ev.get("type") == Event.ANSWER and ev.get("request_id") == self.pending[1]:
                self._answered(ev)
                return

    def _answered(self, answer: dict) -> None:
        """Say what became of the pending request: applied, superseded or rejected."""
        run_id, rid = self.pending
        self.pending = None
        outcome, step = answer.get("outcome"), answer.get("step")
        if outcome == Answer.APPLIED:
            self._set_status(f"applied at step {step} (run {run_id}, request {rid})")
        elif outcome == Answer.SUPERSEDED:
            self._set_status(f"request {rid} superseded by request {answer.get('by')} at step {step} (run {run_id})")
        else:
            self._set_status(f"the trainer rejected mix request {rid}: {answer.get('message', '')}", error=True)

    # -- building the view --------------------------------------------------------------------

    async def _build_rows(self, mix: dict[str, float]) -> None:
        """New weight rows for a profile with other domains; `domains` names them once they are mounted
        (until then nothing queries a row that is not there, or an old one on its way out)."""
        if list(mix) != self._want_domains:
            return  # a newer profile's rows are on their way
        self.domains = []
        rows = self.query_one("#mix-rows", Vertical)
        await rows.remove_children()
        widgets = []
        for i, (domain, w) in enumerate(mix.items()):
            # select_on_focus: the first key typed replaces the weight instead of appending to it.
            inp = Input(_num(w), id=f"mix-{i}", type="number", compact=True, classes="mix-input",
                        select_on_focus=True)
            inp.cursor_blink = getattr(self.app, "cursor_blink_inputs", True)
            widgets.append(Horizontal(Label(domain, markup=False, classes="mix-domain"), inp, Bar(id=f"bar-{i}"),
                                      Label("", markup=False, id=f"live-{i}", classes="mix-live"),
                                      classes="mix-row"))
        await rows.mount_all(widgets)
        self.domains = list(mix)
        self._live = ()
        self._preview()
        self.redraw()

    def _typed(self) -> dict[str, str]:
        return {d: self.query_one(f"#mix-{i}", Input).value for i, d in enumerate(self.domains)}

    def _preview(self) -> dict[str, float] | None:
        """Show the typed mix normalised on the bars; returns it, or None with the error shown."""
        if not self.domains:
            return None
        try:
            mix = normalise(parse_weights(self._typed()))
        except FcError as exc:
            self._set_status(str(exc), error=True)
            self._bars_invalid(str(exc))
            return None
        base = self.profile.mix if self.profile is not None else {}
        for i, d in enumerate(self.domains):
            bar = self.query_one(f"#bar-{i}", Bar)
            bar.value, bar.note = mix[d], ""
            typed = self.query_one(f"#mix-{i}", Input).value.strip()
            bar.set_class(typed != _num(base.get(d)), "-changed")
        if self._status.startswith("mix.") or self._status.startswith("mix:"):
            self._set_status("")
        return mix

    def _bars_invalid(self, error: str) -> None:
        """The bars say the typed mix is invalid, in words short enough for a 60-column bar: which
        weight is at fault, or that all are 0 (the line under the rows has the whole message)."""
        for i, d in enumerate(self.domains):
            bar = self.query_one(f"#bar-{i}", Bar)
            if error.startswith(f"mix.{d}: "):
                bar.note = "invalid weight (see below)"
            elif error.startswith("mix: "):  # the whole mix: all weights 0
                bar.note = "invalid: every weight is 0"
            else:
                bar.note = "(mix invalid)"

    def _draw_live(self) -> None:
        """The running stage's live mix beside the typed weights, and which run and step it is."""
        live = self._live
        title = self.query_one("#mix-title", PartsLine)
        if live is None:
            title.set([("Mix", 0), ("no stage running: enter only checks it, ctrl+o saves it", 1)])
        else:
            run, step, since, _ = live
            title.set([("Mix", 0), (f"live: run {run}", 1), (f"at step {step}", 2), (f"(this mix since step {since})", 3),
                       ("enter applies", 4)])
        for i, d in enumerate(self.domains):
            share = None if live is None else live[3].get(d, 0.0)
            for label in self.query(f"#live-{i}").results(Label):
                label.update("" if share is None else f"{share * 100:5.1f}%")

    def _set_status(self, text: str, error: bool = False) -> None:
        self._status = text
        status = self.query_one("#mix-status", Static)
        status.update(Text(text))
        status.set_class(error, "-error")

    @on(Input.Changed, ".mix-input")
    def _changed(self, event: Input.Changed) -> None:
        self._preview()

    @on(Input.Submitted, ".mix-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_apply_mix()

    # -- actions -------------------------------------------------------------------------------

    def action_apply_mix(self) -> None:
        mix = self._preview()
        if mix is None:
            self.app.notify(self._status, severity="error")
            return
        run_id = self.running_run
        if not run_id:
            self._set_status(f"checked: {describe(mix)}; no stage is running, nothing applied (ctrl+o saves)")
            self.app.notify("No stage is running: the mix was checked, not applied", severity="warning")
            return
        self._set_status(f"sending to run {run_id}: {describe(mix)}")
        self.send_mix(run_id, mix)  # normalised: the trainer gets exactly the mix shown

    @work(thread=True, exclusive=True, exit_on_error=False, group="manifest-control")
    def send_mix(self, run_id: str, mix: dict[str, float]) -> None:
        request_id = RunDir(self.ws.runs_dir / run_id).send_request(mix=mix)
        self.post_message(self.MixSent(run_id, request_id, mix))

    def on_manifest_pane_mix_sent(self, event: ManifestPane.MixSent) -> None:
        self.pending = (event.run_id, event.request_id)
        with self.store.lock:
            h = self.store.runs.get(event.run_id)
            answer = h.acks.get(event.request_id) if h else None
        if answer is not None:
            self._answered(answer)
        else:
            self._set_status(f"request {event.request_id} sent to run {event.run_id}; "
                             "waiting for the trainer's next step")

    def action_save_mix(self) -> None:
        if self.profile is None or self.profile.path is None:
            self.app.notify("No profile loaded to save into", severity="error")
            return
        if self._preview() is None:
            self.app.notify(self._status, severity="error")
            return
        mix = parse_weights(self._typed())
        self._saving = mix  # set before the write: the watcher may see the file before the worker ends
        self.save_mix(str(self.profile.path), mix)

    @work(thread=True, exclusive=True, exit_on_error=False, group="manifest-save")
    def save_mix(self, path: str, mix: dict[str, float]) -> None:
        from engine.profile import save_mix

        try:
            save_mix(path, mix)
        except BaseException:
            self._saving = None
            raise
        self.post_message(self.Saved(path))

    def _shown_path(self, path: str) -> str:
        """A path under the workspace as relative to it (short enough for one line), else as it is."""
        try:
            return str(Path(path).relative_to(self.ws.root))
        except ValueError:
            return path

    def on_manifest_pane_saved(self, event: ManifestPane.Saved) -> None:
        self._set_status(f"mix saved to {self._shown_path(event.path)} (only its [mix] values changed)")
        self.app.notify(f"Mix saved to {self._shown_path(event.path)}")

    def action_reset_mix(self) -> None:
        if self.profile is None:
            return
        for i, d in enumerate(self.domains):
            self.query_one(f"#mix-{i}", Input).value = _num(self.profile.mix.get(d))
        self._set_status("mix reset to the profile's")

    # -- data preparation --------------------------------------------------------------------------

    def action_prepare_data(self) -> None:
        if self.profile is None:
            self.app.notify("No profile loaded", severity="error")
            return
        if self.preparing:
            self.app.notify("The data is already being prepared")
            return
        self.preparing = True
        bar = self.query_one("#data-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self._set_data_status(f"preparing the data of {self.profile.name}...")
        self.prepare_data(self.profile.name)

    @work(thread=True, exclusive=True, exit_on_error=False, group="manifest-data")
    def prepare_data(self, profile_name: str) -> None:
        start = time.monotonic()
        try:
            result = self.run_job("data", profile_name, lambda *line: self.post_message(self.DataProgress(*line)))
        except Exception as exc:
            self.post_message(self.DataProgress(f"data preparation failed: {exc}", -1, 0))
            raise
        self.post_message(self.DataPrepared(profile_name, list(result.get("ran", [])), time.monotonic() - start))

    def _set_data_status(self, text: str, error: bool = False) -> None:
        self.data_status = text
        status = self.query_one("#data-status", Static)
        status.display = bool(text)
        status.update(Text(text))
        status.set_class(error, "-error")

    def on_manifest_pane_data_progress(self, event: ManifestPane.DataProgress) -> None:
        bar = self.query_one("#data-progress", ProgressBar)
        if event.done < 0:  # the job failed (the app's handler notifies the error)
            self.preparing = False
            bar.display = False
            self._set_data_status(event.label, error=True)
            return
        if event.total > 0:
            self._set_data_status(f"{event.label}: {min(100, 100 * event.done // event.total)}%")
            bar.update(total=event.total, progress=event.done)
        else:  # a status message
            self._set_data_status(event.label)

    def on_manifest_pane_data_prepared(self, event: ManifestPane.DataPrepared) -> None:
        self.preparing = False
        self.query_one("#data-progress", ProgressBar).display = False
        steps = ", ".join(event.ran) if event.ran else "nothing was out of date"
        self._set_data_status(f"data of {event.profile_name} ready ({steps}) in {event.seconds:.1f} s")
        self.app.notify(f"Data of {event.profile_name} ready: {steps}")
        if self.profile is not None:
            self._rows = None
            self.load_sources(self.profile)

    # -- sources ---------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="manifest-sources")
    def load_sources(self, profile: Any) -> None:
        images, pixels, caption = describe_images(self.ws, profile) if profile.image_domains else ([], None, "")
        self.post_message(self.SourcesLoaded(profile.name, describe_sources(self.ws, profile), images, pixels, caption))

    def _show_images(self, event: ManifestPane.SourcesLoaded) -> None:
        if event.images == self._images:
            return
        self._images = event.images
        self.query_one("#images").display = bool(event.images)
        lines = [r.line for r in event.images]
        if event.pixels is not None:  # the caption beside the image, whole (under it, it would be cut)
            lines.append(f"sample: {event.caption}")
        self.query_one("#image-info", Static).update(Text("\n".join(lines)))
        self.query_one("#image-preview", ImagePreview).show(event.pixels)

    def on_manifest_pane_sources_loaded(self, event: ManifestPane.SourcesLoaded) -> None:
        self._show_images(event)
        if event.rows == self._rows:
            return
        self._rows = event.rows
        table = self.query_one("#sources", DataTable)
        row = table.cursor_row
        table.clear()
        for r in event.rows:
            status = Text(r.status)
            if r.status == "missing":
                status.stylize(theme_color(self.app, "warning", "yellow"))
            table.add_row(Text(r.name), Text(r.domain), status, r.size, r.tokens,
                          *(() if self._narrow else (Text(r.format),)), key=r.name)
        if 0 < row < table.row_count:
            table.move_cursor(row=row, animate=False)

    def redraw(self) -> None:
        live = None
        with self.store.lock:
            h = self.store.runs.get(self.running_run) if self.running_run else None
            if h is not None:
                since, mix, _ = h.mixes[-1] if h.mixes else (0, h.start_mix, None)
                live = (h.run_id, h.step, since, dict(mix))
        if live != self._live:
            self._live = live
            if self.domains:
                self._draw_live()
        if self.pending:
            with self.store.lock:
                h = self.store.runs.get(self.pending[0])
                answer = h.acks.get(self.pending[1]) if h else None
            if answer is not None:
                self._answered(answer)


def _num(w: Any) -> str:
    """A weight as typed in an Input: no trailing zeros."""
    if w is None:
        return ""
    return f"{float(w):g}"

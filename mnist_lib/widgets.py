"""JupyterLab widgets: draw a digit and watch the network answer (notebook 06), and browse every run (notebook 07).

    pad = DigitPad(model_runs("results"))     # canvas, Clear, a menu of every run with weights, the 28x28 input, probabilities
    pad.widget                                 # display it; draw with the mouse
    pad.draw([(140, 40), (140, 240)])          # or a stroke from code, in canvas pixels (what the browser test and batch runs do)
    pad.prediction                             # (class index, its label, probability), or None while the canvas is blank

    browser = RunBrowser(runs_table("results"), "results")
    browser.widget                             # filters (dataset, status, any query), learning curves, a config diff

The strokes are kept here, in Python, as the mouse draws them, and drawn again
with PIL at the same width: the picture the model sees never has to travel back
from the browser. It then goes through images.to_mnist, the conversion `predict`
uses, and the run's own normalization. Outside a browser (papermill, nbval) the
widgets render as static output and `draw` still works.
"""

from __future__ import annotations

import contextlib
import html
import io
import time
from collections.abc import Sequence
from pathlib import Path

import ipywidgets as widgets
import pandas as pd
import torch
from ipycanvas import Canvas, hold_canvas
from PIL import Image, ImageDraw

from .core.datasets import DATASETS
from .core.errors import UserError
from .data.images import to_mnist
from .records.catalog import config_diff, history
from .records.runs import MODEL_FILE, load_model
from .training.evaluate import predict_proba

SIDE = 280  # canvas pixels: 10 per MNIST pixel
PEN = 20  # stroke width in canvas pixels, about a pen's stroke on MNIST's scale once fitted into 20 x 20
LIVE_EVERY = 0.1  # seconds between predictions while a stroke is being drawn (each stroke's end always predicts)
PREVIEW_SCALE = 5  # the 28 x 28 input shown at 140 x 140


def model_runs(results_dir: str | Path) -> dict[str, Path]:
    """Every run under `results_dir` that has weights, as {path relative to results_dir: run folder}, sorted."""
    root = Path(results_dir)
    return {str(p.parent.relative_to(root)): p.parent for p in sorted(root.rglob(MODEL_FILE))}


class DigitPad:
    """A drawing canvas wired to a trained model: the input it sees and its class probabilities, stroke by stroke."""

    def __init__(self, runs: dict[str, Path], run: str | None = None) -> None:
        if not runs:
            raise UserError("no run with weights (model.safetensors) to choose from; train one first")
        if run is not None and run not in runs:
            raise UserError(f"no run {run!r} with weights; choose one of: {', '.join(list(runs)[:8])}{', ...' if len(runs) > 8 else ''}")
        self.runs = dict(runs)
        self.strokes: list[list[tuple[float, float]]] = []
        self.drawing = False
        self.prediction: tuple[int, str, float] | None = None
        self.probabilities: torch.Tensor | None = None
        self.digit: torch.Tensor | None = None
        self.seconds = 0.0  # the last prediction's time: picture, conversion, forward pass
        self._last_live = 0.0

        self.canvas = Canvas(width=SIDE, height=SIDE, layout=widgets.Layout(width=f"{SIDE}px", height=f"{SIDE}px"))
        self.canvas.add_class("mnist-canvas")
        self.clear_button = widgets.Button(description="Clear", icon="eraser")
        self.menu = widgets.Dropdown(options=list(self.runs), value=run or next(iter(self.runs)), description="model")
        self.menu.layout.width = f"{SIDE + 160}px"
        self.preview = widgets.Image(format="png", width=28 * PREVIEW_SCALE, height=28 * PREVIEW_SCALE)
        self.answer = widgets.HTML()
        self.answer.add_class("mnist-prediction")
        self.bars = widgets.HTML()
        self.bars.add_class("mnist-probabilities")
        self.widget = widgets.VBox(
            [
                self.menu,
                widgets.HBox([widgets.VBox([self.canvas, self.clear_button]), widgets.VBox([self.preview, self.answer, self.bars])]),
            ]
        )

        with hold_canvas():
            self._paper()  # black from the start, as MNIST's background
        self.canvas.on_mouse_down(self._down)
        self.canvas.on_mouse_move(self._move)
        self.canvas.on_mouse_up(self._up)
        self.canvas.on_mouse_out(self._up)
        self.clear_button.on_click(lambda _: self.clear())
        self.menu.observe(lambda change: self.use(change["new"]), names="value")
        self.use(self.menu.value)

    # --- the model ---------------------------------------------------------------------------

    def use(self, run: str) -> None:
        """Switch to another run's model (a key of `runs`), and answer again for what is drawn.

        A model file that cannot be loaded (corrupt, tampered, foreign) keeps the
        current model and says why in the answer line, instead of raising inside a
        widget callback.
        """
        try:
            loaded = load_model(self.runs[run])
        except UserError as e:
            if not hasattr(self, "model"):
                raise  # the first model: nothing to fall back on
            self.answer.value = f'<span class="mnist-error">Cannot use {html.escape(run)}: {html.escape(str(e))}</span>'
            return
        self.model, self.config, self.mean, self.std = loaded
        self.spec = DATASETS[self.config.dataset]
        if self.menu.value != run:
            self.menu.value = run  # observed: calls use() again, which finds the value already set
        self.update()

    # --- drawing -----------------------------------------------------------------------------

    def clear(self) -> None:
        self.strokes = []
        self.drawing = False
        with hold_canvas():
            self._paper()
        self.update()

    def draw(self, points: Sequence[tuple[float, float]]) -> None:
        """One stroke through `points` (canvas pixels), as if drawn with the mouse; then the answer."""
        self._down(*points[0])
        for x, y in points[1:]:
            self._move(x, y, live=False)
        self._up(*points[-1])

    def _paper(self) -> None:
        self.canvas.fill_style = "black"
        self.canvas.fill_rect(0, 0, SIDE, SIDE)
        self.canvas.stroke_style = "white"
        self.canvas.fill_style = "white"
        self.canvas.line_width = PEN
        self.canvas.line_cap = "round"
        self.canvas.line_join = "round"

    def _down(self, x: float, y: float) -> None:
        if not self.strokes:
            self._paper()
        self.drawing = True
        self.strokes.append([(x, y)])
        self.canvas.fill_circle(x, y, PEN / 2)

    def _move(self, x: float, y: float, live: bool = True) -> None:
        if not self.drawing:
            return
        x0, y0 = self.strokes[-1][-1]
        self.strokes[-1].append((x, y))
        self.canvas.stroke_line(x0, y0, x, y)
        if live and time.perf_counter() - self._last_live > LIVE_EVERY:
            self.update()

    def _up(self, x: float, y: float) -> None:
        if self.drawing:
            self.drawing = False
            self.update()

    # --- the answer --------------------------------------------------------------------------

    def picture(self) -> Image.Image:
        """The strokes drawn again with PIL: white on black, SIDE x SIDE, the same pen as the canvas."""
        image = Image.new("L", (SIDE, SIDE), 0)
        pen = ImageDraw.Draw(image)
        r = PEN / 2
        for stroke in self.strokes:
            if len(stroke) > 1:
                pen.line(stroke, fill=255, width=PEN, joint="curve")
            for x, y in stroke:  # round caps and joints, as the canvas draws them
                pen.ellipse((x - r, y - r, x + r, y + r), fill=255)
        return image

    def update(self) -> None:
        """Convert what is drawn (images.to_mnist), run the model on it, show the input and the probabilities."""
        self._last_live = start = time.perf_counter()
        try:
            self.digit = to_mnist(self.picture()) if self.strokes else None
        except UserError:  # nothing visible yet
            self.digit = None
        if self.digit is None:
            self.prediction = self.probabilities = None
            self.preview.value = _png(torch.zeros(28, 28, dtype=torch.uint8))
            self.answer.value = "<b>Draw a digit</b> on the black square."
            self.bars.value = _bars(self.spec.classes, None)
            return
        try:  # weights that overflow give no probability: the answer line says so, never "nan %"
            self.probabilities = predict_proba(self.model, self.digit[None], self.mean, self.std, source=self.menu.value)[0]
        except UserError as e:
            self.prediction = self.probabilities = None
            self.answer.value = f'<span class="mnist-error">{html.escape(str(e))}</span>'
            return
        p = int(self.probabilities.argmax())
        self.prediction = (p, self.spec.label(p), float(self.probabilities[p]))
        self.seconds = time.perf_counter() - start
        self.preview.value = _png(self.digit)
        self.answer.value = (
            f'<span data-class="{p}">The network says <b>{html.escape(self.prediction[1])}</b> '
            f"({100 * self.prediction[2]:.1f} %), in {1000 * self.seconds:.0f} ms</span>"
        )
        self.bars.value = _bars(self.spec.classes, self.probabilities)


def _png(digit: torch.Tensor) -> bytes:
    image = Image.fromarray(digit.numpy()).resize((28 * PREVIEW_SCALE, 28 * PREVIEW_SCALE), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _bars(classes: Sequence[str], probabilities: torch.Tensor | None) -> str:
    """The class probabilities as an HTML bar chart (one row per class; the most probable in colour)."""
    best = int(probabilities.argmax()) if probabilities is not None else -1
    rows = []
    for i, name in enumerate(classes):
        p = float(probabilities[i]) if probabilities is not None else 0.0
        colour = "#d62728" if i == best else "#1f77b4"
        rows.append(
            f'<div class="mnist-bar" data-class="{i}" data-p="{p:.4f}" style="display:flex;align-items:center;height:18px">'
            f'<span style="width:90px;text-align:right;padding-right:6px;font-size:12px">{html.escape(name)}</span>'
            f'<span style="display:inline-block;height:12px;width:{200 * p:.1f}px;background:{colour}"></span>'
            f'<span style="padding-left:6px;font-size:12px">{100 * p:.1f} %</span></div>'
        )
    return "".join(rows)


class RunBrowser:
    """runs_table's rows, filtered with widgets; the learning curves of the selected runs; a diff of two configs."""

    def __init__(self, table: pd.DataFrame, results_dir: str | Path) -> None:
        self.table, self.root = table, Path(results_dir)
        self.dataset = widgets.Dropdown(options=["(all)", *sorted(table["dataset"].dropna().unique())], description="dataset")
        self.status = widgets.Dropdown(options=["(all)", *sorted(table["status"].dropna().unique())], description="status")
        self.query = widgets.Text(placeholder="any field, pandas query: lr < 1e-3 and norm == 'batch'", description="where")
        self.query.layout.width = "480px"
        self.rows = widgets.Output()
        self.picked = widgets.SelectMultiple(options=list(table.index), rows=8, description="curves")
        self.picked.layout.width = "480px"
        self.curves = widgets.Output()
        self.first = widgets.Dropdown(options=list(table.index), description="diff")
        self.second = widgets.Dropdown(options=list(table.index), description="against")
        self.diff = widgets.Output()
        for control in (self.dataset, self.status, self.query):
            control.observe(lambda _: self.show_rows(), names="value")
        self.picked.observe(lambda _: self.show_curves(), names="value")
        for control in (self.first, self.second):
            control.observe(lambda _: self.show_diff(), names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.dataset, self.status]), self.query, self.rows,
                self.picked, self.curves, widgets.HBox([self.first, self.second]), self.diff,
            ]
        )  # fmt: skip
        self.show_rows()

    def filtered(self) -> pd.DataFrame:
        """The rows the controls select; a query that is not valid pandas leaves the other filters' rows."""
        rows = self.table
        if self.dataset.value != "(all)":
            rows = rows[rows["dataset"] == self.dataset.value]
        if self.status.value != "(all)":
            rows = rows[rows["status"] == self.status.value]
        if self.query.value.strip():
            with contextlib.suppress(Exception):  # half-typed queries are normal while typing
                rows = rows.query(self.query.value)
        return rows

    def show_rows(self) -> None:
        from IPython.display import display

        self.rows.clear_output(wait=True)
        with self.rows:
            shown = self.filtered()
            print(f"{len(shown)} of {len(self.table)} runs")
            display(shown[["kind", "status", "dataset", "best_val_acc", "test_acc", "epochs_run", "date"]])

    def show_curves(self) -> None:
        from IPython.display import display

        from .records import plots

        self.curves.clear_output(wait=True)
        if not self.picked.value:
            return
        with self.curves:
            curves = {}
            for name in self.picked.value:
                try:
                    curves[name] = {0: history(self.root / name)}
                except UserError as e:
                    print(e)
            if curves:
                display(plots.plot_compared_curves(curves))

    def show_diff(self) -> None:
        from IPython.display import display

        self.diff.clear_output(wait=True)
        with self.diff:
            diff = config_diff(self.table.loc[self.first.value], self.table.loc[self.second.value])
            print("the same config" if diff.empty else f"{len(diff)} field(s) differ")
            if not diff.empty:
                display(diff)

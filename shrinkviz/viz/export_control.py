"""The explorers' export control: take the selected run's deployed model out of the store, as a state_dict
or ONNX file (:func:`shrinkviz.experiments.artefacts.export_artefact`).

Example:
    >>> control = ExportControl(None, lambda: "r1")
    >>> control.button.disabled, control.export() is None, "pass a store" in control.status.value
    (True, True, True)
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from shrinkviz.experiments.artefacts import EXPORT_FORMATS, export_artefact

__all__ = ["ExportControl"]


class ExportControl:
    """``format`` (ToggleButtons), ``folder`` (Text), ``button`` and ``status`` (HTML) for the run that
    ``selected()`` names; the button is disabled without a store (a bare runs DataFrame has no artefacts).

    Args:
        store: a store-like object with ``artefact`` (``shrinkviz.Store``), or None.
        selected: returns the run id to export (None or '' when nothing is selected).
        label: the button's text.
    """

    def __init__(
        self, store: Any, selected: Callable[[], str | None], label: str = "export selected run"
    ) -> None:
        self.store = store if hasattr(store, "artefact") else None
        self.selected = selected
        self.format = widgets.ToggleButtons(options=list(EXPORT_FORMATS), value="state_dict")
        self.folder = widgets.Text(value=".", description="to folder")
        self.button = widgets.Button(
            description=label,
            disabled=self.store is None,
            tooltip="needs a store (the explorer built from shrinkviz.Store) holding the runs' artefacts",
        )
        self.status = widgets.HTML(value="")
        self.button.on_click(lambda _: self.export())

    def export(self) -> Any:
        """Export the selected run's deployed model; the file, or None on error (the reason is shown in
        ``status``)."""
        run_id = self.selected()
        if self.store is None or not run_id:
            self.status.value = "nothing to export: pass a store and select a run"
            return None
        try:
            path = export_artefact(self.store, run_id, self.folder.value, self.format.value)
        except (KeyError, ValueError, OSError) as exc:
            self.status.value = f"export failed: {html.escape(str(exc))}"
            return None
        self.status.value = f"exported {html.escape(run_id)} to {html.escape(str(path))}"
        return path

    @property
    def widgets(self) -> list[widgets.Widget]:
        """The controls in display order (format, folder, button)."""
        return [self.format, self.folder, self.button]
